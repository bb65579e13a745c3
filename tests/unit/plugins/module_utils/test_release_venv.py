"""release_venv's decisions: the hash that names a venv, when one is complete (reused), which
venvs pruning removes, the atomic link switch, and the service window's code / code_back
steps switching the link."""
import json
import os
import subprocess

import pytest

from ansible_collections.dbsafe.django.plugins.module_utils import release_venv
from ansible_collections.dbsafe.django.plugins.module_utils.downtime import ServiceWindow
from ansible_collections.dbsafe.django.plugins.module_utils.errors import MigrationFailed
from ansible_collections.dbsafe.django.plugins.module_utils.release_venv import (
    DEFAULT_INSTALL_COMMAND,
    install_argv,
    is_complete,
    link_target,
    point_link,
    prune_selection,
    release_hash,
)
from ansible_collections.dbsafe.django.plugins.module_utils.runner import Runner

PY = "3.11.2 (main, Mar 13 2023) [GCC 12.2.0]"


def test_the_hash_changes_with_each_input_and_only_with_them():
    base = release_hash("django==4.2\n", PY, [])
    assert len(base) == release_venv.HASH_LENGTH
    assert release_hash(b"django==4.2\n", PY, []) == base  # bytes as read from the file
    assert release_hash("django==4.2\n", PY + "\n", []) == base  # the probe's newline
    assert release_hash("django==4.2.1\n", PY, []) != base
    assert release_hash("django==4.2\n", "3.12.1 (main)", []) != base
    assert release_hash("django==4.2\n", PY, ["uv", "pip", "install", "-r", "{requirements}"]) != base


def test_the_install_command_fills_its_placeholders():
    assert install_argv([], "/r/x/bin/python", "/c/req.txt", "/r/x") == [
        "/r/x/bin/python", "-m", "pip", "install", "--quiet", "--no-compile", "-r", "/c/req.txt"]
    assert DEFAULT_INSTALL_COMMAND[0] == "{python}"  # the default itself is left as it was
    assert install_argv(["uv", "pip", "install", "--python", "{python}", "-r", "{requirements}", "--target={venv}"],
                        "/r/x/bin/python", "/c/req.txt", "/r/x") == [
        "uv", "pip", "install", "--python", "/r/x/bin/python", "-r", "/c/req.txt", "--target=/r/x"]


def write_marker(path, digest):
    os.makedirs(str(path), exist_ok=True)
    with open(os.path.join(str(path), release_venv.MARKER), "w") as handle:
        json.dump({"hash": digest}, handle)


def test_a_venv_is_complete_only_with_the_marker_of_its_hash(tmp_path):
    venv = tmp_path / "0123456789abcdef"
    venv.mkdir()
    assert not is_complete(str(venv), "0123456789abcdef")  # half-built: no marker yet
    (venv / release_venv.MARKER).write_text("{not json")
    assert not is_complete(str(venv), "0123456789abcdef")
    write_marker(venv, "ffffffffffffffff")
    assert not is_complete(str(venv), "0123456789abcdef")
    write_marker(venv, "0123456789abcdef")
    assert is_complete(str(venv), "0123456789abcdef")


def entry(name, used=0, complete=True, mtime=0, root="/r"):
    return {"name": name, "path": os.path.join(root, name), "complete": complete, "used": used, "mtime": mtime}


def test_pruning_keeps_the_newest_and_the_protected_ones():
    names = ["%016x" % n for n in range(5)]  # used at 0..4: names[4] is the newest
    entries = [entry(name, used=i) for i, name in enumerate(names)]
    assert prune_selection(entries, 3, [], now=10) == [names[0], names[1]]
    # the link's target and the one being deployed stay, however old
    assert prune_selection(entries, 3, ["/r/" + names[0], "/r/" + names[1] + "/"], now=10) == []
    assert prune_selection(entries, 1, ["/r/" + names[0]], now=10) == [names[1], names[2], names[3]]


def test_pruning_removes_only_stale_unfinished_builds_and_nothing_it_did_not_make():
    now = 100000
    entries = [
        entry("%016x" % 1, used=5),
        entry("%016x" % 2, complete=False),  # incomplete under a final name: not ours to judge
        entry("%016x.tmp-abc" % 3, complete=False, mtime=now - 7200),  # a run that died
        entry("%016x.tmp-def" % 4, complete=False, mtime=now - 60),  # a build running now
        entry("current", complete=False),
        entry("notes", complete=True, used=1),
    ]
    assert prune_selection(entries, 1, [], now=now) == ["%016x.tmp-abc" % 3]


def test_the_link_switch_is_atomic_idempotent_and_reports_the_previous_target(tmp_path):
    link = str(tmp_path / "current")
    old, new = str(tmp_path / "a"), str(tmp_path / "b")
    assert point_link(link, old) == (None, True)
    assert link_target(link) == old
    assert point_link(link, old) == (old, False)
    assert point_link(link, new, check_mode=True) == (old, True)
    assert link_target(link) == old
    assert point_link(link, new) == (old, True)
    assert link_target(link) == new
    assert sorted(os.listdir(str(tmp_path))) == ["current"]  # no temporary link left
    assert point_link(link, None) == (new, True)
    assert not os.path.lexists(link)


def test_the_link_switch_refuses_to_replace_a_real_directory(tmp_path):
    (tmp_path / "current").mkdir()
    with pytest.raises(release_venv.ReleaseVenvError, match="not a symlink"):
        point_link(str(tmp_path / "current"), str(tmp_path / "a"))
    assert (tmp_path / "current").is_dir()


def run_command(argv, environ_update=None, data=None, binary_data=False, cwd=None, check_rc=False):
    proc = subprocess.run(argv, env=dict(os.environ, **(environ_update or {})), cwd=cwd,
                          capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def release_window(tmp_path, start_rc=0):
    """A window whose start command records where the link points when it runs."""
    link = str(tmp_path / "current")
    seen = str(tmp_path / "seen")
    start = ["/bin/sh", "-c", 'readlink "$0" >> "$1"; exit %d' % start_rc, link, seen]
    window = ServiceWindow(Runner(run_command), {"start": start}, release=dict(
        link=link, venv=str(tmp_path / "new"), back=str(tmp_path / "old")))
    return window, link, seen


def test_the_window_starts_the_application_on_the_new_venv(tmp_path):
    window, link, seen = release_window(tmp_path)
    os.symlink(str(tmp_path / "old"), link)
    window.around(lambda: {"changed": True})
    assert link_target(link) == str(tmp_path / "new")
    assert open(seen).read().split() == [str(tmp_path / "new")]
    assert [s["step"] for s in window.report["steps"]] == ["code", "start"]


def test_a_failed_migration_starts_the_application_on_the_old_venv_again(tmp_path):
    window, link, seen = release_window(tmp_path)
    os.symlink(str(tmp_path / "old"), link)

    def work():
        assert link_target(link) == str(tmp_path / "new")  # switched inside the window
        raise MigrationFailed("boom")

    with pytest.raises(MigrationFailed) as raised:
        window.around(work)
    assert "code back done; start done" in raised.value.msg
    assert link_target(link) == str(tmp_path / "old")
    assert open(seen).read().split() == [str(tmp_path / "old")]


def test_no_switch_when_the_release_keeps_its_venv(tmp_path):
    link = str(tmp_path / "current")
    window = ServiceWindow(Runner(run_command), {}, release=dict(
        link=link, venv=str(tmp_path / "same"), back=str(tmp_path / "same")))
    assert window.describe() == {}
    window.around(lambda: {"changed": False})
    assert window.report["steps"] == [] and not os.path.lexists(link)
