"""Issue 15: the modules agree with manage.py on real projects.

- Django's system checks gate the guarded migrate as they gate ``manage.py migrate``; the
  facts and check mode show them; ``skip_checks`` is the explicit way past them.
- A refused check-mode run still shows its plan, operations and SQL.
- The project boots through its own manage.py (PyMySQL as MySQLdb, a .env), also under a
  command_prefix; without a manage.py it falls back and says so.
- Refused and failed results carry duration, launches and timings; no lock file stays behind.
"""
import os

import pytest

import demo
from ansible_run import run_module
from runner_double import engine_of
from ansible_collections.dbsafe.django.plugins.module_utils.snapshots import diff_snapshots


def prepared(db, tmp_path, upto=2, python=None):
    """A demo copy with authors + books up to the ``upto``-th migration applied, one author."""
    project = demo.copy_demo(tmp_path)
    names = demo.migration_names(project)
    demo.manage(project, db, "migrate", "authors", python=python)
    demo.manage(project, db, "migrate", "books", names[upto - 1], python=python)
    demo.manage(project, db, "shell", "-c",
                "from authors.models import Author\n"
                "Author.objects.create(name='Ursula', born='1929-10-21')\n", python=python)
    return project, names


def guarded_args(project, db, tmp_path, **extra):
    extra.setdefault("allow_data_loss", True)
    extra.setdefault("backup_dir", str(tmp_path / "backups"))
    return demo.module_args(project, db, **extra)


def assert_always_returned(result):
    """The values the module documents as returned always, in any result."""
    for key in ("duration", "launches", "timings", "plan", "restored", "fake"):
        assert key in result, (key, sorted(result))
    assert result["launches"] == 1


def no_lock_files(db):
    if db.engine != "sqlite":
        return True
    directory = os.path.dirname(db.name)
    return not [name for name in os.listdir(directory) if ".dbsafe-lock" in name]


# -- system checks ---------------------------------------------------------------------------


def test_a_system_check_error_gates_the_migrate_as_manage_py_does(database, tmp_path):
    project, names = prepared(database, tmp_path)
    check_id = demo.add_system_check(project)
    # What manage.py migrate does with it: refuses before touching anything.
    plain = demo.manage(project, database, "migrate", check=False)
    assert plain.returncode != 0 and check_id in plain.stderr, plain.stderr
    before = engine_of(database).snapshot()

    facts = run_module("django_showmigrations", demo.module_args(project, database))

    assert not facts["failed"], facts.get("msg")
    found = [m for m in facts["checks"] if m["id"] == check_id]
    assert found and found[0]["level"] == "ERROR" and found[0]["serious"] is True
    assert found[0]["hint"] == demo.CHECK_HINT
    assert database.name in found[0]["message"] or "default" in found[0]["message"]

    # Check mode with --diff: refused, but the plan, its operations and the SQL are shown.
    shown = run_module("django_migrate_guarded", guarded_args(project, database, tmp_path),
                       check=True, diff=True)

    assert shown["failed"] is True
    assert check_id in shown["msg"] and demo.CHECK_HINT in shown["msg"], shown["msg"]
    assert "skip_checks" in shown["msg"]
    step = [s for s in shown["plan"] if s["migration"] == "books." + names[2]][0]
    assert step["operations"] and step["sql"]
    assert any(check_id == m["id"] for m in shown["before"]["checks"])
    assert_always_returned(shown)

    refused = run_module("django_migrate_guarded", guarded_args(project, database, tmp_path))

    assert refused["failed"] is True and refused["database_changed"] is False
    assert check_id in refused["msg"], refused["msg"]
    assert_always_returned(refused)
    assert diff_snapshots(before, engine_of(database).snapshot()) == []
    assert not os.path.exists(tmp_path / "backups")
    assert no_lock_files(database)

    # The explicit way past them, recorded with a warning (as manage.py migrate --skip-checks).
    skipped = run_module("django_migrate_guarded",
                         guarded_args(project, database, tmp_path, skip_checks=True))

    assert not skipped["failed"], skipped.get("msg")
    assert skipped["skip_checks"] is True and skipped["changed"] is True
    assert any("skip_checks" in w and check_id in w for w in skipped.get("warnings", [])), \
        skipped.get("warnings")
    assert skipped["after"]["plan"] == []
    assert no_lock_files(database)


def test_check_mode_shows_the_plan_and_sql_of_a_plan_refused_for_data_loss(
        sqlite_database, tmp_path):
    project, names = prepared(sqlite_database, tmp_path)

    result = run_module("django_migrate_guarded",
                        guarded_args(project, sqlite_database, tmp_path, allow_data_loss=False),
                        check=True, diff=True)

    assert result["failed"] is True and "loses data" in result["msg"], result["msg"]
    assert result["data_loss"]
    removing = [s for s in result["plan"]
                if any(op["type"] == "RemoveField" for op in s["operations"])]
    assert removing and removing[0]["sql"]
    assert "-- Apply books." + names[2] in result["diff"]["prepared"]
    assert_always_returned(result)


# -- booting through manage.py ---------------------------------------------------------------


def test_the_project_boots_through_its_manage_py(database, tmp_path):
    """manage.py installs PyMySQL as MySQLdb and loads .env (the database settings): the
    modules get no environment at all and still reach the database, also under a prefix."""
    project = demo.copy_demo(tmp_path)
    environment = dict(database.demo_env(),
                       DEMO_MEDIA_ROOT=os.path.join(project, "media"))
    demo.boot_through_manage_py(project, environment)
    demo.manage(project, database, "migrate", "books", "0002")
    args = {"project_path": project, "python": demo.PYTHONS["5.2"]}

    facts = run_module("django_showmigrations", args)

    assert not facts["failed"], facts.get("msg")
    assert facts["boot"] == "manage.py"
    assert facts["database"]["name"] == database.name
    assert facts["plan"]

    prefixed = run_module("django_showmigrations", dict(args, command_prefix=["env"]))

    assert not prefixed["failed"], prefixed.get("msg")
    assert prefixed["boot"] == "manage.py" and prefixed["database"]["name"] == database.name

    migrated = run_module("django_migrate_guarded",
                          dict(args, allow_data_loss=True, backup_dir=str(tmp_path / "b")))

    assert not migrated["failed"], migrated.get("msg")
    assert migrated["after"]["plan"] == [] and migrated["after"]["boot"] == "manage.py"


def test_without_manage_py_the_boot_falls_back_and_says_so(sqlite_database, tmp_path):
    project = demo.copy_demo(tmp_path)
    os.remove(os.path.join(project, "manage.py"))
    args = demo.module_args(project, sqlite_database, settings="demo.settings")

    facts = run_module("django_showmigrations", args)

    assert not facts["failed"], facts.get("msg")
    assert facts["boot"] == "fallback" and "no manage.py" in facts["boot_note"]
    assert facts["database"]["name"] == sqlite_database.name

    del args["settings"]
    refused = run_module("django_showmigrations", args)
    assert refused["failed"] is True and "no manage.py" in refused["msg"]


@pytest.mark.parametrize("django", ["3.2", "6.1"])
def test_manage_py_boot_and_the_checks_gate_on_the_oldest_and_newest_django(sqlite_database,
                                                                            tmp_path, django):
    """introspect.py is plain Python 3.8 / Django 3.2, and follows Django 6.1."""
    python = demo.python_for(django)
    project = demo.copy_demo(tmp_path)
    demo.boot_through_manage_py(project, dict(sqlite_database.demo_env()))
    demo.manage(project, sqlite_database, "migrate", "books", "0002", python=python)
    check_id = demo.add_system_check(project)
    args = {"project_path": project, "python": python}

    facts = run_module("django_showmigrations", args)

    assert not facts["failed"], facts.get("msg")
    assert facts["django_version"].startswith(django) and facts["boot"] == "manage.py"
    assert [m["id"] for m in facts["checks"] if m["serious"]] == [check_id]
    assert not facts.get("warnings")  # inside the tested range

    refused = run_module("django_migrate_guarded",
                         dict(args, allow_data_loss=True, backup_dir=str(tmp_path / "b")))
    assert refused["failed"] is True and check_id in refused["msg"]
    migrated = run_module("django_migrate_guarded",
                          dict(args, allow_data_loss=True, backup_dir=str(tmp_path / "b"),
                               skip_checks=True))
    assert not migrated["failed"], migrated.get("msg")
    assert migrated["after"]["plan"] == [] and migrated["skip_checks"] is True


# -- row changes -----------------------------------------------------------------------------


def test_the_rows_a_data_migration_deletes_are_reported(database, tmp_path):
    project = demo.copy_demo(tmp_path)
    demo.manage(project, database, "migrate")
    demo.manage(project, database, "shell", "-c",
                "from authors.models import Author\n"
                "Author.objects.bulk_create([Author(name='a%d' % i, born='1950-01-01')\n"
                "                            for i in range(100)])\n")
    name = demo.add_row_deleting_migration(project, keep=60)
    args = guarded_args(project, database, tmp_path)

    shown = run_module("django_migrate_guarded", args, check=True)

    assert not shown["failed"], shown.get("msg")
    assert shown["code_steps"] == [{"migration": "books." + name,
                                    "operations": ["RunPython: Raw Python operation"]}]
    assert "books." + name in shown["msg"] and "RunPython" in shown["msg"]

    result = run_module("django_migrate_guarded", args)

    assert not result["failed"], result.get("msg")
    assert result["row_changes"] == [
        {"table": "authors_author", "before": 100, "after": 60, "change": -40}]
    assert "authors_author 100 -> 60" in result["msg"]
    # Counting is the cheap part: no row is read, unlike the snapshot's hashes.
    assert "rows_after" in result["timings"]
    print("rows_after %s s, snapshot_before %s s" % (result["timings"]["rows_after"],
                                                     result["timings"]["snapshot_before"]))


def test_a_half_applied_squash_is_migrated_and_verified(database, tmp_path):
    """A project that squashed books 0001-0003 (the originals kept, as Django advises while
    some databases lag behind) on a database that has only 0001 and 0002: the plan runs the
    remaining originals, Django records the squash too, the verification passes, and the facts
    afterwards show the squash applied and nothing left."""
    project, names = prepared(database, tmp_path, upto=2)
    demo.manage(project, database, "squashmigrations", "books", names[0], names[2], "--noinput")
    squash = [n for n in demo.migration_names(project) if "_squashed_" in n]
    assert len(squash) == 1, demo.migration_names(project)

    checked = run_module("django_migrate_guarded", guarded_args(project, database, tmp_path),
                         check=True)
    assert not checked["failed"], checked.get("msg")
    books_plan = [s["migration"] for s in checked["plan"] if s["migration"].startswith("books.")]
    assert books_plan[:1] == ["books." + names[2]]  # the original, not the squash

    result = run_module("django_migrate_guarded", guarded_args(project, database, tmp_path))

    assert not result["failed"], result.get("msg")
    assert result["after"]["plan"] == [] and result["after"]["pending_changes"] == {}
    books = dict((m["name"], m["applied"]) for m in result["after"]["apps"]["books"])
    assert books[squash[0]] is True
    assert demo.migrate_plan(project, database) == []
