"""R6 - operator faults: objects the application's user does not own, restored by a privileged
restore login (restore_login_user / restore_login_password).

The same guarded migrate test_r6_preflight.py sees refused (a PostgreSQL extension created by
the superuser, a MariaDB view with DEFINER=root) is let through when a privileged account is
given for the restore; its migration fails, the restore runs as that account and the database
is exactly as before - checked independently with the admin clients (catalogs, row counts,
django_migrations). Neither password appears in any process's argv.
"""
import secrets

import pytest

import demo
import harness
from ansible_run import run_module
from databases import mysql_admin_sql, pg_admin_sql
from test_r6_preflight import independent_state


def _privileged_account(db):
    """A new account that may drop and re-create anything: (user, password, cleanup)."""
    user = "restorer_" + secrets.token_hex(5)
    password = secrets.token_urlsafe(18)
    if db.engine == "postgresql":
        pg_admin_sql("CREATE ROLE %s LOGIN SUPERUSER PASSWORD '%s';" % (user, password))

        def cleanup():
            pg_admin_sql("REASSIGN OWNED BY %s TO postgres; DROP OWNED BY %s;" % (user, user),
                         database=db.name)
            pg_admin_sql("DROP ROLE IF EXISTS %s;" % user)
    else:
        mysql_admin_sql("CREATE USER '{u}'@'%' IDENTIFIED BY '{p}'; CREATE USER '{u}'@'localhost' "
                        "IDENTIFIED BY '{p}'; GRANT ALL PRIVILEGES ON *.* TO '{u}'@'%' WITH GRANT "
                        "OPTION; GRANT ALL PRIVILEGES ON *.* TO '{u}'@'localhost' WITH GRANT OPTION;"
                        .format(u=user, p=password))

        def cleanup():
            mysql_admin_sql("DROP USER IF EXISTS '{u}'@'%'; DROP USER IF EXISTS '{u}'@'localhost';"
                            .format(u=user))
    return user, password, cleanup


def _guarded_watched(db, project, tmp_path, restore_user, restore_password):
    """The guarded migrate with the restore login, every process's argv sampled for both
    passwords; returns (result, sampler)."""
    args = demo.module_args(project, db, backup_dir=str(tmp_path / "backups"), lock_timeout=30,
                            restore_login_user=restore_user,
                            restore_login_password=restore_password)
    with harness.ArgvSampler([db.password, restore_password]) as sampler:
        result = run_module("django_migrate_guarded", args)
    return result, sampler


def _foreign_object(db):
    """Create the object the application's user cannot re-create; returns its catalog line."""
    if db.engine == "postgresql":
        pg_admin_sql("CREATE EXTENSION citext;", database=db.name)
        return "citext"
    mysql_admin_sql("CREATE DEFINER=`root`@`localhost` VIEW book_titles AS "
                    "SELECT title FROM books_book;", database=db.name)
    return "book_titles root@localhost"


def _foreign_objects(db, state):
    if db.engine == "postgresql":
        return sorted(line.split()[0] for line in state["extensions"])
    return state["views"]


@pytest.mark.parametrize("engine", ("postgresql", "mysql"))
def test_a_failed_migrate_is_restored_by_the_privileged_login(case, engine, fresh_database,
                                                              tmp_path):
    case("R6", engine, "foreign-owned objects: a failed guarded migrate restored as the "
         "privileged restore login")
    db = fresh_database(engine)
    project = harness.prepared(db, tmp_path)
    foreign = _foreign_object(db)
    failing = demo.add_failing_migration(project, "runpython")
    before = independent_state(db)
    assert foreign in (before["extensions"] and [line.split()[0] for line in before["extensions"]]
                       if engine == "postgresql" else before["views"])
    user, password, cleanup = _privileged_account(db)
    try:
        # Without the restore login this run is refused (test_r6_preflight.py); with it the
        # preflight checks the privileged account, the migration runs, fails and is restored.
        result, sampler = _guarded_watched(db, project, tmp_path, user, password)
        case.message = result.get("msg", "")
        assert result["failed"] is True, result
        assert "refused" not in result["msg"], result["msg"]
        assert failing in result["msg"] and demo.FAILURE_MESSAGE in result["msg"], result["msg"]
        assert result.get("restored") is True and result.get("proven") is True, result["msg"]
        assert "restored and verified" in result["msg"], result["msg"]

        after = independent_state(db)
        assert _foreign_objects(db, after) == _foreign_objects(db, before)
        if engine == "postgresql":
            # Re-created by the restore login: only the owner of the extension may differ.
            after["extensions"], before["extensions"] = _foreign_objects(db, after), \
                _foreign_objects(db, before)
        assert after == before

        # The passwords reached the clients by environment / option file only.
        assert sampler.samples > 0 and sampler.clients(), (sampler.samples, sampler.clients())
        assert sampler.leaks == [], sampler.leaks[:3]
        assert password not in str(result) and (not db.password or db.password not in str(result))
    finally:
        cleanup()


@pytest.mark.parametrize("engine", ("postgresql", "mysql"))
def test_db_backup_verifies_and_restores_as_the_privileged_login(case, engine, fresh_database,
                                                                 tmp_path):
    case("R6", engine, "foreign-owned objects: db_backup state=verify and state=restore as the "
         "privileged restore login")
    db = fresh_database(engine)
    project = harness.prepared(db, tmp_path)
    foreign = _foreign_object(db)
    backups = str(tmp_path / "backups")
    dumped = harness.watched_run(db, "db_backup", demo.module_args(
        project, db, state="dump", backup_dir=backups), "R6.restore-login")
    assert dumped.get("failed") is not True, dumped.get("msg")
    backed_up = independent_state(db)
    assert foreign in (_foreign_objects(db, backed_up))
    user, password, cleanup = _privileged_account(db)
    try:
        # Written after the backup: the restore takes it away again.
        if engine == "postgresql":
            pg_admin_sql("DELETE FROM books_book;", database=db.name)
        else:
            mysql_admin_sql("DELETE FROM books_book;", database=db.name)
        assert independent_state(db) != backed_up

        for state in ("verify", "restore"):
            args = demo.module_args(project, db, state=state, backup_dir=backups,
                                    restore_login_user=user, restore_login_password=password)
            with harness.ArgvSampler([db.password, password]) as sampler:
                result = run_module("db_backup", args)
            case.message = result.get("msg", "")
            assert result.get("failed") is not True, result.get("msg")
            assert sampler.leaks == [], sampler.leaks[:3]
            assert password not in str(result)
        assert result["restored"] is True and result["safety_backup"], result

        after = independent_state(db)
        assert _foreign_objects(db, after) == _foreign_objects(db, backed_up)
        if engine == "postgresql":
            after["extensions"], backed_up["extensions"] = _foreign_objects(db, after), \
                _foreign_objects(db, backed_up)
        assert after == backed_up
    finally:
        cleanup()


@pytest.mark.parametrize("engine", ("postgresql", "mysql"))
def test_a_failed_reset_is_put_back_by_the_privileged_login(case, engine, fresh_database,
                                                            tmp_path):
    case("R6", engine, "foreign-owned objects: django_reset's safety backup restored as the "
         "privileged restore login after a failed step")
    db = fresh_database(engine)
    project = harness.prepared(db, tmp_path)
    foreign = _foreign_object(db)
    before = independent_state(db)
    assert foreign in _foreign_objects(db, before)
    user, password, cleanup = _privileged_account(db)
    try:
        # The rows are flushed, then loaddata fails: the safety backup must come back.
        args = demo.module_args(project, db, mode="data", fixtures=["no_such_fixture_dbsafe"],
                                backup_dir=str(tmp_path / "backups"),
                                restore_login_user=user, restore_login_password=password)
        with harness.ArgvSampler([db.password, password]) as sampler:
            result = run_module("django_reset", args)
        case.message = result.get("msg", "")
        assert result["failed"] is True, result
        assert result.get("restored") is True and "was restored" in result["msg"], result["msg"]
        assert sampler.leaks == [], sampler.leaks[:3]
        assert password not in str(result)

        after = independent_state(db)
        assert _foreign_objects(db, after) == _foreign_objects(db, before)
        if engine == "postgresql":
            after["extensions"], before["extensions"] = _foreign_objects(db, after), \
                _foreign_objects(db, before)
        assert after == before
    finally:
        cleanup()
