"""The sessions that hold up a restore: their SQL (MySQL), the errors the server answers, and one
sentence shape naming them on every engine (no server needed; the real sessions are in
tests/reliability/test_r6_mysql_blockers.py and test_r6_preflight.py)."""
from ansible_collections.dbsafe.django.plugins.module_utils.engines.blockers import (
    blocked_restore_message,
    describe_blockers,
)
from ansible_collections.dbsafe.django.plugins.module_utils.engines.mysql_sessions import (
    already_gone,
    connected_sql,
    describe_seen,
    kill_refused,
    kill_refused_message,
    kill_sql,
    lock_wait_timed_out,
    process_privilege_missing,
    sessions_from_output,
    transactions_sql,
)


def test_a_postgresql_blocker_keeps_its_wording():
    text = describe_blockers([{"pid": 4242, "user": "app", "application": "", "state": "idle in transaction",
                               "query_start": "2025-01-01T10:00:00Z", "query": "LOCK TABLE books_book"}])
    assert text == ("pid 4242 (user app, application unnamed, idle in transaction since "
                    "2025-01-01T10:00:00Z: LOCK TABLE books_book)")


def test_a_mysql_blocker_names_connection_client_and_database():
    text = describe_blockers([
        {"connection": 17, "user": "app", "client": "10.0.0.5:5123", "database": "shop", "state": "transaction",
         "query_start": "2025-01-01T10:00:00Z", "query": "SELECT SLEEP(180)"},
        {"connection": 18, "user": "app", "client": None, "database": None, "state": None,
         "query_start": None, "query": None}])
    assert text == ("connection 17 (user app, client 10.0.0.5:5123, database shop, transaction since "
                    "2025-01-01T10:00:00Z: SELECT SLEEP(180)); connection 18 (user app, query since None: )")


def test_no_blockers_left_is_said():
    assert describe_blockers([]) == "sessions that ended meanwhile"


def test_the_message_says_what_to_do():
    message = blocked_restore_message("mysql database 'shop'", 60, "connection 17 (...)")
    assert message.startswith("the restore of mysql database 'shop' waited 60s for table locks held by other "
                              "sessions and gave up: connection 17 (...). Stop the application")
    assert "terminate_blocking_sessions: true" in message


def test_the_session_queries_leave_out_our_own_sessions():
    assert "p.ID <> CONNECTION_ID()" in transactions_sql()
    assert "NOT IN" not in transactions_sql()
    assert "p.ID NOT IN (5, 12)" in transactions_sql({12, 5})
    assert "information_schema.INNODB_TRX" in transactions_sql()
    fallback = connected_sql(["7"])
    assert "p.ID NOT IN (7)" in fallback and "p.DB = DATABASE()" in fallback
    assert "INNODB_TRX" not in fallback


def test_session_lines_are_json_objects():
    out = '{"connection": 17, "user": "app", "query": "SELECT 1"}\n\n{"connection": 18}\n'
    assert sessions_from_output(out) == [{"connection": 17, "user": "app", "query": "SELECT 1"},
                                         {"connection": 18}]
    assert sessions_from_output("") == []


def test_kill_takes_only_a_number():
    assert kill_sql("17") == "KILL CONNECTION 17;\n"
    try:
        kill_sql("17; DROP DATABASE shop")
    except ValueError:
        pass
    else:
        raise AssertionError("a connection id that is not a number was accepted")


def test_server_answers_are_told_apart():
    assert lock_wait_timed_out("ERROR 1205 (HY000) at line 3: Lock wait timeout exceeded; try restarting transaction")
    assert not lock_wait_timed_out("ERROR 1146 (42S02): Table 'shop.x' doesn't exist")
    assert kill_refused("ERROR 1095 (HY000): You are not owner of thread 17")
    assert not kill_refused("ERROR 1094 (HY000): Unknown thread id: 17")
    assert already_gone("ERROR 1094 (HY000): Unknown thread id: 17")
    assert process_privilege_missing("ERROR 1227 (42000): Access denied; you need (at least one of) the PROCESS "
                                     "privilege(s) for this operation")
    assert not process_privilege_missing("ERROR 1205 (HY000): Lock wait timeout exceeded")


def test_a_refused_kill_says_which_privilege_is_needed():
    message = kill_refused_message("mysql database 'shop'", "app", "connection 17 (user other)")
    assert "connection 17 (user other)" in message
    assert "CONNECTION ADMIN" in message and "SUPER" in message
    assert "the database was not changed" in message


def test_without_the_process_privilege_the_message_says_what_it_could_not_see():
    assert describe_seen("connection 17 (...)", 1, False) == "connection 17 (...)"
    assert describe_seen("connection 17 (...)", 1, True) == (
        "connection 17 (...) (only the user's own sessions are visible: seeing other users' open "
        "transactions needs the PROCESS privilege)")
    alone = describe_seen("sessions that ended meanwhile", 0, True)
    assert alone.startswith("no other session of the user is connected to the database")
    assert "ended meanwhile" not in alone and "PROCESS privilege" in alone
