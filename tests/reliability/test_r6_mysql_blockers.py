"""R6 - operator faults on MariaDB: the guard's restore after a failed migrate is blocked by an
application session that keeps a transaction open on books_book.

By default the restore waits a bounded time (guard.RESTORE_LOCK_WAIT), gives up and names the
session (connection id, user, its query); with terminate_blocking_sessions the session is
ended first and the backup restored. Each case ends with the database exactly as before,
checked with the admin client (catalog, columns, row counts, django_migrations), not with the
collection's own snapshot code.
"""
import time

import pytest

import demo
import harness
from databases import mysql_admin_sql
from test_r6_preflight import independent_state

BLOCKER_QUERY = "SELECT SLEEP(180)"


def _add_migration_that_leaves_a_blocker(project, change_schema):
    """A books migration (optionally adding a column first: MariaDB keeps DDL, so the restore
    has to undo it) that starts another session - the application, as it were - which opens a
    transaction, reads books_book (and so holds its metadata lock until it ends) and stays;
    then fails."""
    operations = ""
    if change_schema:
        operations += ('migrations.RunSQL("ALTER TABLE books_book ADD COLUMN blocked_extra integer NULL", '
                       '"ALTER TABLE books_book DROP COLUMN blocked_extra"),\n')
    operations += "migrations.RunPython(block_and_fail, migrations.RunPython.noop),\n"
    demo._write_migration(
        project, "%s_blocker" % demo.next_number(project), demo.leaf_migration(project), operations,
        preamble=(
            "def block_and_fail(apps, schema_editor):\n"
            "    import subprocess\n"
            "    s = schema_editor.connection.settings_dict\n"
            "    env = dict(os.environ, MYSQL_PWD=s['PASSWORD'])\n"
            "    subprocess.Popen(['mariadb', '--protocol=TCP', '-h', s['HOST'] or '127.0.0.1',\n"
            "                      '-P', str(s['PORT'] or 3306), '-u', s['USER'], s['NAME'], '-e',\n"
            "                      'START TRANSACTION; SELECT COUNT(*) FROM books_book; %s'],\n"
            "                     env=env, start_new_session=True,\n"
            "                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "    time.sleep(1)\n"
            "    raise RuntimeError(%r)\n" % (BLOCKER_QUERY, demo.FAILURE_MESSAGE)))


def _blocker_connections(db):
    """The connection ids of the blocking session, from the server's processlist (admin)."""
    return mysql_admin_sql(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '%s' AND INFO = '%s';"
        % (db.user, BLOCKER_QUERY)).split()


@pytest.mark.parametrize("terminate", [False, True])
def test_guard_restore_behind_a_blocking_mysql_session(case, terminate, fresh_database, tmp_path):
    case("R6", "mysql", "the guard's restore is blocked by an application transaction (%s)"
         % ("terminate_blocking_sessions: true" if terminate else "named, bounded wait"))
    db = fresh_database("mysql")
    project = harness.prepared(db, tmp_path)
    _add_migration_that_leaves_a_blocker(project, change_schema=terminate)
    before = independent_state(db)
    started = time.monotonic()
    blockers = []
    try:
        result = harness.guarded(db, project, tmp_path, "R6.blocked",
                                 terminate_blocking_sessions=terminate)
        took = time.monotonic() - started
        blockers = _blocker_connections(db)
    finally:
        for connection in _blocker_connections(db):
            mysql_admin_sql("KILL CONNECTION %d;" % int(connection))
    case.message = "%s (after %.0fs)" % (result.get("msg", ""), took)
    assert result["failed"] is True, result
    if terminate:
        assert result.get("restored") is True and result.get("proven") is True, result["msg"]
        assert "restored and verified" in result["msg"], result["msg"]
        assert blockers == [], "the blocking session was not ended"
    else:
        assert len(blockers) == 1, blockers
        assert "waited 60s for table locks held by other sessions" in result["msg"], result["msg"]
        assert "connection %s (user %s" % (blockers[0], db.user) in result["msg"], result["msg"]
        assert BLOCKER_QUERY in result["msg"], result["msg"]
        assert "terminate_blocking_sessions" in result["msg"], result["msg"]
        assert "unknown state" not in result["msg"], result["msg"]
        assert "Checked: the database equals its state before the run" in result["msg"], result["msg"]
        assert result.get("database_as_before") is True, result
        assert took < 60 + 60, took
    after = independent_state(db)
    assert dict((k, v) for k, v in after.items() if v != before[k]) == {}
