"""R6 - operator faults on MariaDB: the guard's restore after a failed migrate is blocked by an
application session that keeps a transaction open on books_book.

By default the restore waits a bounded time (restore_lock_wait, 10 s here), gives up and names the
session (connection id, user, its query); with terminate_blocking_sessions the session is
ended first and the backup restored; a session of another user that the application's user
may not end is named, and nothing is restored over it. Each case ends with the database
exactly as before, checked with the admin client (catalog, columns, row counts,
django_migrations), not with the collection's own snapshot code.
"""
import time

import pytest

import demo
import harness
from databases import MY_ADMIN, MY_ADMIN_PASSWORD, mysql_admin_sql
from test_r6_preflight import independent_state

BLOCKER_QUERY = "SELECT SLEEP(180)"

# The restore after the failure waits this long behind the blocker (the module's default is 60 s).
RESTORE_LOCK_WAIT = 10


def _add_migration_that_leaves_a_blocker(project, change_schema, as_admin):
    """A books migration (optionally adding a column first: MariaDB keeps DDL, so the restore
    has to undo it) that starts another session - the application, as it were, or with
    ``as_admin`` the server's administrator - which opens a transaction, reads books_book (and
    so holds its metadata lock until it ends) and stays; then fails."""
    operations = ""
    if change_schema:
        operations += ('migrations.RunSQL("ALTER TABLE books_book ADD COLUMN blocked_extra integer NULL", '
                       '"ALTER TABLE books_book DROP COLUMN blocked_extra"),\n')
    operations += "migrations.RunPython(block_and_fail, migrations.RunPython.noop),\n"
    login = "(%r, %r)" % (MY_ADMIN, MY_ADMIN_PASSWORD) if as_admin else "(s['USER'], s['PASSWORD'])"
    demo._write_migration(
        project, "%s_blocker" % demo.next_number(project), demo.leaf_migration(project), operations,
        preamble=(
            "def block_and_fail(apps, schema_editor):\n"
            "    import subprocess\n"
            "    s = schema_editor.connection.settings_dict\n"
            "    user, password = %s\n"
            "    env = dict(os.environ, MYSQL_PWD=password)\n"
            "    subprocess.Popen(['mariadb', '--protocol=TCP', '-h', s['HOST'] or '127.0.0.1',\n"
            "                      '-P', str(s['PORT'] or 3306), '-u', user, s['NAME'], '-e',\n"
            "                      'START TRANSACTION; SELECT COUNT(*) FROM books_book; %s'],\n"
            "                     env=env, start_new_session=True,\n"
            "                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "    time.sleep(1)\n"
            "    raise RuntimeError(%r)\n" % (login, BLOCKER_QUERY, demo.FAILURE_MESSAGE)))


def _blocker_connections(user, database):
    """The connection ids of the blocking session on ``database``, from the server's
    processlist (admin) - not the blocker of a case running beside this one."""
    return mysql_admin_sql(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '%s' AND INFO = '%s' AND DB = '%s';"
        % (user, BLOCKER_QUERY, database)).split()


# (terminate_blocking_sessions, the user may see all sessions (PROCESS), the blocker is the admin)
SCENARIOS = {
    "named, bounded wait": (False, False, False),
    "named, bounded wait, PROCESS privilege": (False, True, False),
    "terminate_blocking_sessions: true": (True, False, False),
    "terminate_blocking_sessions: true, another user's session": (True, True, True),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_guard_restore_behind_a_blocking_mysql_session(case, scenario, fresh_database, tmp_path):
    case("R6", "mysql", "the guard's restore is blocked by an application transaction (%s)" % scenario)
    terminate, process, as_admin = SCENARIOS[scenario]
    db = fresh_database("mysql")
    if process:
        for host in ("%", "localhost"):
            mysql_admin_sql("GRANT PROCESS ON *.* TO '%s'@'%s';" % (db.user, host))
    project = harness.prepared(db, tmp_path)
    # The column a schema change adds must go again; an admin's blocker is never ended, so the
    # migration changes no schema there (the database stays as before without a restore).
    _add_migration_that_leaves_a_blocker(project, change_schema=terminate and not as_admin,
                                         as_admin=as_admin)
    blocker_user = MY_ADMIN if as_admin else db.user
    before = independent_state(db)
    started = time.monotonic()
    blockers = []
    try:
        result = harness.guarded(db, project, tmp_path, "R6.blocked",
                                 terminate_blocking_sessions=terminate, restore_lock_wait=RESTORE_LOCK_WAIT)
        took = time.monotonic() - started
        blockers = _blocker_connections(blocker_user, db.name)
    finally:
        for connection in _blocker_connections(blocker_user, db.name):
            mysql_admin_sql("KILL CONNECTION %d;" % int(connection))
    case.message = "%s (after %.0fs)" % (result.get("msg", ""), took)
    assert result["failed"] is True, result
    if terminate and not as_admin:
        assert result.get("restored") is True and result.get("proven") is True, result["msg"]
        assert "restored and verified" in result["msg"], result["msg"]
        assert blockers == [], "the blocking session was not ended"
    elif terminate:
        assert len(blockers) == 1, "the other user's session was ended: %s" % blockers
        assert "could not end the sessions that would block the restore" in result["msg"], result["msg"]
        assert "connection %s (user %s" % (blockers[0], MY_ADMIN) in result["msg"], result["msg"]
        assert "CONNECTION ADMIN" in result["msg"], result["msg"]
        assert "Checked: the database equals its state before the run" in result["msg"], result["msg"]
        assert result.get("database_as_before") is True, result
    else:
        assert len(blockers) == 1, blockers
        assert "waited %ds for table locks held by other sessions" % RESTORE_LOCK_WAIT in result["msg"], result["msg"]
        assert "connection %s (user %s" % (blockers[0], db.user) in result["msg"], result["msg"]
        assert BLOCKER_QUERY in result["msg"], result["msg"]
        if process:
            assert "connection %s (user %s, client 127.0.0.1:" % (blockers[0], db.user) in result["msg"]
            assert "transaction since" in result["msg"], result["msg"]
            assert "PROCESS privilege" not in result["msg"], result["msg"]
        else:
            assert "seeing other users' open transactions needs the PROCESS privilege" in result["msg"]
        assert "terminate_blocking_sessions" in result["msg"], result["msg"]
        assert "unknown state" not in result["msg"], result["msg"]
        assert "Checked: the database equals its state before the run" in result["msg"], result["msg"]
        assert result.get("database_as_before") is True, result
        assert took < RESTORE_LOCK_WAIT + 60, took
    after = independent_state(db)
    assert dict((k, v) for k, v in after.items() if v != before[k]) == {}
