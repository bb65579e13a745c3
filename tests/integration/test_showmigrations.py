"""django_showmigrations against the real demo project on SQLite, PostgreSQL and MariaDB."""
import json
import os
import stat

import pytest

import demo
from ansible_run import run_module


def books(project):
    """The books app's migration names, in order, from the files."""
    return sorted(
        name[:-3] for name in os.listdir(os.path.join(project, "books", "migrations"))
        if name[:4].isdigit() and name.endswith(".py")
    )


def assert_matches_django(result, project, db, python=None):
    expected = demo.showmigrations(project, db, python=python)
    got = dict(
        (app, [(m["name"], m["applied"]) for m in migrations])
        for app, migrations in result["apps"].items()
    )
    assert got == dict((app, list(entries)) for app, entries in expected.items())
    assert result["plan"] == demo.migrate_plan(project, db, python=python)
    assert result["unapplied_count"] == sum(
        1 for entries in expected.values() for _name, applied in entries if not applied
    )


@pytest.mark.parametrize("django", ["5.2", "4.2", "3.2"])
def test_partially_migrated_project_matches_showmigrations_and_plan(database, tmp_path, django):
    if django == "4.2" and database.engine == "mysql":
        pytest.skip("4.2 is covered on SQLite and PostgreSQL; MariaDB runs 5.2 and 3.2")
    python = demo.python_for(django)
    project = demo.copy_demo(tmp_path)
    demo.manage(project, database, "migrate", "books", books(project)[1], python=python)

    result = run_module("django_showmigrations", demo.module_args(project, database, python))

    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False
    assert result["django_version"].startswith(django)
    assert result["database"]["vendor"] == database.engine
    assert_matches_django(result, project, database, python)
    applied = [m for m in result["apps"]["books"] if m["applied"]]
    assert [m["name"] for m in applied] == books(project)[:2]
    assert all(m["applied_at"] for m in applied)
    assert "books." + books(project)[-1] in result["plan"]
    assert result["ghosts"] == [] and result["conflicts"] == {} and result["inconsistent"] == []
    assert result["pending_changes"] == {}
    assert result["ansible_facts"]["django_migrations"]["plan"] == result["plan"]
    if database.password:
        assert database.password not in json.dumps(result)


@pytest.mark.parametrize("engine_fixture, django", [
    ("postgres_database", "5.2"),
    # Django 3.2 (Python 3.8) on every engine: introspect.py must stay 3.8/3.2-compatible.
    ("sqlite_database", "3.2"), ("postgres_database", "3.2"), ("mysql_database", "3.2"),
])
def test_ghost_conflict_and_pending_change_are_reported(request, engine_fixture, django, tmp_path):
    db = request.getfixturevalue(engine_fixture)
    python = demo.python_for(django)
    project = demo.copy_demo(tmp_path)
    demo.manage(project, db, "migrate", python=python)
    last = books(project)[-1]
    demo.delete_migration(project, "books", last)
    demo.add_conflict(project)
    demo.add_pending_model_change(project)

    result = run_module("django_showmigrations", demo.module_args(project, db, python))

    assert not result.get("failed"), result.get("msg")
    assert result["django_version"].startswith(django)
    assert result["ghosts"] == ["books." + last]
    assert len(result["conflicts"]["books"]) == 2
    assert result["pending_changes"].get("books"), result["pending_changes"]


@pytest.mark.parametrize("engine_fixture", ["sqlite_database", "mysql_database"])
def test_ghost_on_sqlite_and_mariadb(request, engine_fixture, tmp_path):
    db = request.getfixturevalue(engine_fixture)
    project = demo.copy_demo(tmp_path)
    demo.manage(project, db, "migrate")
    last = books(project)[-1]
    demo.delete_migration(project, "books", last)
    result = run_module("django_showmigrations", demo.module_args(project, db, apps=["books"]))
    assert result["ghosts"] == ["books." + last]
    assert list(result["apps"]) == ["books"]


def test_inconsistent_history_is_reported(sqlite_database, tmp_path):
    db = sqlite_database
    project = demo.copy_demo(tmp_path)
    names = books(project)
    demo.manage(project, db, "migrate", "books", names[0])
    demo.manage(
        project, db, "shell", "-c",
        "from django.db import connection\n"
        "from django.db.migrations.recorder import MigrationRecorder\n"
        "MigrationRecorder(connection).record_applied('books', %r)\n" % names[2],
    )
    result = run_module("django_showmigrations", demo.module_args(project, db))
    # books 0003 depends on books 0002 and on authors 0001 (its foreign key): both missing.
    assert {"migration": "books." + names[2], "missing_dependency": "books." + names[1]} \
        in result["inconsistent"]
    assert {i["migration"] for i in result["inconsistent"]} == {"books." + names[2]}


def test_one_interpreter_launch_per_call_and_check_mode(sqlite_database, tmp_path):
    project = demo.copy_demo(tmp_path)
    log = tmp_path / "launches.log"
    wrapper = tmp_path / "python"
    wrapper.write_text('#!/bin/sh\necho launch >> "%s"\nexec "%s" "$@"\n'
                       % (log, demo.PYTHONS["5.2"]))
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)

    result = run_module("django_showmigrations",
                        demo.module_args(project, sqlite_database, python=str(wrapper)), check=True)

    assert not result.get("failed"), result.get("msg")
    assert log.read_text().count("launch") == 1
    assert result["unapplied_count"] > 0
    # Reading facts of a database that does not exist yet must not create it.
    assert not os.path.exists(sqlite_database.name)


@pytest.mark.parametrize("case", [
    "missing_manage_py", "unknown_settings", "missing_interpreter", "unknown_app",
    "unknown_alias",
])
def test_bad_inputs_fail_clearly_and_change_nothing(sqlite_database, tmp_path, case):
    project = demo.copy_demo(tmp_path)
    args = demo.module_args(project, sqlite_database)
    expected = {
        "missing_manage_py": "no manage.py",
        "unknown_settings": "cannot import settings module 'nope.settings'",
        "missing_interpreter": "not found or not executable",
        "unknown_app": "unknown app label(s): nope",
        "unknown_alias": "database alias 'other' is not in settings.DATABASES",
    }[case]
    if case == "missing_manage_py":
        args["project_path"] = str(tmp_path)
    elif case == "unknown_settings":
        args["settings"] = "nope.settings"
    elif case == "missing_interpreter":
        args["python"] = str(tmp_path / "no-such-venv" / "bin" / "python")
    elif case == "unknown_app":
        args["apps"] = ["books", "nope"]
    elif case == "unknown_alias":
        args["database"] = "other"
    before = sorted(os.listdir(project))

    result = run_module("django_showmigrations", args)

    assert result.get("failed") is True
    assert expected in result["msg"], result["msg"]
    assert sorted(os.listdir(project)) == before
    assert not os.path.exists(sqlite_database.name)


@pytest.mark.parametrize("engine_fixture", ["postgres_database", "mysql_database"])
def test_unreachable_database_names_where(request, engine_fixture, tmp_path):
    db = request.getfixturevalue(engine_fixture)
    db.port = 1  # nothing listens there
    project = demo.copy_demo(tmp_path)
    result = run_module("django_showmigrations", demo.module_args(project, db))
    assert result.get("failed") is True
    assert "cannot connect to" in result["msg"]
    assert "%r at %s:1" % (db.name, db.host) in result["msg"], result["msg"]
    assert db.password not in json.dumps(result)
