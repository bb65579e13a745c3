"""R5 - production protection: reset (flush and schema), restore onto a target, and the role's
reset entry point are refused on a host in `production`, with `dbsafe_protected: true`, or in a
group listed in django_migrate_protected_groups - whatever the extra variables say - and change
nothing (database snapshot and files compared)."""
import json
import os
import subprocess

import pytest

import harness
from ansible_run import ROOT, _bin, ansible_env
from test_playbooks import inventory, playbook
from test_r3_bad_inputs import Workspace, workspace_host
from ansible_collections.dbsafe.django.plugins.module_utils.snapshots import diff_snapshots
from databases import create_sqlite

# Extra variables a user might try to lift the protection with.
OVERRIDES = {"dbsafe_protected": False, "django_migrate_protected_groups": [],
             "django_migrate_restore_protected": True}

PROTECTIONS = {
    "prod": ("group production", "production"),
    "guarded": ("dbsafe_protected: true", "development"),
    "live": ("group live", "live"),
}

ROLE_RESET_PLAY = [{
    "name": "A user's own play with the role's reset entry point",
    "hosts": "{{ target }}",
    "gather_facts": False,
    "tasks": [{"name": "Reset through the role", "ansible.builtin.include_role": {
        "name": "dbsafe.django.django_migrate", "tasks_from": "reset"},
        "vars": {"django_migrate_reset_confirm": "{{ target }}"}}],
}]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("r5")
    os.makedirs(str(root / "db"))
    return Workspace(root / "ws", create_sqlite(root / "db"))


def protected_inventory(ws, tmp_path):
    reports = str(tmp_path / "reports")
    groups = {"staging": {"source": workspace_host(ws, reports)}}
    for host, (_reason, group) in PROTECTIONS.items():
        extra = {"dbsafe_protected": True} if host == "guarded" else {}
        groups.setdefault(group, {})[host] = dict(workspace_host(ws, reports), **extra)
    return inventory(tmp_path, groups, groupvars={"live": {"django_migrate_protected_groups": ["live"]}})


def role_reset(inv, tmp_path, target):
    path = str(tmp_path / "own-play.yml")
    with open(path, "w") as handle:
        json.dump(ROLE_RESET_PLAY, handle)
    extra = str(tmp_path / "extra-role.json")
    with open(extra, "w") as handle:
        json.dump(dict(OVERRIDES, target=target), handle)
    proc = subprocess.run([_bin("ansible-playbook"), "-i", inv, path, "-e", "@" + extra],
                          capture_output=True, text=True, env=ansible_env(), cwd=ROOT,
                          timeout=600, check=False)
    return proc.returncode, proc.stdout + proc.stderr


ENTRY_POINTS = {
    "reset.yml, data mode (manage.py flush)": lambda inv, tmp, host: playbook(
        "reset", inv, tmp, reset_hosts=host, reset_confirm=host, reset_mode="data", **OVERRIDES),
    "reset.yml, schema mode (drop and create)": lambda inv, tmp, host: playbook(
        "reset", inv, tmp, reset_hosts=host, reset_confirm=host, reset_mode="schema", **OVERRIDES),
    "restore_from_prod.yml, restore onto the target": lambda inv, tmp, host: playbook(
        "restore_from_prod", inv, tmp, restore_from="source", restore_to=host, **OVERRIDES),
    "the role's reset action in a user's own play": role_reset,
}


@pytest.mark.parametrize("host", sorted(PROTECTIONS))
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_refused_on_a_protected_host(case, workspace, tmp_path, entry, host):
    reason = PROTECTIONS[host][0]
    case("R5", "sqlite", "%s on a host with %s" % (entry, reason))
    inv = protected_inventory(workspace, tmp_path)
    before_db, before_files = workspace.state()

    rc, output = ENTRY_POINTS[entry](inv, tmp_path, host)

    expected = "Refused: %s is protected (%s" % (host, reason)
    case.message = expected + ")" if expected in output else output[-300:]
    assert rc != 0 and expected in output, output[-3000:]
    after_db, after_files = workspace.state()
    assert diff_snapshots(before_db, after_db) == []
    assert after_files == before_files
    assert harness.snapshot(workspace.db)["tables"]  # the data is still there
