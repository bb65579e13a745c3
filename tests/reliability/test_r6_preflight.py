"""R6 - operator faults: objects the application's user does not own, read-only targets, hangs
and the messages of tools that die.

Every case ends with the database exactly as before, checked independently of the collection's
own snapshot code: the catalogs (pg_catalog / information_schema), row counts and
django_migrations, read with the admin clients of tests/integration/databases.py.
"""
import dataclasses
import json
import os
import secrets
import shutil
import socket
import threading
import time

import pytest

import demo
import harness
from databases import mysql_admin_sql, pg_admin_sql

SERVER_ENGINES = ("postgresql", "mysql")
ENGINES_ALL = ("sqlite", "postgresql", "mysql")

# The restore after the failure waits this long behind the blocker (the module's default is 60 s).
RESTORE_LOCK_WAIT = 10


# -- the database's state, read independently ---------------------------------------------------

_PG_STATE = """
SELECT json_build_object(
  'relations', (SELECT coalesce(json_agg(format('%s %s', c.relkind, c.relname) ), '[]')
                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm', 'S')),
  'columns', (SELECT coalesce(json_agg(format('%s.%s %s %s', table_name, column_name, data_type,
                                              is_nullable) ), '[]')
                FROM information_schema.columns WHERE table_schema = 'public'),
  'extensions', (SELECT json_agg(format('%s %s', extname, pg_get_userbyid(extowner)) )
                   FROM pg_extension),
  'rows', (SELECT json_object_agg(table_name, (xpath('/row/c/text()', query_to_xml(format(
                    'SELECT count(*) AS c FROM public.%I', table_name), false, true, '')))[1]::text)
             FROM information_schema.tables
            WHERE table_schema = 'public' AND table_type = 'BASE TABLE'),
  'migrations', (SELECT json_agg(app || '.' || name ORDER BY app, name) FROM django_migrations));
"""


def independent_state(db):
    """Tables, views, columns, extensions, row counts and django_migrations, from the catalogs."""
    if db.engine == "postgresql":
        state = json.loads(pg_admin_sql(_PG_STATE, database=db.name))
        return dict((key, sorted(value) if isinstance(value, list) else value)
                    for key, value in state.items())
    name = db.name.replace("'", "''")
    objects = mysql_admin_sql(
        "SELECT CONCAT(TABLE_TYPE, ':', TABLE_NAME) FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = '%s' ORDER BY 1;" % name).splitlines()
    columns = mysql_admin_sql(
        "SELECT CONCAT(TABLE_NAME, '.', COLUMN_NAME, ' ', COLUMN_TYPE, ' ', IS_NULLABLE) "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '%s' ORDER BY 1;" % name
    ).splitlines()
    tables = [line.split(":", 1)[1] for line in objects if line.startswith("BASE TABLE:")]
    rows = {}
    for table in tables:
        rows[table] = mysql_admin_sql("SELECT COUNT(*) FROM `%s`;" % table,
                                      database=db.name).strip()
    definers = mysql_admin_sql(
        "SELECT CONCAT(TABLE_NAME, ' ', DEFINER) FROM information_schema.VIEWS "
        "WHERE TABLE_SCHEMA = '%s' ORDER BY 1;" % name).splitlines()
    migrations = mysql_admin_sql("SELECT CONCAT(app, '.', name) FROM django_migrations "
                                 "ORDER BY app, name;", database=db.name).splitlines()
    return {"relations": objects, "columns": columns, "rows": rows, "views": definers,
            "migrations": migrations}


def assert_refused_untouched(case, result, before, db, backups, *words):
    """Refused in preflight: failed, nothing applied, no backup and no marker written, the
    database as before (catalogs, rows, django_migrations), the message naming the cause."""
    case.message = result.get("msg", "")
    assert result["failed"] is True, result
    assert result.get("database_changed") is False, result.get("msg")
    assert "refused" in result["msg"] and "The database was not changed" in result["msg"]
    assert "unknown state" not in result["msg"], result["msg"]
    assert not result.get("applied"), result.get("applied")
    for word in words:
        assert word in result["msg"], (word, result["msg"])
    left = os.listdir(str(backups)) if os.path.isdir(str(backups)) else []
    assert left == [], left  # neither a backup nor a run marker
    assert independent_state(db) == before


# -- foreign-owned objects ----------------------------------------------------------------------

def test_postgresql_extension_owned_by_the_superuser(case, fresh_database, tmp_path):
    case("R6", "postgresql", "foreign-owned objects: an extension created by the superuser")
    db = fresh_database("postgresql")
    project = harness.prepared(db, tmp_path)
    pg_admin_sql("CREATE EXTENSION citext;", database=db.name)
    demo.add_failing_migration(project, "runpython")
    before = independent_state(db)
    assert "citext postgres" in before["extensions"]

    result = harness.guarded(db, project, tmp_path, "R6.foreign")

    assert_refused_untouched(case, result, before, db, tmp_path / "backups",
                             "extension citext (owner postgres)", "privileged restore connection")


def test_mysql_view_with_definer_root(case, fresh_database, tmp_path):
    case("R6", "mysql", "foreign-owned objects: a view with DEFINER=root")
    db = fresh_database("mysql")
    project = harness.prepared(db, tmp_path)
    mysql_admin_sql("CREATE DEFINER=`root`@`localhost` VIEW book_titles AS "
                    "SELECT title FROM books_book;", database=db.name)
    demo.add_failing_migration(project, "runpython")
    before = independent_state(db)
    assert before["views"] == ["book_titles root@localhost"]

    result = harness.guarded(db, project, tmp_path, "R6.foreign")

    # Before the preflight this migrate failed and the restore could not re-create the view.
    assert_refused_untouched(case, result, before, db, tmp_path / "backups",
                             "view book_titles (DEFINER=root@localhost)", "SET USER")


def test_verify_refuses_a_backup_that_cannot_be_restored(case, fresh_database, tmp_path):
    case("R6", "postgresql", "foreign-owned objects: db_backup state=verify says the restore "
         "would fail")
    db = fresh_database("postgresql")
    project = harness.prepared(db, tmp_path)
    backups = str(tmp_path / "backups")
    dumped = harness.watched_run(db, "db_backup", demo.module_args(
        project, db, state="dump", backup_dir=backups), "R6.verify")
    assert dumped.get("failed") is not True, dumped.get("msg")
    pg_admin_sql("CREATE EXTENSION citext;", database=db.name)

    result = harness.watched_run(db, "db_backup", demo.module_args(
        project, db, state="verify", backup_dir=backups), "R6.verify")

    case.message = result.get("msg", "")
    assert result["failed"] is True, result
    assert "extension citext (owner postgres)" in result["msg"], result["msg"]


# -- read-only targets --------------------------------------------------------------------------

def _select_only_account(db):
    """Another account on ``db`` that may only read; returns (LiveDatabase, cleanup)."""
    user = "ro_" + secrets.token_hex(5)
    password = secrets.token_urlsafe(16)
    if db.engine == "postgresql":
        pg_admin_sql("CREATE ROLE %s LOGIN PASSWORD '%s';" % (user, password))
        pg_admin_sql("GRANT USAGE ON SCHEMA public TO {u}; GRANT SELECT ON ALL TABLES IN SCHEMA "
                     "public TO {u};".format(u=user), database=db.name)

        def cleanup():
            pg_admin_sql("DROP OWNED BY %s;" % user, database=db.name)
            pg_admin_sql("DROP ROLE IF EXISTS %s;" % user)
    else:
        mysql_admin_sql("CREATE USER '{u}'@'%' IDENTIFIED BY '{p}'; CREATE USER '{u}'@'localhost' "
                        "IDENTIFIED BY '{p}'; GRANT SELECT ON `{d}`.* TO '{u}'@'%'; GRANT SELECT ON "
                        "`{d}`.* TO '{u}'@'localhost';".format(u=user, p=password, d=db.name))

        def cleanup():
            mysql_admin_sql("DROP USER IF EXISTS '{u}'@'%'; DROP USER IF EXISTS '{u}'@'localhost';"
                            .format(u=user))
    return dataclasses.replace(db, user=user, password=password), cleanup


@pytest.mark.parametrize("engine", SERVER_ENGINES)
def test_select_only_user(case, engine, fresh_database, tmp_path):
    case("R6", engine, "read-only target: a user with only SELECT")
    db = fresh_database(engine)
    project = harness.prepared(db, tmp_path)
    demo.add_failing_migration(project, "runpython")
    reader, cleanup = _select_only_account(db)
    try:
        before = independent_state(db)
        result = harness.guarded(reader, project, tmp_path, "R6.read-only")
        words = ("cannot create tables in schema public",) if engine == "postgresql" else \
            ("lacks the privilege(s) INSERT, UPDATE, DELETE, CREATE, DROP, ALTER",)
        assert_refused_untouched(case, result, before, db, tmp_path / "backups", *words)
    finally:
        cleanup()


def test_postgresql_read_only_database(case, fresh_database, tmp_path):
    case("R6", "postgresql", "read-only target: default_transaction_read_only = on")
    db = fresh_database("postgresql")
    project = harness.prepared(db, tmp_path)
    demo.add_failing_migration(project, "runpython")
    pg_admin_sql('ALTER DATABASE "%s" SET default_transaction_read_only = on;' % db.name)
    before = independent_state(db)

    result = harness.guarded(db, project, tmp_path, "R6.read-only")

    assert_refused_untouched(case, result, before, db, tmp_path / "backups",
                             "read-only (default_transaction_read_only = on)")


# -- hangs --------------------------------------------------------------------------------------

class SilentServer:
    """A TCP port that accepts connections and never says a word (a firewall's black hole, a
    hung server): a client without a timeout waits forever."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(50)
        self.port = self.socket.getsockname()[1]
        self.accepted = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self):
        while True:
            try:
                connection, _address = self.socket.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self.socket.close()
        for connection in self.accepted:
            connection.close()
        return False


# The default connect timeout (connection.CONNECT_TIMEOUT) and room for booting the project.
CONNECT_BOUND = 10 + 40


@pytest.mark.parametrize("engine", SERVER_ENGINES)
def test_guarded_migrate_against_a_silent_port(case, engine, fresh_database, tmp_path):
    case("R6", engine, "hangs: the database port accepts TCP and never answers (guarded migrate)")
    db = fresh_database(engine)
    project = harness.prepared(db, tmp_path)
    demo.add_failing_migration(project, "runpython")
    before = independent_state(db)
    with SilentServer() as silent:
        started = time.monotonic()
        result = harness.guarded(dataclasses.replace(db, port=silent.port), project, tmp_path,
                                 "R6.hang")
        took = time.monotonic() - started
        assert silent.accepted, "the run never reached the silent port"
    case.message = "%s (after %.0fs)" % (result.get("msg", ""), took)
    assert result["failed"] is True, result
    assert took < CONNECT_BOUND, took
    assert "127.0.0.1:%d" % silent.port in result["msg"], result["msg"]
    assert "cannot connect" in result["msg"], result["msg"]
    assert independent_state(db) == before


@pytest.mark.parametrize("engine", SERVER_ENGINES)
def test_backup_against_a_silent_port(case, engine, fresh_database, tmp_path):
    case("R6", engine, "hangs: the database port accepts TCP and never answers (db_backup)")
    db = fresh_database(engine)
    with SilentServer() as silent:
        silent_db = dataclasses.replace(db, port=silent.port)
        started = time.monotonic()
        result = harness.watched_run(silent_db, "db_backup", dict(
            silent_db.connection(), state="dump", backup_dir=str(tmp_path / "backups")),
            "R6.hang")
        took = time.monotonic() - started
        assert silent.accepted, "the run never reached the silent port"
    case.message = "%s (after %.0fs)" % (result.get("msg", ""), took)
    assert result["failed"] is True, result
    assert took < CONNECT_BOUND, took
    assert "127.0.0.1:%d" % silent.port in result["msg"], result["msg"]
    assert "cannot connect" in result["msg"], result["msg"]


@pytest.mark.parametrize("engine", ENGINES_ALL)
def test_settings_module_that_blocks(case, engine, fresh_database, tmp_path):
    case("R6", engine, "hangs: the settings module blocks while the project boots")
    db = fresh_database(engine)
    project = harness.prepared(db, tmp_path)
    demo.add_failing_migration(project, "runpython")
    with open(os.path.join(str(project), "demo", "blocking_settings.py"), "w") as handle:
        handle.write("from demo.settings import *  # noqa\nimport time\ntime.sleep(3600)\n")
    before = independent_state(db) if engine != "sqlite" else harness.snapshot(db)
    started = time.monotonic()

    result = harness.guarded(db, project, tmp_path, "R6.hang", settings="demo.blocking_settings",
                             boot_timeout=5)

    took = time.monotonic() - started
    case.message = "%s (after %.0fs)" % (result.get("msg", ""), took)
    assert result["failed"] is True, result
    assert took < 5 + 40, took
    assert "did not finish booting within 5s (settings module demo.blocking_settings)" in \
        result["msg"], result["msg"]
    assert (independent_state(db) if engine != "sqlite" else harness.snapshot(db)) == before
    assert not os.path.exists(str(tmp_path / "backups"))


# -- messages tell the truth --------------------------------------------------------------------

def _fault_wrapper(directory, name, body):
    """``name`` first on PATH: a shell script around the real tool (``$REAL``)."""
    os.makedirs(str(directory), exist_ok=True)
    path = os.path.join(str(directory), name)
    with open(path, "w") as handle:
        handle.write('#!/bin/sh\nREAL="%s"\n%s' % (shutil.which(name), body))
    os.chmod(path, 0o755)
    return {"PATH": "%s:%s" % (directory, os.environ["PATH"])}


# The restore's psql (it is the one that opens a transaction) gets the first 3 KB of the script,
# then is killed: the notices of emptying the database are what it printed last.
KILLED_RESTORE_PSQL = """case " $* " in
  *" BEGIN "*) head -c 3072 | "$REAL" "$@"; kill -KILL $$ ;;
esac
exec "$REAL" "$@"
"""
# A decompressor killed after 2 KB, unless its reader is the backup check's tail (a restore's
# reader is the database client or the module).
KILLED_RESTORE_ZSTD = """case " $* " in
  *" -d "*)
    sleep 0.3
    out=$(readlink /proc/$$/fd/1)
    for p in /proc/[0-9]*; do
      if [ "$(readlink $p/fd/0 2>/dev/null)" = "$out" ] && [ "$(cat $p/comm 2>/dev/null)" = tail ]; then
        exec "$REAL" "$@"
      fi
    done
    "$REAL" "$@" | head -c 2048; kill -KILL $$ ;;
esac
exec "$REAL" "$@"
"""


def _backup_then_change(db, project, tmp_path):
    """A zstd backup, then one more row: (backup path, state with the row, state of the backup)."""
    backups = str(tmp_path / "backups")
    dumped = harness.watched_run(db, "db_backup", demo.module_args(
        project, db, state="dump", backup_dir=backups, compression="zstd"), "R6.messages")
    assert dumped.get("failed") is not True, dumped.get("msg")
    at_backup = independent_state(db)
    demo.manage(project, db, "shell", "-c", "from authors.models import Author; "
                "Author.objects.create(name='after the backup')")
    changed = independent_state(db)
    assert changed != at_backup
    return dumped["backup"]["path"], changed, at_backup


@pytest.mark.parametrize("engine,tool", [("postgresql", "psql"), ("mysql", "zstd"),
                                         ("postgresql", "zstd")])
def test_killed_restore_tool_is_named(case, engine, tool, fresh_database, tmp_path):
    case("R6", engine, "messages: the restore's %s is killed (SIGKILL)" % tool)
    db = fresh_database(engine)
    project = harness.prepared(db, tmp_path)
    backup, changed, at_backup = _backup_then_change(db, project, tmp_path)
    env = _fault_wrapper(tmp_path / "fault-bin", tool,
                         KILLED_RESTORE_PSQL if tool == "psql" else KILLED_RESTORE_ZSTD)

    result = harness.watched_run(db, "db_backup", demo.module_args(
        project, db, state="restore", src=backup, backup_dir=str(tmp_path / "backups")),
        "R6.messages", env=env)

    case.message = result.get("msg", "")
    assert result["failed"] is True, result
    assert "%s was killed by signal 9 (SIGKILL)" % tool in result["msg"], result["msg"]
    for wrong in ("NOTICE", "drop cascades"):
        assert wrong not in result["msg"], result["msg"]
    # The stage that died first is the cause; what its reader then said comes after it.
    assert result["msg"].find("syntax") < 0 or result["msg"].find("syntax") > \
        result["msg"].find("%s was killed" % tool), result["msg"]
    # All or nothing: as before the restore, or exactly the backup's state.
    assert independent_state(db) in (changed, at_backup)


# -- the guard's restore behind another session's locks -----------------------------------------

BLOCKER_APPLICATION = "the-application"


def _add_migration_that_leaves_a_blocker(project):
    """A books migration that starts another session (the application, as it were) which takes
    a lock on books_book as soon as the migration's transaction is gone, and keeps it; then
    fails. The guard's restore then has to drop books_book behind that session."""
    demo._write_migration(
        project, "%s_blocker" % demo.next_number(project), demo.leaf_migration(project),
        "migrations.RunPython(block_and_fail, migrations.RunPython.noop),\n",
        preamble=(
            "def block_and_fail(apps, schema_editor):\n"
            "    import subprocess\n"
            "    s = schema_editor.connection.settings_dict\n"
            "    env = dict(os.environ, PGPASSWORD=s['PASSWORD'], PGAPPNAME=%r)\n"
            "    subprocess.Popen(['psql', '-X', '-q', '-h', s['HOST'], '-p', str(s['PORT']),\n"
            "                      '-U', s['USER'], '-d', s['NAME'], '-c',\n"
            "                      'BEGIN; LOCK TABLE books_book IN ACCESS SHARE MODE; '\n"
            "                      'SELECT pg_sleep(180)'], env=env, start_new_session=True,\n"
            "                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "    time.sleep(0.5)\n"
            "    raise RuntimeError(%r)\n" % (BLOCKER_APPLICATION, demo.FAILURE_MESSAGE)))


@pytest.mark.parametrize("terminate", [False, True])
def test_guard_restore_behind_a_blocking_session(case, terminate, fresh_database, tmp_path):
    case("R6", "postgresql", "the guard's restore is blocked by an application session (%s)"
         % ("terminate_blocking_sessions: true" if terminate else "named, bounded wait"))
    db = fresh_database("postgresql")
    project = harness.prepared(db, tmp_path)
    _add_migration_that_leaves_a_blocker(project)
    before = independent_state(db)
    started = time.monotonic()
    try:
        result = harness.guarded(db, project, tmp_path, "R6.blocked",
                                 terminate_blocking_sessions=terminate, restore_lock_wait=RESTORE_LOCK_WAIT)
    finally:
        # This test's blocker only (its database): the other case may run beside it.
        left = pg_admin_sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = '%s' AND datname = '%s';"
                            % (BLOCKER_APPLICATION, db.name)).strip()
    took = time.monotonic() - started
    case.message = "%s (after %.0fs)" % (result.get("msg", ""), took)
    assert result["failed"] is True, result
    if terminate:
        assert result.get("restored") is True and result.get("proven") is True, result["msg"]
        assert "restored and verified" in result["msg"], result["msg"]
        assert left == "0", "the blocking session was not ended"
    else:
        assert "application %s" % BLOCKER_APPLICATION in result["msg"], result["msg"]
        assert "LOCK TABLE books_book" in result["msg"], result["msg"]
        assert "terminate_blocking_sessions" in result["msg"], result["msg"]
        # What the database is after the failed restore was checked, not assumed.
        assert "unknown state" not in result["msg"], result["msg"]
        assert "Checked: the database equals its state before the run" in result["msg"]
        assert result.get("database_as_before") is True, result
        assert took < RESTORE_LOCK_WAIT + 60, took
    # PostgreSQL rolled the failed migration back, and the restore is one transaction.
    after = independent_state(db)
    assert dict((k, v) for k, v in after.items() if v != before[k]) == {}
