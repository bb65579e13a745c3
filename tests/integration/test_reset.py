"""django_reset on the real demo project, SQLite, PostgreSQL and MariaDB: the safety backup,
the wipe inside the database (never the database itself), migrate, the fixtures - and the
safety backup restored when a step after the wipe fails."""
import glob
import os

import demo
from ansible_run import run_module
from databases import pg_admin_sql
from runner_double import engine_of, execute
from ansible_collections.dbsafe.django.plugins.module_utils.snapshots import diff_snapshots

TITLES = "from books.models import Book\nresult = sorted(Book.objects.values_list('title', flat=True))"


def loaded_project(db, tmp_path):
    project = demo.copy_demo(tmp_path)
    demo.manage(project, db, "migrate")
    demo.manage(project, db, "loaddata", "demo")
    demo.manage(project, db, "shell", "-c",
                "from books.models import Book\nBook.objects.create(title='Written by hand')")
    return project


def reset(project, db, tmp_path, **extra):
    extra.setdefault("backup_dir", str(tmp_path / "backups"))
    return run_module("django_reset", demo.module_args(project, db, **extra))


def test_data_mode_empties_the_tables_and_loads_the_fixtures(database, tmp_path):
    project = loaded_project(database, tmp_path)
    before = engine_of(database).snapshot()

    checked = run_module("django_reset", demo.module_args(
        project, database, backup_dir=str(tmp_path / "backups"), fixtures=["demo"]), check=True)

    assert not checked["failed"], checked.get("msg")
    assert checked["would_run"] == ["safety backup", "flush (every row)", "migrate", "loaddata demo"]
    assert diff_snapshots(before, engine_of(database).snapshot()) == []
    assert not glob.glob(str(tmp_path / "backups" / "*"))

    result = reset(project, database, tmp_path, mode="data", fixtures=["demo"])

    assert not result["failed"], result.get("msg")
    assert result["changed"] and [s["step"] for s in result["steps"]] == ["flush", "migrate", "loaddata"]
    titles = demo.django_json(project, database, TITLES)
    assert "Written by hand" not in titles and "A Wizard of Earthsea" in titles
    assert os.path.isfile(result["backup"]["path"])
    assert os.stat(result["backup"]["path"]).st_mode & 0o777 == 0o600
    if database.password:
        assert database.password not in repr(result)


def test_schema_mode_drops_every_object_but_keeps_the_database(database, tmp_path):
    project = loaded_project(database, tmp_path)
    execute(database, "CREATE TABLE stray_by_hand (id integer);\n")

    result = reset(project, database, tmp_path, mode="schema", fixtures=["demo"])

    assert not result["failed"], result.get("msg")
    assert [s["step"] for s in result["steps"]] == ["drop_objects", "migrate", "loaddata"]
    assert "stray_by_hand" not in engine_of(database).snapshot()["schema"]
    assert demo.migrate_plan(project, database) == []
    assert "Written by hand" not in demo.django_json(project, database, TITLES)


def test_a_failing_step_after_the_wipe_restores_the_safety_backup(database, tmp_path):
    project = loaded_project(database, tmp_path)
    before = engine_of(database).snapshot()

    result = reset(project, database, tmp_path, mode="schema", fixtures=["no_such_fixture"])

    assert result["failed"]
    assert "the reset failed at loaddata" in result["msg"]
    assert "was restored: the database is as it was before the reset" in result["msg"]
    assert result["restored"] is True and result["failed_step"] == "loaddata"
    assert diff_snapshots(before, engine_of(database).snapshot()) == []


def test_a_user_without_the_create_database_privilege_can_reset(postgres_database, tmp_path):
    """The database is never dropped, so a role without CREATEDB (as many hosted databases
    give) resets all the same and the host never ends up without its database."""
    pg_admin_sql("ALTER ROLE %s NOCREATEDB;\n" % postgres_database.user)
    project = loaded_project(postgres_database, tmp_path)

    result = reset(project, postgres_database, tmp_path, mode="schema", fixtures=["demo"])

    assert not result["failed"], result.get("msg")
    assert "A Wizard of Earthsea" in demo.django_json(project, postgres_database, TITLES)


def test_bad_input_changes_nothing(sqlite_database, tmp_path):
    project = loaded_project(sqlite_database, tmp_path)
    before = engine_of(sqlite_database).snapshot()

    no_dir = run_module("django_reset", demo.module_args(project, sqlite_database, mode="data"))
    bad_mode = reset(project, sqlite_database, tmp_path, mode="everything")

    assert no_dir["failed"] and "backup_dir" in no_dir["msg"]
    assert bad_mode["failed"] and "mode" in bad_mode["msg"]
    assert diff_snapshots(before, engine_of(sqlite_database).snapshot()) == []


def test_a_restore_takes_a_safety_backup_of_what_it_overwrites(database, tmp_path):
    """db_backup state=restore: what the restore replaces is kept first, and a given src
    needs no backup_dir (the safety backup goes beside it)."""
    project = loaded_project(database, tmp_path)
    dumped = run_module("db_backup", demo.module_args(project, database,
                                                      backup_dir=str(tmp_path / "backups")))
    assert not dumped["failed"], dumped.get("msg")
    demo.manage(project, database, "shell", "-c",
                "from books.models import Book\nBook.objects.create(title='Written after the backup')")
    after_backup = engine_of(database).snapshot()

    restored = run_module("db_backup", demo.module_args(
        project, database, state="restore", src=dumped["backup"]["path"]))

    assert not restored["failed"], restored.get("msg")
    safety = restored["safety_backup"]
    assert safety and os.path.dirname(safety["path"]) == os.path.dirname(dumped["backup"]["path"])
    assert "safety backup %s" % safety["path"] in restored["msg"]
    assert "Written after the backup" not in demo.django_json(project, database, TITLES)

    back = run_module("db_backup", demo.module_args(
        project, database, state="restore", src=safety["path"], safety_backup=False))
    assert not back["failed"], back.get("msg")
    assert back["safety_backup"] is None
    assert diff_snapshots(after_backup, engine_of(database).snapshot()) == []
