"""R6 - operator faults around restores: a restore killed half-way, a restore started while a
guarded migrate runs, a media filesystem too small, and the MySQL swap keeping what cannot
move between databases (views, triggers, routines).

Every case ends with the database exactly as before the restore or exactly as the backup,
read independently of the collection's own snapshot code: information_schema / pg_catalog /
sqlite_master, row counts, a content checksum per table and the django_migrations rows, through
the servers' admin clients (or Python's sqlite3).
"""
import hashlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import threading
import time

import pytest

import demo
import harness
from databases import LiveDatabase, mysql_admin_sql, pg_admin_sql
from runner_double import engine_of, execute, make_runner

from ansible_collections.dbsafe.django.plugins.module_utils.backups import BackupStore

ENGINES = harness.ENGINES
BIG_ROWS = 200000
SMALL_TABLES = 10


# -- the independent view of a database ---------------------------------------------------------

def state_of(db):
    """Tables (and views) with their columns, row counts, a content checksum per table,
    triggers and routines, and the django_migrations rows - nothing of our own code."""
    return {"sqlite": _sqlite_state, "postgresql": _pg_state, "mysql": _mysql_state}[db.engine](db)


def _lines(out):
    return [line for line in out.splitlines() if line.strip()]


def _mysql_state(db):
    name = db.name
    tables = _lines(mysql_admin_sql(
        "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = '%s' "
        "ORDER BY TABLE_NAME;" % name))
    state = {
        "tables": tables,
        "columns": _lines(mysql_admin_sql(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM "
            "information_schema.COLUMNS WHERE TABLE_SCHEMA = '%s' ORDER BY TABLE_NAME, "
            "ORDINAL_POSITION;" % name)),
        "triggers": _lines(mysql_admin_sql(
            "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_STATEMENT FROM "
            "information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '%s' ORDER BY 1;" % name)),
        "routines": _lines(mysql_admin_sql(
            "SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE "
            "ROUTINE_SCHEMA = '%s' ORDER BY 1, 2;" % name)),
        "rows": {}, "checksums": {}, "migrations": None,
    }
    base = [line.split("\t")[0] for line in tables if line.endswith("BASE TABLE")]
    for table in base:
        state["rows"][table] = int(mysql_admin_sql("SELECT COUNT(*) FROM `%s`.`%s`;"
                                                   % (name, table)).strip())
    if base:
        for line in _lines(mysql_admin_sql("CHECKSUM TABLE %s EXTENDED;" % ", ".join(
                "`%s`.`%s`" % (name, table) for table in base))):
            table, checksum = line.split("\t")
            state["checksums"][table] = checksum
    if "django_migrations" in base:
        state["migrations"] = _lines(mysql_admin_sql(
            "SELECT app, name FROM `%s`.django_migrations ORDER BY app, name;" % name))
    return state


def _pg_state(db):
    def sql(text):
        return pg_admin_sql(text, database=db.name)
    tables = _lines(sql(
        "SELECT c.relname || ' ' || c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = "
        "c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm', 'p') "
        "ORDER BY 1;"))
    state = {
        "tables": tables,
        "columns": _lines(sql(
            "SELECT table_name || ' ' || column_name || ' ' || data_type || ' ' || is_nullable "
            "FROM information_schema.columns WHERE table_schema = 'public' "
            "ORDER BY table_name, ordinal_position;")),
        "triggers": _lines(sql(
            "SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN "
            "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND NOT "
            "t.tgisinternal ORDER BY 1;")),
        "routines": _lines(sql(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public' ORDER BY 1;")),
        "rows": {}, "checksums": {}, "migrations": None,
    }
    base = [line.rsplit(" ", 1)[0] for line in tables if line.endswith(" r")]
    for table in base:
        count, checksum = sql(
            "SELECT count(*) || ' ' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), "
            "'')) FROM \"%s\" t;" % table).split()
        state["rows"][table], state["checksums"][table] = int(count), checksum
    if "django_migrations" in base:
        state["migrations"] = _lines(sql(
            "SELECT app || '.' || name FROM django_migrations ORDER BY app, name;"))
    return state


def _sqlite_state(db):
    conn = sqlite3.connect("file:%s?mode=ro" % db.name, uri=True)
    try:
        objects = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name "
                               "NOT LIKE 'sqlite_%' ORDER BY type, name").fetchall()
        state = {"objects": objects, "rows": {}, "checksums": {}, "migrations": None}
        for kind, name, _table, _sql in objects:
            if kind != "table":
                continue
            rows = sorted(repr(row) for row in conn.execute('SELECT * FROM "%s"' % name))
            state["rows"][name] = len(rows)
            state["checksums"][name] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
            if name == "django_migrations":
                state["migrations"] = sorted(conn.execute(
                    "SELECT app, name FROM django_migrations").fetchall())
        return state
    finally:
        conn.close()


def side_databases(db):
    """What a MySQL restore's scratch and old databases left on the server."""
    if db.engine != "mysql":
        return []
    return _lines(mysql_admin_sql(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE "
        "'%s\\_\\_dbsafe\\_%%';" % db.name))


# -- a database worth restoring -------------------------------------------------------------------

def fill(db, rows=BIG_ROWS):
    """SMALL_TABLES small tables, ``big`` with ``rows`` rows and django_migrations."""
    statements = []
    for number in range(SMALL_TABLES):
        statements.append("CREATE TABLE small_%02d (id integer PRIMARY KEY, note varchar(40));"
                          % number)
        statements.append("INSERT INTO small_%02d VALUES (1, 'one'), (2, 'two');" % number)
    statements.append("CREATE TABLE django_migrations (id integer PRIMARY KEY, app varchar(255) "
                      "NOT NULL, name varchar(255) NOT NULL, applied varchar(40));")
    statements.append("INSERT INTO django_migrations VALUES (1, 'books', '0001_initial', 'x'), "
                      "(2, 'books', '0002_more', 'x');")
    statements.append("CREATE TABLE big (id integer PRIMARY KEY, payload varchar(200));")
    if db.engine == "postgresql":
        statements.append("INSERT INTO big SELECT g, md5(g::text) || repeat('p', 60) "
                          "FROM generate_series(1, %d) g;" % rows)
    elif db.engine == "mysql":
        statements.append("SET SESSION max_recursive_iterations = 10000000; INSERT INTO big "
                          "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE "
                          "n < %d) SELECT n, CONCAT(MD5(n), REPEAT('p', 60)) FROM g;" % rows)
    else:
        statements.append("INSERT INTO big WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT "
                          "n + 1 FROM g WHERE n < %d) SELECT n, hex(randomblob(16)) || "
                          "printf('%%.60c', 'p') FROM g;" % rows)
    execute(db, "\n".join(statements))


def change_after_backup(db):
    """The data written after the backup: what a restore replaces."""
    execute(db, "\n".join([
        "INSERT INTO big (id, payload) VALUES (%d, 'written after the backup');" % (BIG_ROWS + 1),
        "DELETE FROM small_03;",
        "DROP TABLE small_04;",
        "CREATE TABLE made_after (id integer PRIMARY KEY);",
        "INSERT INTO django_migrations VALUES (3, 'books', '0003_after', 'x');",
    ]))


def backup_args(db, tmp_path, **extra):
    args = dict(db.connection(), backup_dir=str(tmp_path / "backups"))
    args.update(extra)
    return args


def dumped(db, tmp_path, test, **extra):
    result = harness.watched_run(db, "db_backup", backup_args(db, tmp_path, state="dump", **extra),
                                 test)
    assert not result.get("failed"), result.get("msg")
    return result["backup"]


# -- processes -------------------------------------------------------------------------------------

def processes_matching(*words):
    """{pid: argv} of the processes whose argv (or environment, for words with '=') contains
    every one of ``words``."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as handle:
                argv = handle.read().decode("utf-8", "replace")
            environ = ""
            if any("=" in word for word in words):
                with open("/proc/%s/environ" % entry, "rb") as handle:
                    environ = handle.read().decode("utf-8", "replace")
        except OSError:
            continue
        if all(word in (environ if "=" in word else argv) for word in words):
            found[int(entry)] = argv.replace("\0", " ")
    return found


def loader_words(db):
    """What the argv of the process that loads the dump contains."""
    if db.engine == "mysql":
        return ("mariadb", "%s__dbsafe_restore_" % db.name)
    return ("psql", "BEGIN", "PGDATABASE=%s\0" % db.name)


def own_processes_matching(*words):
    """processes_matching, among this test's own processes only (below this pytest process):
    what a test stops or kills is never a process of a test running beside it."""
    me = os.getpid()
    return dict((pid, argv) for pid, argv in processes_matching(*words).items()
                if harness.is_below(pid, me))


def stop(pid, seconds=5):
    """SIGSTOP ``pid`` and wait until it is stopped: True if it is, False if it had ended."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except OSError:
        return False
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = harness.state_of_process(pid)
        if state in (None, "Z", "X"):
            return False
        if state in ("T", "t"):
            return True
        time.sleep(0.002)
    return False


def resume(pid):
    try:
        os.kill(pid, signal.SIGCONT)
    except OSError:
        pass


def has_written(db):
    """The server's view: the restore's load has written into the database (PostgreSQL: a
    session on it has a transaction id, the load's emptying and COPY; MySQL: the scratch
    database the load fills has its first table)."""
    if db.engine == "mysql":
        out = mysql_admin_sql("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA "
                              "LIKE '%s\\_\\_dbsafe\\_restore\\_%%';" % db.name)
    else:
        out = pg_admin_sql("SELECT count(*) FROM pg_stat_activity WHERE datname = '%s' AND "
                           "backend_xid IS NOT NULL;" % db.name)
    return int(out.strip() or 0) > 0


def stop_the_loader_while_it_loads(db, timeout=240):
    """The client loading a restore of ``db``, stopped (SIGSTOP) half-way: frozen the moment
    it is seen, then let on in 20 ms steps until the server shows the load has written into
    the database. Returns its pid, stopped and alive - the caller kills it (or its module)
    then, so the kill lands while it loads, however fast or slow this machine is. Raises
    AssertionError (the loader let go) if it never appeared or ended first."""
    words = loader_words(db)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = own_processes_matching(*words)
        if not found:
            time.sleep(0.005)
            continue
        assert len(found) == 1, "more than one loading client: %s" % found
        [pid] = found
        if not stop(pid):
            raise AssertionError("the loading client (pid %d) ended before it could be stopped"
                                 % pid)
        while not has_written(db):
            if time.monotonic() > deadline:
                resume(pid)
                raise AssertionError("the loading client (pid %d) never wrote into %s"
                                     % (pid, db.name))
            resume(pid)
            time.sleep(0.02)
            if not stop(pid):
                raise AssertionError("the loading client (pid %d) ended before it was seen "
                                     "writing" % pid)
        return pid
    raise AssertionError("the loading client was never seen (%s)" % " ".join(words))


def interrupt_the_load(db, kill, outcome):
    """(For a thread.) stop_the_loader_while_it_loads, then ``kill(pid)`` (the pids it
    killed); outcome gets 'killed' or 'error'. The loader never stays stopped."""
    pid = None
    try:
        pid = stop_the_loader_while_it_loads(db)
        outcome["killed"] = kill(pid)
    except AssertionError as error:
        outcome["error"] = str(error)
    finally:
        if pid is not None:
            resume(pid)


def kill_loader(pid):
    os.kill(pid, signal.SIGKILL)  # stopped and alive: it cannot have ended meanwhile
    return [pid]


def kill_module_of(pid):
    """SIGKILL the db_backup module above the (stopped) loader ``pid``."""
    module = module_above(pid)
    assert module is not None, "no db_backup module above the loading client %d" % pid
    os.kill(module, signal.SIGKILL)
    return [module]


def module_above(pid):
    """The db_backup module process that ``pid`` runs under (None: not found)."""
    while pid > 1:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as handle:
                if b"AnsiballZ_db_backup" in handle.read():
                    return pid
            pid = harness.parent_of(pid)
        except (OSError, ValueError, IndexError):
            return None
    return None


def wait_until_gone(words, seconds=120):
    deadline = time.time() + seconds
    while processes_matching(*words) and time.time() < deadline:
        time.sleep(0.2)
    assert not processes_matching(*words), processes_matching(*words)


def in_thread(function, *args, **kwargs):
    box = {}

    def run():
        box["result"] = function(*args, **kwargs)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


# -- restore killed -----------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["mysql", "postgresql"])
def test_restore_killed_leaves_the_database_as_before_or_restored(case, engine, fresh_database, tmp_path):
    case("R6", engine, "restore killed (its loading client, then the module itself)")
    db = fresh_database(engine)
    fill(db)
    backup = dumped(db, tmp_path, "R6.restore-killed")
    at_backup = state_of(db)
    change_after_backup(db)
    before = state_of(db)
    assert before != at_backup and before["rows"]["big"] == BIG_ROWS + 1
    restore = backup_args(db, tmp_path, state="restore", src=backup["path"])

    # 1. The client that loads the dump is killed half-way: stopped once the load has
    # written into the database, then killed (stopped, it cannot finish meanwhile).
    outcome = {}
    killer = threading.Thread(target=interrupt_the_load, args=(db, kill_loader, outcome),
                              daemon=True)
    killer.start()
    result = harness.watched_run(db, "db_backup", restore, "R6.restore-killed")
    killer.join(10)
    assert outcome.get("killed"), outcome.get("error", "the killer did not finish")
    assert result.get("failed") is True, result.get("msg")
    assert "SIGKILL" in result["msg"] or "signal 9" in result["msg"], result["msg"]
    assert "was not changed" in result["msg"], result["msg"]
    assert result.get("safety_backup") or "safety backup" in result["msg"], result["msg"]
    assert state_of(db) == before
    assert side_databases(db) == []
    killed_message = result["msg"]

    # 2. The module itself is killed while its client loads the dump (the client stopped
    # half-way as in 1, then let go: it runs on without its module).
    outcome = {}
    killer = threading.Thread(target=interrupt_the_load, args=(db, kill_module_of, outcome),
                              daemon=True)
    killer.start()
    harness.watched_run(db, "db_backup", restore, "R6.restore-killed")
    killer.join(10)
    assert outcome.get("killed"), outcome.get("error", "the killer did not finish")
    wait_until_gone(loader_words(db))
    assert state_of(db) == before

    # 3. A restore that is left alone restores exactly the backup, and removes what the
    # killed one left on the server.
    result = harness.watched_run(db, "db_backup", restore, "R6.restore-killed")
    assert not result.get("failed"), result.get("msg")
    assert state_of(db) == at_backup
    assert side_databases(db) == []
    case.message = "killed client: %s | then the module killed: database as before | then " \
                   "restored exactly the backup, nothing left beside it" % killed_message[:300]


def test_sqlite_restore_killed_leaves_the_database_as_before(case, fresh_database, tmp_path):
    case("R6", "sqlite", "restore killed (the module, while it reads the dump)")
    db = fresh_database("sqlite")
    fill(db)
    backup = dumped(db, tmp_path, "R6.restore-killed", compression="gzip")
    at_backup = state_of(db)
    change_after_backup(db)
    before = state_of(db)
    directory = os.path.dirname(db.name)
    outcome = {}

    def kill_module_when_copying():
        """The module (this test's own) stopped the moment its staging copy appears, killed
        while the copy is still there: the database file not yet replaced."""
        deadline = time.time() + 240
        while time.time() < deadline:
            staging = [name for name in os.listdir(directory) if name.startswith(".dbsafe-restore-")]
            if staging:
                modules = [pid for pid in own_processes_matching("AnsiballZ_db_backup") if stop(pid)]
                try:
                    if not modules:
                        outcome["error"] = "the module ended before it could be stopped"
                    elif not os.path.exists(os.path.join(directory, staging[0])):
                        outcome["error"] = "the module was past the copy when it was stopped"
                    else:
                        for pid in modules:
                            os.kill(pid, signal.SIGKILL)
                        outcome["killed"] = modules
                finally:
                    for pid in modules:
                        resume(pid)
                return
            time.sleep(0.005)
        outcome["error"] = "the module was never seen copying the dump"
    killer = threading.Thread(target=kill_module_when_copying, daemon=True)
    killer.start()
    restore = backup_args(db, tmp_path, state="restore", src=backup["path"])
    harness.watched_run(db, "db_backup", restore, "R6.restore-killed")
    killer.join(10)
    assert outcome.get("killed"), outcome.get("error", "the killer did not finish")
    assert state_of(db) == before
    result = harness.watched_run(db, "db_backup", restore, "R6.restore-killed")
    assert not result.get("failed"), result.get("msg")
    assert state_of(db) == at_backup
    case.message = "module killed while reading the dump: database as before; restored again: " \
                   "exactly the backup"


# -- restore during a guarded migrate ----------------------------------------------------------

def add_gated_migration(project, release):
    """A books migration that adds the field ``processed``, writes the slow marker and then
    waits (at most 10 minutes) until the file ``release`` exists: the test decides when the
    migrate may finish. Returns its name."""
    preamble = (
        "def wait(apps, schema_editor):\n"
        "    project = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))\n"
        "    with open(os.path.join(project, %r), \"w\") as marker:\n"
        "        marker.write(str(os.getpid()))\n"
        "    deadline = time.time() + 600\n"
        "    while not os.path.exists(%r) and time.time() < deadline:\n"
        "        time.sleep(0.1)\n" % (demo.SLOW_MARKER, str(release)))
    field = "models.BooleanField(default=False)"
    operations = (demo._add_field_operation("processed", field)
                  + "migrations.RunPython(wait, migrations.RunPython.noop),\n")
    name = demo._write_migration(project, "%s_gated" % demo.next_number(project),
                                 demo.leaf_migration(project), operations, preamble)
    demo._add_model_field(project, "processed = %s" % field)
    return name


def lock_waiters(db):
    """Sessions of ours on the server waiting for the run lock of ``db`` (not its holder)."""
    if db.engine == "mysql":
        out = mysql_admin_sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = "
                              "'%s' AND INFO LIKE 'SELECT GET_LOCK(%%';" % db.name)
    else:
        out = pg_admin_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '%s' AND application_name "
            "LIKE 'dbsafe:%%' AND query LIKE 'SELECT pg_try_advisory_lock(%%' AND pid NOT IN "
            "(SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted);" % db.name)
    return int(out.strip() or 0)


@pytest.mark.parametrize("engine", ["mysql", "postgresql"])
def test_restore_during_a_guarded_migrate_waits_or_refuses(case, engine, fresh_database,
                                                           tmp_path):
    case("R6", engine, "restore during a guarded migrate (waits for the lock, or refuses)")
    db = fresh_database(engine)
    project = harness.prepared(db, tmp_path)
    backup_dir = str(tmp_path / "backups")
    project_args = demo.module_args(project, db, backup_dir=backup_dir)
    taken = harness.watched_run(db, "db_backup", dict(project_args, state="dump"), "R6.restore-migrate")
    assert not taken.get("failed"), taken.get("msg")
    at_backup = state_of(db)
    release = tmp_path / "release-the-migration"
    gated = add_gated_migration(project, release)

    migrating, migrated = in_thread(harness.guarded, db, project, tmp_path, "R6.restore-migrate")
    harness.wait_for_file(demo.slow_marker_path(project), seconds=300)
    # An explicit connection: with the project's options the module's own facts launch reads
    # books_book's size, which on PostgreSQL waits behind the migration's ACCESS EXCLUSIVE
    # lock before the restore ever asks for the run lock.
    restore = backup_args(db, tmp_path, state="restore", src=taken["backup"]["path"])
    refused = harness.watched_run(db, "db_backup", dict(restore, lock_timeout=1),
                                  "R6.restore-migrate")
    assert refused.get("failed") is True, refused.get("msg")
    assert "could not take the lock" in refused["msg"], refused["msg"]
    assert migrating.is_alive(), "the migrate ended before the refused restore: no overlap"
    waiting, waited = in_thread(harness.watched_run, db, "db_backup", dict(restore, lock_timeout=600),
                                "R6.restore-migrate")
    deadline = time.time() + 300
    while not lock_waiters(db) and time.time() < deadline and waiting.is_alive():
        time.sleep(0.2)
    seen_waiting = lock_waiters(db)
    assert seen_waiting and migrating.is_alive(), "the restore was never seen waiting for the lock"
    time.sleep(2)  # it keeps waiting while the migration runs
    assert waiting.is_alive() and migrating.is_alive()
    release.write_text("go")
    migrating.join(300)
    waiting.join(300)
    guard = migrated["result"]
    assert not guard.get("failed"), guard.get("msg")
    assert "books.%s" % gated in str(guard.get("applied")), guard.get("applied")
    restored = waited["result"]
    assert not restored.get("failed"), restored.get("msg")
    # It waited for the migrate: its lock came after the guard let go, so the safety backup it
    # took under the lock holds the migrated database (the gated migration's row).
    assert restored["lock"]["waited"] > 2, restored["lock"]
    with open(restored["safety_backup"]["path"] + ".json") as handle:
        safety = json.load(handle)
    assert ["books", gated] in safety["migrations"], safety["migrations"]
    # Consistent: exactly the backup (no column 'processed', no row of the gated migration).
    after = state_of(db)
    assert after == at_backup
    assert not any("processed" in column for column in after["columns"])
    assert not any(gated in row for row in after["migrations"])
    case.message = "refused with lock_timeout 1: %s | the next one waited %ss for the migrate, " \
                   "then restored exactly the backup" % (refused["msg"][:140], restored["lock"]["waited"])


# -- media filesystem full ---------------------------------------------------------------------

@pytest.fixture
def small_filesystem(tmp_path):
    """A 2 MiB tmpfs (root only)."""
    mount = tmp_path / "smallfs"
    os.makedirs(str(mount))
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % proc.stderr.strip())
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("engine", ["mysql", "postgresql", "sqlite"])
def test_media_filesystem_full_changes_neither_database_nor_media(case, engine, fresh_database,
                                                                  tmp_path, small_filesystem):
    case("R6", engine, "media filesystem full during a restore with include_media")
    db = fresh_database(engine)
    fill(db, rows=1000)
    big_media = tmp_path / "media-then"
    os.makedirs(str(big_media / "uploads"))
    with open(str(big_media / "uploads" / "big.bin"), "wb") as handle:
        handle.write(os.urandom(3 * 1024 * 1024))
    backup = dumped(db, tmp_path, "R6.media-full", include_media=True, media_root=str(big_media))
    change_after_backup(db)
    media = small_filesystem / "media"
    os.makedirs(str(media / "uploads"))
    with open(str(media / "uploads" / "current.txt"), "w") as handle:
        handle.write("the media of now")
    before, media_before = state_of(db), harness.tree(str(small_filesystem))

    result = harness.watched_run(db, "db_backup", backup_args(
        db, tmp_path, state="restore", src=backup["path"], include_media=True,
        media_root=str(media)), "R6.media-full")

    assert result.get("failed") is True, result.get("msg")
    assert "not enough space" in result["msg"], result["msg"]
    # The archive's own 3 MiB do not fit in the 2 MiB (not a margin of ours).
    assert 3 * 1024 * 1024 < result["space_needed"] < 5 * 1024 * 1024, result["space_needed"]
    assert "media in %s were not changed" % media in result["msg"], result["msg"]
    assert "was not changed either" in result["msg"], result["msg"]
    assert "safety backup" in result["msg"], result["msg"]
    assert state_of(db) == before
    assert harness.tree(str(small_filesystem)) == media_before  # no staging directory left
    assert side_databases(db) == []
    case.message = result["msg"][:300]


# -- the MySQL swap and what cannot move between databases ----------------------------------------

def test_mysql_swap_keeps_foreign_keys_views_triggers_and_routines(case, fresh_database, tmp_path):
    case("R6", "mysql", "restore swaps tables in; views, triggers, routines and foreign keys as in "
         "the backup")
    db = fresh_database("mysql")
    execute(db, "\n".join([
        "CREATE TABLE author (id int PRIMARY KEY, name varchar(40));",
        "CREATE TABLE book (id int PRIMARY KEY, author_id int, title varchar(40), "
        "FOREIGN KEY (author_id) REFERENCES author (id));",
        "CREATE TABLE audit (id int AUTO_INCREMENT PRIMARY KEY, note varchar(80));",
        "INSERT INTO author VALUES (1, 'Ann'), (2, 'Bob');",
        "INSERT INTO book VALUES (1, 1, 'First'), (2, 2, 'Second');",
        "CREATE VIEW book_titles AS SELECT b.title, a.name FROM book b JOIN author a ON "
        "a.id = b.author_id;",
        "CREATE VIEW first_titles AS SELECT title FROM book_titles WHERE title LIKE 'F%';",
        "DELIMITER //",
        "CREATE TRIGGER book_audit AFTER INSERT ON book FOR EACH ROW BEGIN "
        "INSERT INTO audit (note) VALUES (CONCAT('book ', NEW.id)); END//",
        "CREATE PROCEDURE count_books(OUT total int) BEGIN SELECT COUNT(*) INTO total FROM book; "
        "END//",
        "DELIMITER ;",
    ]))
    backup = dumped(db, tmp_path, "R6.swap")
    at_backup = state_of(db)
    execute(db, "\n".join([
        "DROP TRIGGER book_audit;", "DROP VIEW first_titles;",
        "CREATE VIEW later_view AS SELECT 1 AS one;",
        "INSERT INTO author VALUES (3, 'Cid');",
        "DROP PROCEDURE count_books;",
    ]))
    result = harness.watched_run(db, "db_backup", backup_args(
        db, tmp_path, state="restore", src=backup["path"]), "R6.swap")
    assert not result.get("failed"), result.get("msg")
    after = state_of(db)
    assert after == at_backup
    assert side_databases(db) == []
    # They work on the restored tables: the trigger writes, the views and the routine read.
    execute(db, "INSERT INTO book VALUES (3, 2, 'Fresh');")
    assert mysql_admin_sql("SELECT note FROM `%s`.audit;" % db.name).split("\n")[0] == "book 3"
    assert sorted(_lines(mysql_admin_sql("SELECT title FROM `%s`.first_titles;" % db.name))) == \
        ["First", "Fresh"]
    assert mysql_admin_sql("CALL `%s`.count_books(@n); SELECT @n;" % db.name).strip() == "3"
    references = _lines(mysql_admin_sql(
        "SELECT UNIQUE_CONSTRAINT_SCHEMA, REFERENCED_TABLE_NAME FROM "
        "information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = '%s';" % db.name))
    assert references == ["%s\tauthor" % db.name]
    case.message = result["msg"][:200]


def test_mysql_restore_without_the_privilege_for_a_scratch_database(case, fresh_database,
                                                                    tmp_path):
    case("R6", "mysql", "restore by a user who may not create the scratch database")
    db = fresh_database("mysql")
    fill(db, rows=1000)
    backup = dumped(db, tmp_path, "R6.no-create")
    at_backup = state_of(db)
    change_after_backup(db)
    before = state_of(db)
    user, password = "r6_%s" % secrets.token_hex(4), secrets.token_urlsafe(12)
    exact = db.name.replace("_", "\\_")  # a grant on this one database only, no wildcard
    mysql_admin_sql("CREATE USER '{u}'@'%' IDENTIFIED BY '{p}'; CREATE USER '{u}'@'localhost' "
                    "IDENTIFIED BY '{p}'; GRANT ALL ON `{d}`.* TO '{u}'@'%'; GRANT ALL ON "
                    "`{d}`.* TO '{u}'@'localhost';".format(u=user, p=password, d=exact))
    try:
        narrow = LiveDatabase("mysql", db.name, db.host, db.port, user, password)
        result = harness.watched_run(narrow, "db_backup", backup_args(
            narrow, tmp_path, state="restore", src=backup["path"]), "R6.no-create")
        assert result.get("failed") is True, result.get("msg")
        assert "cannot create the scratch database" in result["msg"], result["msg"]
        assert "restore_method" in result["msg"] and "was not changed" in result["msg"]
        assert state_of(db) == before
        # The engine's default (the guard's and the reset's restores) falls back to in place.
        engine = engine_of(narrow)
        BackupStore(os.path.dirname(backup["path"]), make_runner()).restore(backup["path"], engine)
        assert engine.last_restore_method == "in_place"
        assert state_of(db) == at_backup
        assert side_databases(db) == []
    finally:
        mysql_admin_sql("DROP USER IF EXISTS '{u}'@'%'; DROP USER IF EXISTS '{u}'@'localhost';"
                        .format(u=user))
    case.message = result["msg"][:300]
