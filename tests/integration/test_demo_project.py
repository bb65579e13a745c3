"""The demo Django project itself, and the helpers in demo.py, on the real database servers.

Everything here runs real ``manage.py`` processes against SQLite, PostgreSQL and MariaDB,
under Django 5.2 and (where cheap) 4.2, 3.2 (on Python 3.8) and 6.1 (on Python 3.12).
"""
import os
import signal
import time

import pytest

import demo


BOOKS = ["0001_initial", "0002_book_pages_slug", "0003_book_author", "0004_fill_book_slugs",
         "0005_remove_book_notes"]
AUTHORS = ["0001_initial", "0002_author_born"]
SLUGS = ["a-wizard-of-earthsea", "the-left-hand-of-darkness", "dune", "kindred",
         "an-anonymous-pamphlet"]
TITLES = "A Wizard of Earthsea\nAn Anonymous Pamphlet\nDune\nKindred\nThe Left Hand of Darkness\n"

# What the database looks like, read with raw SQL so it works at any migration state.
STATE = """
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client

recorded = sorted("%s.%s" % key for key in MigrationRecorder(connection).applied_migrations())
with connection.cursor() as cursor:
    tables = connection.introspection.table_names(cursor)
    columns = slugs = []
    if "books_book" in tables:
        columns = sorted(c.name for c in
                         connection.introspection.get_table_description(cursor, "books_book"))
        cursor.execute("SELECT slug FROM books_book ORDER BY id")
        slugs = [row[0] for row in cursor.fetchall()]
    counts = {}
    for table in ("authors_author", "books_book"):
        if table in tables:
            cursor.execute("SELECT COUNT(*) FROM %s" % table)
            counts[table] = cursor.fetchone()[0]
result = {"recorded": recorded, "columns": columns, "slugs": slugs, "counts": counts,
          "vendor": connection.vendor}
if WITH_HTTP:
    client = Client(HTTP_HOST="localhost")
    health, books = client.get("/health/"), client.get("/books/")
    result["health"] = [health.status_code, health.content.decode()]
    result["books"] = [books.status_code, books.content.decode()]
"""


def state(project, db, python=None, http=False):
    return demo.django_json(project, db, "WITH_HTTP = %r\n%s" % (http, STATE), python=python)


def books_applied(shown):
    return [name for name, applied in shown["books"] if applied]


# --- The project on every engine ----------------------------------------------------------------


@pytest.mark.parametrize("django", ["5.2", "4.2", "3.2", "6.1"])
def test_step_by_step_migrate_back_and_forth(database, tmp_path, django):
    """Partial migrate, showmigrations, the plan, full migrate, fixture, reverse, forward."""
    python = demo.python_for(django)
    project = demo.copy_demo(tmp_path)

    demo.manage(project, database, "migrate", "books", "0002", python=python)
    shown = demo.showmigrations(project, database, python=python)
    assert sorted(shown) == ["admin", "auth", "authors", "books", "contenttypes", "sessions"]
    assert [name for name, _applied in shown["books"]] == BOOKS
    assert [name for name, _applied in shown["authors"]] == AUTHORS
    applied = sorted("%s.%s" % (app, name) for app, entries in shown.items()
                     for name, done in entries if done)
    assert applied == ["books.0001_initial", "books.0002_book_pages_slug"]

    plan = demo.migrate_plan(project, database, python=python)
    unapplied = {"%s.%s" % (app, name) for app, entries in shown.items()
                 for name, done in entries if not done}
    assert len(plan) == len(unapplied) and set(plan) == unapplied
    assert [entry for entry in plan if entry.startswith("books.")] == \
        ["books." + name for name in BOOKS[2:]]
    assert plan.index("authors.0001_initial") < plan.index("books.0003_book_author")
    assert plan.index("contenttypes.0001_initial") < plan.index("auth.0001_initial") \
        < plan.index("admin.0001_initial")
    if django == "5.2":  # a target plan only holds what that target needs
        assert demo.migrate_plan(project, database, python, "books", "0003") == \
            ["authors.0001_initial", "books.0003_book_author"]

    demo.manage(project, database, "migrate", python=python)
    demo.manage(project, database, "loaddata", "demo", python=python)
    migrated = state(project, database, python, http=True)
    assert migrated["vendor"] == database.engine
    assert migrated["counts"] == {"authors_author": 3, "books_book": 5}
    assert migrated["slugs"] == SLUGS
    assert "notes" not in migrated["columns"] and "author_id" in migrated["columns"]
    assert migrated["health"] == [200, "ok"]
    assert migrated["books"] == [200, TITLES]

    if django != "5.2" and database.engine != "sqlite":
        return  # keeps the file fast: Django 4.2, 3.2 and 6.1 go backwards on SQLite only

    # Backwards plan, then really back to 0003: RemoveField and the RunPython reverse run.
    if django == "5.2":
        assert demo.migrate_plan(project, database, python, "books", "0003") == \
            ["books.0005_remove_book_notes", "books.0004_fill_book_slugs"]
    demo.manage(project, database, "migrate", "books", "0003", python=python)
    back = state(project, database, python)
    assert "notes" in back["columns"]
    assert back["slugs"] == [""] * 5
    assert "books.0004_fill_book_slugs" not in back["recorded"]
    assert "books.0003_book_author" in back["recorded"]

    demo.manage(project, database, "migrate", python=python)
    forward = state(project, database, python)
    assert forward["slugs"] == SLUGS and "notes" not in forward["columns"]
    assert len(forward["recorded"]) == len(unapplied) + 2


@pytest.mark.parametrize("django", ["5.2", "4.2", "3.2", "6.1"])
def test_models_and_migrations_agree(sqlite_database, tmp_path, django):
    project = demo.copy_demo(tmp_path)
    proc = demo.manage(project, sqlite_database, "makemigrations", "--check", "--dry-run",
                       python=demo.python_for(django))
    assert "No changes detected" in proc.stdout


# --- Scenario builders ----------------------------------------------------------------------------


@pytest.mark.parametrize("django", ["5.2", "4.2", "3.2", "6.1"])
def test_add_pending_model_change_is_detected(sqlite_database, tmp_path, django):
    project = demo.copy_demo(tmp_path)
    field = demo.add_pending_model_change(project)
    proc = demo.manage(project, sqlite_database, "makemigrations", "--check", "--dry-run",
                       python=demo.python_for(django), check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Add field %s to book" % field in proc.stdout
    assert demo.migration_names(project) == BOOKS  # nothing written


def test_add_conflict_gives_two_valid_leaves(sqlite_database, tmp_path):
    db = sqlite_database
    project = demo.copy_demo(tmp_path)
    created = demo.add_conflict(project)
    assert len(created) == 2 and all(name.startswith("0006_") for name in created)
    assert demo.leaf_migrations(project) == sorted(created)
    with pytest.raises(ValueError):
        demo.leaf_migration(project)

    proc = demo.manage(project, db, "migrate", check=False)
    assert proc.returncode != 0
    assert "Conflicting migrations detected" in proc.stderr
    assert all(name in proc.stderr for name in created)

    # Each side is valid: merged, everything applies and models match the migrations.
    demo.manage(project, db, "makemigrations", "--merge", "--noinput")
    assert len(demo.leaf_migrations(project)) == 1
    demo.manage(project, db, "migrate")
    proc = demo.manage(project, db, "makemigrations", "--check", "--dry-run")
    assert "No changes detected" in proc.stdout


@pytest.mark.parametrize("kind", ["runpython", "runsql"])
def test_add_failing_migration_fails_after_changing_the_schema(database, tmp_path, kind):
    project = demo.copy_demo(tmp_path)
    name = demo.add_failing_migration(project, kind)
    assert name == "0006_failing_" + kind
    assert demo.leaf_migration(project) == name

    proc = demo.manage(project, database, "migrate", check=False)
    assert proc.returncode != 0
    assert "Applying books.%s..." % name in proc.stdout
    if kind == "runpython":
        assert demo.FAILURE_MESSAGE in proc.stderr
    else:
        assert "THIS IS NOT VALID SQL" in proc.stderr or "syntax" in proc.stderr.lower()

    after = state(project, database)
    assert "books.0005_remove_book_notes" in after["recorded"]
    assert "books." + name not in after["recorded"]
    # Transactional DDL rolls the AddField back; MySQL/MariaDB commits it before failing.
    assert ("reviewed" in after["columns"]) == (database.engine == "mysql")


def test_add_slow_migration_can_be_killed_midway(sqlite_database, tmp_path):
    db = sqlite_database
    project = demo.copy_demo(tmp_path)
    name = demo.add_slow_migration(project, 60)
    marker = demo.slow_marker_path(project)

    proc = demo.start_manage(project, db, "migrate")
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(marker) and proc.poll() is None:
            assert time.monotonic() < deadline, "the slow migration never started"
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
        with open(marker) as handle:
            assert handle.read() == str(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    after = state(project, db)
    assert "books.0005_remove_book_notes" in after["recorded"]
    assert "books." + name not in after["recorded"]
    assert "processed" not in after["columns"]


def test_add_slow_migration_finishes(sqlite_database, tmp_path):
    project = demo.copy_demo(tmp_path)
    name = demo.add_slow_migration(project, 0.2)
    proc = demo.manage(project, sqlite_database, "migrate")
    assert "slow migration sleeping" in proc.stdout
    after = state(project, sqlite_database)
    assert "books." + name in after["recorded"] and "processed" in after["columns"]


def test_delete_migration_leaves_a_ghost_row(sqlite_database, tmp_path):
    db = sqlite_database
    project = demo.copy_demo(tmp_path)
    demo.manage(project, db, "migrate")
    path = demo.delete_migration(project, "books", BOOKS[-1])
    assert not os.path.exists(path)
    assert demo.leaf_migration(project) == BOOKS[-2]
    assert demo.next_number(project) == "0005"

    shown = demo.showmigrations(project, db)
    assert shown["books"] == [(name, True) for name in BOOKS[:-1]]
    assert "books." + BOOKS[-1] in state(project, db)["recorded"]


# --- Pure helpers (no Django) ---------------------------------------------------------------------


def test_copy_demo_leaves_out_databases_bytecode_and_uploads(tmp_path, monkeypatch):
    source = tmp_path / "src"
    for relative in ("manage.py", "db.sqlite3", "db.sqlite3-journal", "books/models.py",
                     "books/__pycache__/models.cpython-311.pyc", "media/covers/a.txt",
                     "media/uploads/covers/upload.txt"):
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_text("x")
    monkeypatch.setattr(demo, "DEMO_DIR", str(source))

    copy = demo.copy_demo(tmp_path / "dest")

    assert copy == str(tmp_path / "dest" / "demo")
    found = sorted(os.path.relpath(os.path.join(d, f), copy)
                   for d, _dirs, files in os.walk(copy) for f in files)
    assert found == ["books/models.py", "manage.py", "media/covers/a.txt"]


def test_copy_of_the_real_project_is_complete(tmp_path):
    copy = demo.copy_demo(tmp_path)
    assert demo.migration_names(copy) == BOOKS
    assert demo.migration_names(copy, "authors") == AUTHORS
    assert demo.leaf_migration(copy) == BOOKS[-1]
    assert os.listdir(os.path.join(copy, "media", "covers"))
    assert not os.path.exists(os.path.join(copy, "db.sqlite3"))


def test_parse_showmigrations_handles_squashes_and_empty_apps():
    output = (
        "admin\n"
        " [X] 0001_initial\n"
        "books\n"
        " [X] 0001_squashed_0004_fill (4 squashed migrations)\n"
        " [-] 0005_squashed_0006 (2 squashed migrations) Run 'manage.py migrate' to finish"
        " recording.\n"
        " [ ] 0007_more\n"
        " [X] 0008_x (applied at 2024-01-02 03:04:05)\n"
        "empty\n"
        " (no migrations)\n"
    )
    assert demo.parse_showmigrations(output) == {
        "admin": [("0001_initial", True)],
        "books": [("0001_squashed_0004_fill", True), ("0005_squashed_0006", True),
                  ("0007_more", False), ("0008_x", True)],
        "empty": [],
    }


def test_parse_migrate_plan():
    output = (
        "Planned operations:\n"
        "contenttypes.0001_initial\n"
        "    Create model ContentType\n"
        "books.0004_fill_book_slugs\n"
        "    Raw Python operation -> Fill empty slugs from the titles.\n"
        "books.0009_sql\n"
        "    Raw SQL operation -> UPDATE books_book SET x = 1 WHERE y.z = 2\n"
    )
    assert demo.parse_migrate_plan(output) == [
        "contenttypes.0001_initial", "books.0004_fill_book_slugs", "books.0009_sql"]
    assert demo.parse_migrate_plan("Planned operations:\n  No planned migration operations.\n") \
        == []
