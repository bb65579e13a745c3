"""django_migrate_guarded with ``downtime``: stop, code, migrate, start in one module run.

A git checkout of the release repository (release-1 running, release-2 adds
books.0006_book_subtitle) on real SQLite, PostgreSQL and MariaDB. The stop and start commands
write the checkout's revision into a log, so the order is proven by what they saw: the code
was still release-1 at the stop and was what the outcome says at the start.
"""
import json
import os

import pytest

import demo
from ansible_run import run_module
from runner_double import engine_of
from test_playbooks import SUBTITLE, commit, git, release_repo
from ansible_collections.dbsafe.django.plugins.module_utils.snapshots import diff_snapshots

SECRET = "s3cr3t-window-pw"


class Checkout:
    """The running code (release-1, migrated, demo data) and the log of its service."""

    def __init__(self, tmp_path, db, python=None, newest=None):
        self.repo, self.shas = release_repo(tmp_path)
        if newest:  # a later release made by newest(repo): its name and commit
            name, change = newest
            change(self.repo)
            self.shas[name] = commit(self.repo, name)
        self.project = str(tmp_path / "app")
        git(tmp_path, "clone", "--quiet", self.repo, self.project)
        git(self.project, "checkout", "--quiet", "release-1")
        self.db = db
        self.python = python
        self.log = str(tmp_path / "service.log")
        self.backups = str(tmp_path / "backups")
        demo.manage(self.project, db, "migrate", "--no-input", python=python)
        demo.manage(self.project, db, "loaddata", "demo", python=python)

    def command(self, step, rc=0):
        """Logs "<step> <revision>" (the revision checked out at that moment), exits ``rc``."""
        script = 'echo "%s $(git -C "$1" rev-parse HEAD)" >> "$2"; exit %d' % (step, rc)
        return ["/bin/sh", "-c", script, step, self.project, self.log]

    def window(self, stop_rc=0, start_rc=0, to="release-2"):
        reset = ["git", "-C", self.project, "reset", "--hard", "--quiet"]
        return {"stop": self.command("stop", stop_rc), "code": reset + [self.shas[to]],
                "code_back": reset + [self.shas["release-1"]],
                "start": self.command("start", start_rc),
                "environment": {"DB_PASSWORD": SECRET}}

    def args(self, **window):
        return demo.module_args(self.project, self.db, python=self.python, allow_data_loss=True,
                                backup_dir=self.backups, downtime=self.window(**window))

    def logged(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log) as handle:
            return [line.split() for line in handle.read().splitlines()]

    def head(self):
        return git(self.project, "rev-parse", "HEAD")

    def applied(self):
        return set("%s.%s" % tuple(row) for row in engine_of(self.db).snapshot()["migrations"])


@pytest.mark.parametrize("django", ["5.2", "3.2"])
def test_stop_code_migrate_start_in_one_run(database, tmp_path, django):
    app = Checkout(tmp_path, database, python=demo.python_for(django))

    result = run_module("django_migrate_guarded", app.args())

    assert not result["failed"], result.get("msg")
    assert result["changed"] is True
    # The migration came from the code that only exists after the code step: Django was loaded
    # before the stop, the project after the switch.
    assert [s["migration"] for s in result["applied"]] == ["books." + SUBTITLE]
    assert "books." + SUBTITLE in app.applied()
    assert app.logged() == [["stop", app.shas["release-1"]], ["start", app.shas["release-2"]]]
    assert app.head() == app.shas["release-2"]
    window = result["downtime"]
    assert window["started_at"] > window["stopped_at"] and window["seconds"] > 0
    assert [(s["step"], s["rc"]) for s in window["steps"]] == [("stop", 0), ("code", 0), ("start", 0)]
    assert "warm" in result["timings"] and result["launches"] == 1
    assert os.path.isfile(result["backup"]["path"])
    assert SECRET not in json.dumps(result)


@pytest.mark.parametrize("kind", ["runpython", "runsql"])
def test_failing_migration_is_restored_code_put_back_and_started(database, tmp_path, kind):
    app = Checkout(tmp_path, database, newest=(
        "release-3", lambda repo: demo.add_failing_migration(repo, kind)))
    before = engine_of(database).snapshot()

    result = run_module("django_migrate_guarded", app.args(to="release-3"))

    assert result["failed"] is True
    assert "restored and verified" in result["msg"], result["msg"]
    assert "code back done; start done" in result["msg"]
    assert result["restored"] is True and result["proven"] is True
    assert diff_snapshots(before, engine_of(database).snapshot()) == []
    assert app.logged() == [["stop", app.shas["release-1"]], ["start", app.shas["release-1"]]]
    assert app.head() == app.shas["release-1"]
    assert result["downtime"]["started_at"] is not None


def test_a_failing_stop_touches_nothing_and_starts_again(sqlite_database, tmp_path):
    app = Checkout(tmp_path, sqlite_database)
    before = engine_of(sqlite_database).snapshot()

    result = run_module("django_migrate_guarded", app.args(stop_rc=3))

    assert result["failed"] is True
    assert "the stop command" in result["msg"] and "rc 3" in result["msg"], result["msg"]
    assert "start done" in result["msg"]
    assert app.logged() == [["stop", app.shas["release-1"]], ["start", app.shas["release-1"]]]
    assert app.head() == app.shas["release-1"]
    assert diff_snapshots(before, engine_of(sqlite_database).snapshot()) == []
    assert not os.path.exists(app.backups) or os.listdir(app.backups) == []


def test_a_failing_start_after_the_migration_says_so(sqlite_database, tmp_path):
    app = Checkout(tmp_path, sqlite_database)

    result = run_module("django_migrate_guarded", app.args(start_rc=1))

    assert result["failed"] is True
    assert result["msg"].startswith("the migration succeeded and was verified, but the "
                                    "application did not start again"), result["msg"]
    assert "books." + SUBTITLE in app.applied()  # new code, migrated database: consistent
    assert app.head() == app.shas["release-2"]
    assert result["downtime"]["started_at"] is None


def test_refused_after_the_switch_puts_the_code_back(sqlite_database, tmp_path):
    """The new code has a model change without a migration: refused before the lock."""
    app = Checkout(tmp_path, sqlite_database, newest=("release-3", demo.add_pending_model_change))
    before = engine_of(sqlite_database).snapshot()

    result = run_module("django_migrate_guarded", app.args(to="release-3"))

    assert result["failed"] is True
    assert "models changed without a migration" in result["msg"], result["msg"]
    assert "code back done; start done" in result["msg"]
    assert app.head() == app.shas["release-1"]
    assert diff_snapshots(before, engine_of(sqlite_database).snapshot()) == []


def test_check_mode_runs_no_command(sqlite_database, tmp_path):
    app = Checkout(tmp_path, sqlite_database)

    result = run_module("django_migrate_guarded", app.args(), check=True)

    assert not result["failed"], result.get("msg")
    assert app.logged() == [] and app.head() == app.shas["release-1"]
    assert sorted(result["downtime"]["would_run"]) == ["code", "code_back", "start", "stop"]


def test_secrets_of_the_commands_environment_are_masked(sqlite_database, tmp_path):
    app = Checkout(tmp_path, sqlite_database)
    args = app.args()
    args["downtime"]["stop"] = ["/bin/sh", "-c", 'echo "no: $DB_PASSWORD" >&2; exit 1']

    result = run_module("django_migrate_guarded", args)

    assert result["failed"] is True and "the stop command" in result["msg"]
    assert SECRET not in json.dumps(result) and SECRET not in result["_ansible_output"]
