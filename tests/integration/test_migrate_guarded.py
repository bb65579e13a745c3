"""django_migrate_guarded on the real demo project, SQLite, PostgreSQL and MariaDB.

The proofs use the engines' own snapshot (schema, row counts, content hashes, migrations).
"""
import json
import os
import signal
import threading
import time

import pytest

import demo
from ansible_run import run_module
from runner_double import engine_of
from ansible_collections.dbsafe.django.plugins.module_utils.snapshots import diff_snapshots


def args_for(project, db, tmp_path, **extra):
    # The demo's last migration removes a field; the data-loss guard has its own test.
    extra.setdefault("allow_data_loss", True)
    extra.setdefault("backup_dir", str(tmp_path / "backups"))
    return demo.module_args(project, db, **extra)


def snapshot(db):
    return engine_of(db).snapshot()


def prepared(db, tmp_path, upto=2, python=None):
    """A demo copy with authors + books up to the ``upto``-th migration applied and data."""
    project = demo.copy_demo(tmp_path)
    names = demo.migration_names(project)
    demo.manage(project, db, "migrate", python=python)
    if upto < len(names):
        demo.manage(project, db, "migrate", "books", names[upto - 1], python=python)
    demo.manage(project, db, "shell", "-c",
                "from authors.models import Author\n"
                "Author.objects.create(name='Ursula', born='1929-10-21')\n", python=python)
    return project, names


# Django 3.2 on Python 3.8 too: old projects; introspect.py and the guard must work there.
@pytest.mark.parametrize("django", ["5.2", "3.2"])
def test_success_then_idempotent(database, tmp_path, django):
    python = demo.python_for(django)
    project, names = prepared(database, tmp_path, python=python)
    args = args_for(project, database, tmp_path, python=python)

    first = run_module("django_migrate_guarded", args)

    assert not first["failed"], first.get("msg")
    assert first["changed"] is True and first["restored"] is False
    assert first["before"]["django_version"].startswith(django)
    assert os.path.isfile(first["backup"]["path"])
    assert len(first["backup"]["sha256"]) == 64
    assert [s["migration"] for s in first["applied"] if s["migration"].startswith("books")] == \
        ["books." + n for n in names[2:]]
    assert all(s["ok"] for s in first["applied"])
    assert first["after"]["unapplied_count"] == 0 and first["after"]["plan"] == []
    assert first["launches"] == 1  # one session: facts, then migrate and the facts after
    assert stat_mode(first["backup"]["path"]) == 0o600
    assert stat_mode(os.path.dirname(first["backup"]["path"])) == 0o700
    if database.password:
        assert database.password not in json.dumps(first)

    second = run_module("django_migrate_guarded", args)

    assert not second["failed"], second.get("msg")
    assert second["changed"] is False and second["backup"] is None
    assert second["launches"] == 1
    assert sorted(os.listdir(tmp_path / "backups")) == sorted(
        os.listdir(os.path.dirname(first["backup"]["path"])))


def stat_mode(path):
    return os.stat(path).st_mode & 0o777


@pytest.mark.parametrize("kind, django", [("runpython", "5.2"), ("runsql", "5.2"), ("runpython", "3.2")])
def test_failing_migration_is_restored_and_proven(database, tmp_path, kind, django):
    python = demo.python_for(django)
    project, names = prepared(database, tmp_path, upto=5, python=python)
    failing = demo.add_failing_migration(project, kind)
    before = snapshot(database)

    result = run_module("django_migrate_guarded", args_for(project, database, tmp_path, python=python))

    assert result["failed"] is True
    assert "books.%s" % failing in result["msg"]
    assert "restored and verified" in result["msg"], result["msg"]
    assert result["restored"] is True and result["proven"] is True
    assert os.path.isfile(result["backup"]["path"])
    assert diff_snapshots(before, snapshot(database)) == []
    # On MariaDB the AddField was not rolled back by a transaction: the restore removed it.
    assert "reviewed" not in before["schema"]["books_book"]["columns"]
    assert "reviewed" not in snapshot(database)["schema"]["books_book"]["columns"]


def test_killed_migrate_is_restored_and_proven(database, tmp_path):
    project, names = prepared(database, tmp_path, upto=5)
    demo.add_slow_migration(project, 120)
    before = snapshot(database)
    marker = demo.slow_marker_path(project)
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(
        run_module("django_migrate_guarded", args_for(project, database, tmp_path))))
    worker.start()
    deadline = time.time() + 120
    while not os.path.exists(marker) and time.time() < deadline:
        time.sleep(0.1)
    assert os.path.exists(marker), "the slow migration never started"
    time.sleep(0.3)
    with open(marker) as handle:
        os.kill(int(handle.read()), signal.SIGKILL)
    worker.join(300)

    assert outcome["failed"] is True
    assert "restored and verified" in outcome["msg"], outcome["msg"]
    assert diff_snapshots(before, snapshot(database)) == []


def test_two_runs_at_once_migrate_exactly_once(postgres_database, tmp_path):
    db = postgres_database
    project, names = prepared(db, tmp_path)
    demo.add_slow_migration(project, 3)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        run_module("django_migrate_guarded", args_for(project, db, tmp_path))))
        for _attempt in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)

    assert [r["failed"] for r in results] == [False, False], [r.get("msg") for r in results]
    assert sorted(r["changed"] for r in results) == [False, True]
    idle = [r for r in results if not r["changed"]][0]
    assert idle["backup"] is None
    assert "another run" in idle["msg"] or idle["plan"] == []


def test_second_run_times_out_naming_the_holder(sqlite_database, tmp_path):
    db = sqlite_database
    project, names = prepared(db, tmp_path)
    demo.add_slow_migration(project, 20)
    marker = demo.slow_marker_path(project)
    first = {}
    worker = threading.Thread(target=lambda: first.update(
        run_module("django_migrate_guarded", args_for(project, db, tmp_path))))
    worker.start()
    deadline = time.time() + 120
    while not os.path.exists(marker) and time.time() < deadline:
        time.sleep(0.1)
    second = run_module("django_migrate_guarded",
                        args_for(project, db, tmp_path, lock_timeout=1))
    worker.join(300)

    assert second["failed"] is True
    assert "pid" in second["msg"] and "lock" in second["msg"], second["msg"]
    assert first["failed"] is False and first["changed"] is True


def test_rollback_needs_data_loss_and_ambiguous_prefix_is_refused(database, tmp_path):
    project, names = prepared(database, tmp_path, upto=5)
    before = snapshot(database)

    refused = run_module("django_migrate_guarded",
                         args_for(project, database, tmp_path, app="books", migration="0002",
                                  allow_data_loss=False))
    assert refused["failed"] is True and "allow_data_loss" in refused["msg"]
    ambiguous = run_module("django_migrate_guarded",
                           args_for(project, database, tmp_path, app="books", migration="000",
                                    allow_data_loss=True))
    assert ambiguous["failed"] is True and "more than one migration" in ambiguous["msg"]
    assert "0001_initial" in ambiguous["msg"]
    unknown = run_module("django_migrate_guarded",
                         args_for(project, database, tmp_path, app="books", migration="0099",
                                  allow_data_loss=False))
    assert unknown["failed"] is True and "no migration matching" in unknown["msg"]
    assert diff_snapshots(before, snapshot(database)) == []
    assert not os.path.exists(tmp_path / "backups")

    back = run_module("django_migrate_guarded",
                      args_for(project, database, tmp_path, app="books", migration="0002",
                               allow_data_loss=True))
    assert not back["failed"], back.get("msg")
    books = dict((m["name"], m["applied"]) for m in back["after"]["apps"]["books"])
    assert [n for n in names if books[n]] == names[:2]

    zero = run_module("django_migrate_guarded",
                      args_for(project, database, tmp_path, app="books", migration="zero",
                               allow_data_loss=True))
    assert not zero["failed"], zero.get("msg")
    assert not any(m["applied"] for m in zero["after"]["apps"]["books"])


def test_check_mode_changes_nothing_and_diff_shows_sql(database, tmp_path):
    project, names = prepared(database, tmp_path)
    before = snapshot(database)
    raw = open(database.name, "rb").read() if database.engine == "sqlite" else None

    result = run_module("django_migrate_guarded", args_for(project, database, tmp_path),
                        check=True, diff=True)

    assert not result["failed"], result.get("msg")
    assert result["changed"] is True
    assert [s["migration"] for s in result["plan"]][:1] == ["books." + names[2]]
    assert result["plan"][0]["operations"]
    # The diff (what sqlmigrate prints) is shown by the callback, not kept in the result.
    shown = result["_ansible_output"].upper()
    assert "-- APPLY BOOKS." + names[2].upper() in shown
    assert "ALTER TABLE" in shown or "CREATE TABLE" in shown
    assert "CANNOT RENDER SQL" not in shown
    assert diff_snapshots(before, snapshot(database)) == []
    if raw is not None:
        assert open(database.name, "rb").read() == raw
    assert not os.path.exists(tmp_path / "backups")


@pytest.mark.parametrize("case", ["conflict", "ghost", "pending", "inconsistent"])
def test_preflight_refusals_touch_nothing(sqlite_database, tmp_path, case):
    db = sqlite_database
    project, names = prepared(db, tmp_path)
    expected = {"conflict": "makemigrations --merge", "ghost": "ghost migrations",
                "pending": "forget to commit a migration", "inconsistent": "inconsistent"}[case]
    if case == "conflict":
        demo.add_conflict(project)
    elif case == "ghost":
        demo.manage(project, db, "migrate")
        demo.delete_migration(project, "books", names[-1])
        demo.add_slow_migration(project, 0)  # something left to do
    elif case == "pending":
        demo.add_pending_model_change(project)
    else:
        demo.manage(project, db, "shell", "-c",
                    "from django.db import connection\n"
                    "from django.db.migrations.recorder import MigrationRecorder\n"
                    "MigrationRecorder(connection).record_applied('books', %r)\n" % names[3])
    before = snapshot(db)

    result = run_module("django_migrate_guarded", args_for(project, db, tmp_path))

    assert result["failed"] is True
    assert expected in result["msg"], result["msg"]
    assert result["database_changed"] is False
    assert diff_snapshots(before, snapshot(db)) == []
    assert not os.path.exists(tmp_path / "backups")


def test_fake_is_refused_unless_allowed(sqlite_database, tmp_path):
    db = sqlite_database
    project, names = prepared(db, tmp_path)
    refused = run_module("django_migrate_guarded", args_for(project, db, tmp_path, fake=True))
    assert refused["failed"] is True and "allow_fake" in refused["msg"]
    allowed = run_module("django_migrate_guarded",
                         args_for(project, db, tmp_path, fake=True, allow_fake=True))
    assert not allowed["failed"], allowed.get("msg")
    assert allowed["fake"] is True
    assert "migrations are faked" in allowed["_ansible_output"]


def test_first_deploy_onto_a_missing_sqlite_file(sqlite_database, tmp_path):
    db = sqlite_database
    project = demo.copy_demo(tmp_path)
    assert not os.path.exists(db.name)
    # No allow_data_loss: removals in apps whose tables this plan creates lose nothing.
    args = args_for(project, db, tmp_path, allow_data_loss=False)

    result = run_module("django_migrate_guarded", args)

    assert not result["failed"], result.get("msg")
    assert result["changed"] and result["after"]["unapplied_count"] == 0
    assert result["backup"] is None and os.path.exists(db.name)


def test_failed_first_deploy_removes_the_new_sqlite_file(sqlite_database, tmp_path):
    db = sqlite_database
    project = demo.copy_demo(tmp_path)
    demo.add_failing_migration(project, "runpython")

    result = run_module("django_migrate_guarded", args_for(project, db, tmp_path))

    assert result["failed"] is True
    assert "did not exist before the run and was removed again" in result["msg"], result["msg"]
    assert not os.path.exists(db.name)
