"""The role only sequences module calls (docs/architecture.md, "behaviour -> its one home"):
no task file runs a database tool, manage.py or a shell, none sets a task `environment:`
(Ansible puts those variables on the remote command line), every entry point has its
argument spec, and internal facts are prefixed."""
import glob
import os
import re

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLE = os.path.join(ROOT, "roles", "django_migrate")
PLAYBOOKS = os.path.join(ROOT, "playbooks")
# What an engine, the project or the service window runs: the modules' business.
TOOLS = re.compile(r"\b(pg_dump|pg_restore|psql|dropdb|createdb|mysqldump|mariadb-dump|mysql|"
                   r"mariadb|sqlite3|manage\.py|systemctl|start-stop-daemon|flush|loaddata)\b")
SHELLS = ("ansible.builtin.shell", "shell", "ansible.builtin.raw", "raw", "ansible.builtin.script")


def tasks_of(path):
    with open(path) as handle:
        data = yaml.safe_load(handle) or []
    stack = list(data)
    while stack:
        task = stack.pop()
        if not isinstance(task, dict):
            continue
        yield task
        for key in ("block", "rescue", "always", "tasks", "pre_tasks", "post_tasks", "handlers"):
            stack.extend(task.get(key) or [])


def role_task_files():
    return sorted(glob.glob(os.path.join(ROLE, "tasks", "*.yml")))


def test_no_role_task_sets_an_environment_or_runs_a_tool_or_a_shell():
    for path in role_task_files() + sorted(glob.glob(os.path.join(PLAYBOOKS, "*.yml"))):
        for task in tasks_of(path):
            name = task.get("name", "?")
            assert "environment" not in task, "%s: task %r sets environment:" % (path, name)
            for shell in SHELLS:
                assert shell not in task, "%s: task %r runs %s" % (path, name, shell)
            for module in ("ansible.builtin.command", "command"):
                if module in task:
                    argv = repr(task[module])
                    assert not TOOLS.search(argv), "%s: task %r runs %s" % (
                        path, name, TOOLS.search(argv).group(1))


def test_every_entry_point_has_a_task_file_and_an_argument_spec():
    with open(os.path.join(ROLE, "meta", "argument_specs.yml")) as handle:
        specs = yaml.safe_load(handle)["argument_specs"]
    files = set(os.path.basename(p)[:-len(".yml")] for p in role_task_files())
    assert set(specs) == files
    for name, spec in specs.items():
        assert spec.get("short_description") and spec.get("options"), name


def test_no_action_dispatch_and_internal_facts_are_prefixed():
    for path in role_task_files() + sorted(glob.glob(os.path.join(PLAYBOOKS, "*.yml"))):
        with open(path) as handle:
            text = handle.read()
        assert "django_migrate_action" not in text, path
        for task in tasks_of(path):
            names = list((task.get("ansible.builtin.set_fact") or {}).keys())
            if task.get("register"):
                names.append(task["register"])
            for fact in names:
                assert not fact.startswith("django_migrate_"), (
                    "%s: %r is an internal fact named like an input" % (path, fact))
