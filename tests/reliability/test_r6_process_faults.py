"""R6 - operator faults on the process level (issue 16, items 1 and 2): the module killed
(SIGKILL, the OOM killer), SIGTERM / SIGINT to the module, Ctrl-C on ansible-playbook, and
Ansible's task ``timeout:`` during a migration.

Each case ends with the database exactly as before or fully migrated, checked with the
database's own catalog (information_schema, django_migrations, count(*) per table through the
admin clients), not with the collection's snapshot code; and no process of the first run may
still work on the database when the next one starts.
"""
import glob
import json
import os
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time

import pytest

import demo
import harness
from ansible_run import CALLBACKS, _bin, ansible_env
from databases import mysql_admin_sql, pg_admin_sql
from harness import guarded, prepared
from test_r6_restores import lock_waiters
from ansible_collections.dbsafe.django.plugins.module_utils import processes
from ansible_collections.dbsafe.django.plugins.module_utils.engines.mysql import lock_name

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOLD = "hold_migration"


# -- the migration that waits -------------------------------------------------------------------

def add_held_migration(project):
    """A books migration that adds the column ``processed`` (on MariaDB that DDL commits at once:
    a run stopped after it is half-migrated), then writes its pid to demo.slow_marker_path and
    waits while ``project/hold_migration`` exists (at most 300 s). Returns its name."""
    with open(os.path.join(str(project), HOLD), "w") as handle:
        handle.write("remove me to let the migration finish\n")
    field = "models.BooleanField(default=False)"
    name = demo._write_migration(
        project, "%s_held" % demo.next_number(project), demo.leaf_migration(project),
        demo._add_field_operation("processed", field)
        + "migrations.RunPython(hold, migrations.RunPython.noop),\n",
        preamble=(
            "def hold(apps, schema_editor):\n"
            "    project = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))\n"
            "    with open(os.path.join(project, %r), \"w\") as marker:\n"
            "        marker.write(str(os.getpid()))\n"
            "    deadline = time.time() + 300\n"
            "    while os.path.exists(os.path.join(project, %r)) and time.time() < deadline:\n"
            "        time.sleep(0.1)\n" % (demo.SLOW_MARKER, HOLD)))
    demo._add_model_field(project, "processed = %s" % field)
    return name


def release(project):
    os.unlink(os.path.join(str(project), HOLD))


# -- the database's state, read from its own catalog ---------------------------------------------

def catalog(db):
    """{"columns": [table.column], "migrations": [app.name, duplicates kept], "rows": {table: n}}
    from information_schema / sqlite_master, django_migrations and count(*), through the
    database's own client (or Python's sqlite3): independent of the collection's snapshots."""
    if db.engine == "sqlite":
        connection = sqlite3.connect(db.name)
        try:
            tables = [row[0] for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                "ORDER BY name")]
            columns = sorted("%s.%s" % (table, row[1]) for table in tables
                             for row in connection.execute('PRAGMA table_info("%s")' % table))
            migrations = sorted("%s.%s" % row for row in connection.execute(
                "SELECT app, name FROM django_migrations"))
            rows = dict((table, connection.execute('SELECT count(*) FROM "%s"' % table).fetchone()[0])
                        for table in tables)
        finally:
            connection.close()
        return {"columns": columns, "migrations": migrations, "rows": rows}
    if db.engine == "postgresql":
        def query(sql):
            return pg_admin_sql(sql + ";\n", database=db.name).split()
        schema = "'public'"
        quote = '"%s"'
    else:
        def query(sql):
            return mysql_admin_sql(sql + ";\n", database=db.name).split()
        schema = "DATABASE()"
        quote = "`%s`"
    tables = query("SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                   "AND table_type = 'BASE TABLE' ORDER BY table_name" % schema)
    columns = sorted(query("SELECT CONCAT(table_name, '.', column_name) FROM "
                           "information_schema.columns WHERE table_schema = %s" % schema))
    migrations = sorted(query("SELECT CONCAT(app, '.', name) FROM django_migrations"))
    rows = {}
    for table in tables:
        rows[table] = int(query("SELECT count(*) FROM %s" % (quote % table))[0])
    return {"columns": columns, "migrations": migrations, "rows": rows}


# The guard's own bookkeeping (the applied migrations' checksums, issue 17), written after a
# verified migrate only: a fully migrated database has it, one put back as before must not.
OURS = "dbsafe_migration_checksums"


def without_ours(state):
    return {"columns": [column for column in state["columns"] if column.split(".")[0] != OURS],
            "migrations": state["migrations"],
            "rows": dict((table, count) for table, count in state["rows"].items() if table != OURS)}


def after_our_migrate(db):
    """The catalog after a verified guarded migrate: our checksum table written (test_checksums.py
    proves what it holds), compared without it."""
    found = catalog(db)
    assert found["rows"].get(OURS, 0) > 0, "the guarded migrate recorded no checksums: %s" % found["rows"]
    return without_ours(found)


def fully_migrated(before, held):
    """``before`` plus the held migration: its column, its one django_migrations row."""
    before = without_ours(before)
    return {"columns": sorted(before["columns"] + ["books_book.processed"]),
            "migrations": sorted(before["migrations"] + ["books.%s" % held]),
            "rows": dict(before["rows"], django_migrations=before["rows"]["django_migrations"] + 1)}


def assert_no_duplicate_rows(state):
    duplicates = sorted(set(m for m in state["migrations"] if state["migrations"].count(m) > 1))
    assert not duplicates, "django_migrations has the same migration twice: %s" % duplicates


# -- the run's processes -------------------------------------------------------------------------

def held_interpreter_pid(project, seconds=240):
    """The pid the held migration writes once a migrate reaches it (the project's interpreter)."""
    harness.wait_for_file(demo.slow_marker_path(project), seconds)
    pid = ""
    while not pid:  # created, then written: wait for the pid itself
        with open(demo.slow_marker_path(project)) as handle:
            pid = handle.read().strip()
        time.sleep(0.02)
    return int(pid)


def run_processes(tmp_path, project, seconds=240, wrapped=False):
    """Once the held migration runs: the module (the run marker's holder) and the project's
    interpreter (the pid the migration wrote), as processes.identity(). ``wrapped``: the
    interpreter runs behind a command_prefix, the marker records the wrapper."""
    interpreter = held_interpreter_pid(project, seconds)
    [path] = glob.glob(str(tmp_path / "backups" / ".dbsafe-run-*.json"))
    with open(path) as handle:
        record = json.load(handle)
    assert record["phase"] == "migrating", record
    recorded = [worker["pid"] for worker in record["workers"]]
    # Behind a wrapper the marker records the wrapper (the module's own child), not the
    # interpreter: the wrapper really stays in between.
    assert (interpreter in recorded) is not wrapped, (interpreter, record)
    return processes.identity(record["holder"]["pid"]), processes.identity(interpreter)


def wait_gone(identity, seconds):
    """True once the process ended (within ``seconds``)."""
    deadline = time.monotonic() + seconds
    while processes.still_running(identity):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Playbook:
    """ansible-playbook running django_migrate_guarded in its own process group, as a terminal
    runs a foreground job; the task result (if Ansible wrote one) through the test callback."""

    def __init__(self, args, timeout=None):
        task = {"name": "under test", "dbsafe.django.django_migrate_guarded": args}
        if timeout:
            task["timeout"] = timeout
        play = [{"hosts": "localhost", "gather_facts": False, "connection": "local",
                 "tasks": [task]}]
        self.tmp = tempfile.mkdtemp(prefix="dbsafe-play-")
        path = os.path.join(self.tmp, "play.yml")
        with open(path, "w") as handle:
            json.dump(play, handle)
        self.results = os.path.join(self.tmp, "results")
        env = ansible_env(dict(ANSIBLE_CALLBACK_PLUGINS=CALLBACKS,
                               ANSIBLE_CALLBACKS_ENABLED="dbsafe_last_result",
                               DBSAFE_RESULT_DIR=self.results))
        self.output = open(os.path.join(self.tmp, "output"), "w+")
        self.proc = subprocess.Popen([_bin("ansible-playbook"), "-i", "localhost,", path],
                                     stdout=self.output, stderr=subprocess.STDOUT, env=env,
                                     cwd=ROOT, start_new_session=True)

    def ctrl_c(self):
        """What a terminal does on Ctrl-C: SIGINT to the foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def wait(self, seconds=300):
        self.proc.wait(seconds)
        self.output.seek(0)
        text = self.output.read()
        self.output.close()
        try:
            with open(os.path.join(self.results, "localhost")) as handle:
                result = json.load(handle)
        except (OSError, ValueError):
            result = None
        return result, text


# -- the cases -----------------------------------------------------------------------------------

ENGINES = ("postgresql", "mysql", "sqlite")


# A command_prefix wrapper that stays between the module and the interpreter (sh does not exec
# a command followed by another): the wrapper gets the parent-death signal, the interpreter
# must notice on its own (introspect.watch_module).
WRAPPER = ["sh", "-c", '"$@"; exit $?', "wrapper"]
KILLED_CASES = [(engine, False) for engine in ENGINES] + [("postgresql", True), ("mysql", True)]


@pytest.mark.parametrize("engine,wrapped", KILLED_CASES,
                         ids=["%s%s" % (e, "-behind-a-wrapper" if w else "") for e, w in KILLED_CASES])
def test_module_killed_then_a_second_run(case, engine, wrapped, fresh_database, tmp_path):
    case("R6", engine, "module killed (SIGKILL) mid-migration%s: its interpreter dies with it, the "
                       "next run restores what it left and migrates once"
         % (" (the interpreter behind a command_prefix wrapper)" if wrapped else ""))
    db = fresh_database(engine)
    project = prepared(db, tmp_path)
    held = add_held_migration(project)
    before = catalog(db)
    prefix = {"command_prefix": WRAPPER} if wrapped else {}
    first = Playbook(demo.module_args(project, db, backup_dir=str(tmp_path / "backups"),
                                      lock_timeout=30, **prefix))
    module, interpreter = run_processes(tmp_path, project, wrapped=wrapped)

    os.kill(module["pid"], signal.SIGKILL)

    assert wait_gone(interpreter, 5), "the project's interpreter outlived its killed module"
    result, output = first.wait()
    assert result is None or result.get("failed"), result
    left = catalog(db)
    if engine == "mysql":  # no transactional DDL: the killed run left its column, no row
        assert "books_book.processed" in left["columns"] and \
            "books.%s" % held not in left["migrations"], left
    release(project)

    second = guarded(db, project, tmp_path, "R6 after a killed module", **prefix)

    warnings = " ".join(second.get("warnings") or [])
    case.message = "%s | %s" % (warnings, second.get("msg"))
    assert second["failed"] is False, second.get("msg")
    assert "lock left by host %s, pid %s" % (os.uname()[1], module["pid"]) in warnings, warnings
    after = after_our_migrate(db)
    assert_no_duplicate_rows(after)
    assert after == fully_migrated(before, held)


# SQLite: SIGTERM only, the handling is the engine-independent guard's.
SIGNAL_CASES = [(engine, signum) for engine in ENGINES
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
                if engine != "sqlite" or signum == signal.SIGTERM]


@pytest.mark.parametrize("engine,signum", SIGNAL_CASES,
                         ids=["%s-%s" % (e, signal.Signals(s).name) for e, s in SIGNAL_CASES])
def test_signal_to_the_module_mid_migration(case, engine, signum, fresh_database, tmp_path):
    name = signal.Signals(signum).name
    case("R6", engine, "%s to the module mid-migration: the interpreter is stopped, the backup "
                       "restored and proven, the message says interrupted" % name)
    db = fresh_database(engine)
    project = prepared(db, tmp_path)
    add_held_migration(project)
    before = catalog(db)
    seen = {}

    def interrupt():
        module, interpreter = run_processes(tmp_path, project)
        seen["interpreter"] = interpreter
        os.kill(module["pid"], signum)

    interrupter = threading.Thread(target=interrupt, daemon=True)
    interrupter.start()
    result = guarded(db, project, tmp_path, "R6 %s" % name)
    interrupter.join(5)

    case.message = result.get("msg", "")
    assert result["failed"] is True, result.get("msg")
    assert result["msg"].startswith("interrupted by %s" % name), result["msg"]
    assert "restored and verified" in result["msg"], result["msg"]
    assert result.get("restored") is True and result.get("proven") is True
    assert result.get("interrupted", [None])[0] == name
    assert not processes.still_running(seen["interpreter"])
    assert catalog(db) == before
    assert not glob.glob(str(tmp_path / "backups" / ".dbsafe-run-*.json"))  # a known state


@pytest.mark.parametrize("engine", ("postgresql", "mysql"))
def test_repeated_signals_do_not_abandon_the_restore(case, engine, fresh_database, tmp_path):
    case("R6", engine, "SIGTERM, then SIGINT every 50 ms (an impatient operator) while the "
                       "guard restores: the restore goes on to its end and is proven")
    db = fresh_database(engine)
    project = prepared(db, tmp_path)
    add_held_migration(project)
    before = catalog(db)
    done = threading.Event()

    def storm():
        module, _interpreter = run_processes(tmp_path, project)
        os.kill(module["pid"], signal.SIGTERM)
        while not done.is_set() and processes.still_running(module):
            try:
                os.kill(module["pid"], signal.SIGINT)
            except OSError:
                return
            time.sleep(0.05)

    stormer = threading.Thread(target=storm, daemon=True)
    stormer.start()
    result = guarded(db, project, tmp_path, "R6 signal storm")
    done.set()
    stormer.join(5)

    case.message = result.get("msg", "")
    # Signals pending together are handled in signal-number order: SIGINT may come first.
    assert result["failed"] is True and result["msg"].startswith("interrupted by SIG"), result["msg"]
    assert result.get("restored") is True and result.get("proven") is True, result["msg"]
    assert {"SIGTERM", "SIGINT"} <= set(result.get("interrupted", [])), result.get("interrupted")
    assert "arrived during the restore: the restore was not abandoned" in result["msg"]
    assert catalog(db) == before


def _module_and_interpreter_end(tmp_path, project, stop):
    """Run ``stop()`` once the held migration runs; return the module's and interpreter's
    identities after waiting for both to end."""
    module, interpreter = run_processes(tmp_path, project)
    stop()
    assert wait_gone(module, 180), "the module never ended"
    assert not processes.still_running(interpreter), "the interpreter outlived its module"
    return module, interpreter


@pytest.mark.parametrize("engine", ("postgresql", "mysql"))
def test_ctrl_c_on_ansible_playbook(case, engine, fresh_database, tmp_path):
    case("R6", engine, "Ctrl-C on ansible-playbook mid-migration (SIGINT to its process group): "
                       "the module restores and proves the backup before it exits")
    db = fresh_database(engine)
    project = prepared(db, tmp_path)
    add_held_migration(project)
    before = catalog(db)
    play = Playbook(demo.module_args(project, db, backup_dir=str(tmp_path / "backups"),
                                     lock_timeout=30))

    _module_and_interpreter_end(tmp_path, project, play.ctrl_c)
    result, output = play.wait()

    case.message = (result or {}).get("msg") or output.strip().splitlines()[-1]
    assert catalog(db) == before
    assert not glob.glob(str(tmp_path / "backups" / ".dbsafe-run-*.json"))  # a known state
    # Ansible stops waiting for the task at once, so the result is rarely seen; when it is,
    # it says what happened.
    if result is not None and "msg" in result and "interrupted" in result["msg"]:
        assert "restored and verified" in result["msg"], result["msg"]


@pytest.mark.parametrize("engine", ("postgresql", "mysql"))
def test_task_timeout(case, engine, fresh_database, tmp_path):
    case("R6", engine, "the task's timeout expires mid-migration (Ansible signals nothing, it "
                       "stops reading): the module notices, restores and proves the backup, "
                       "holding the lock until then")
    db = fresh_database(engine)
    project = prepared(db, tmp_path)
    add_held_migration(project)
    before = catalog(db)
    play = Playbook(demo.module_args(project, db, backup_dir=str(tmp_path / "backups"),
                                     lock_timeout=30), timeout=25)
    module, interpreter = run_processes(tmp_path, project, seconds=24)

    result, output = play.wait()  # Ansible gives up on the task after 25 s

    assert result is not None and result.get("failed"), output[-2000:]
    assert "timed out" in (result.get("msg") or "").lower() or result.get("timedout"), result
    assert wait_gone(module, 180), "the module never ended"
    assert not processes.still_running(interpreter)
    case.message = "Ansible: %s; the module restored, the database equals its state before" \
        % result.get("msg")
    assert catalog(db) == before
    assert not glob.glob(str(tmp_path / "backups" / ".dbsafe-run-*.json"))


def _lock_held(db):
    if db.engine == "postgresql":
        return pg_admin_sql(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE "
            "l.locktype = 'advisory' AND l.granted AND d.datname = '%s';\n" % db.name).strip() != "0"
    return mysql_admin_sql("SELECT IS_USED_LOCK('%s');\n"
                           % lock_name(db.name, "dbsafe-migrate")).strip() not in ("", "NULL")


def _end_once_locked(db, process, seconds=240):
    deadline = time.monotonic() + seconds
    while not _lock_held(db) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2)
    process.kill()


@pytest.mark.parametrize("outlives", [False, True], ids=["ends-while-waited-for", "outlives-the-wait"])
@pytest.mark.parametrize("engine", ("postgresql", "mysql"))
def test_a_run_finding_the_last_runs_interpreter_still_working(case, engine, outlives,
                                                               fresh_database, tmp_path):
    case("R6", engine, "the run marker's interpreter still runs (a stand-in process; the "
                       "lifeline makes a real orphan last a fraction of a second): the next run "
                       + ("refuses after lock_timeout, changing nothing" if outlives else
                          "waits for it, then restores and migrates once"))
    db = fresh_database(engine)
    project = prepared(db, tmp_path)
    held = add_held_migration(project)
    before = catalog(db)
    first = Playbook(demo.module_args(project, db, backup_dir=str(tmp_path / "backups"),
                                      lock_timeout=30))
    module, interpreter = run_processes(tmp_path, project)
    os.kill(module["pid"], signal.SIGKILL)
    assert wait_gone(interpreter, 5)
    first.wait()
    release(project)
    left = catalog(db)
    # The marker now names a process that still runs as the dead run's interpreter.
    stand_in = subprocess.Popen(["sleep", "120"])
    if not outlives:  # it ends 2 s after the next run took the lock (and found it running)
        threading.Thread(target=_end_once_locked, args=(db, stand_in), daemon=True).start()
    try:
        [path] = glob.glob(str(tmp_path / "backups" / ".dbsafe-run-*.json"))
        with open(path) as handle:
            record = json.load(handle)
        record["workers"] = [processes.identity(stand_in.pid)]
        with open(path, "w") as handle:
            json.dump(record, handle)

        started = time.monotonic()
        second = guarded(db, project, tmp_path, "R6 orphan still working",
                         lock_timeout=3 if outlives else 30)
        took = time.monotonic() - started
    finally:
        stand_in.kill()
        stand_in.wait()

    if outlives:
        case.message = second.get("msg", "")
        assert second["failed"] is True
        assert "still runs (pid %d)" % stand_in.pid in second["msg"], second["msg"]
        assert "Nothing was changed" in second["msg"]
        assert catalog(db) == left  # not touched: no restore, no migrate
        assert os.path.exists(path)  # kept for the next run to look again
        return
    warnings = " ".join(second.get("warnings") or [])
    case.message = "%s | %s (%.1f s)" % (warnings, second.get("msg"), took)
    assert second["failed"] is False, second.get("msg")
    assert "still runs (pid %d)" % stand_in.pid in warnings and "waiting up to" in warnings
    assert took > 2, took
    assert "lock left by host %s, pid %s" % (os.uname()[1], module["pid"]) in warnings
    after = after_our_migrate(db)
    assert_no_duplicate_rows(after)
    assert after == fully_migrated(before, held)


def _module_pids(root):
    """The pids of django_migrate_guarded module processes below ``root``."""
    found = []
    for pid in harness.descendants(root):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as handle:
                argv = handle.read()
        except OSError:
            continue
        words = argv.split(b"\0")
        # The module's Python itself, not the sh -c around it.
        if os.path.basename(words[0]).startswith(b"python") and \
                b"AnsiballZ_django_migrate_guarded" in argv:
            found.append(pid)
    return found


def test_signal_while_waiting_for_the_lock(case, fresh_database, tmp_path):
    case("R6", "postgresql", "SIGTERM to a run waiting for the lock (another run migrates): it "
                             "stops at once, changes nothing, says so; the other run goes on")
    db = fresh_database("postgresql")
    project = prepared(db, tmp_path)
    held = add_held_migration(project)
    before = catalog(db)
    first = Playbook(demo.module_args(project, db, backup_dir=str(tmp_path / "backups"),
                                      lock_timeout=30))
    module, _interpreter = run_processes(tmp_path, project)
    seen = {}

    def interrupt_the_waiting_one():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            waiting = [pid for pid in _module_pids(os.getpid()) if pid != module["pid"]]
            if waiting:
                # Past the introspection (however long it takes on a loaded machine): the
                # server shows its session waiting for the lock the first run holds.
                while not lock_waiters(db) and time.monotonic() < deadline:
                    time.sleep(0.1)
                seen["waiting for the lock"] = lock_waiters(db)
                time.sleep(1)  # and it keeps waiting
                seen["pid"] = waiting[0]
                seen["at"] = time.monotonic()
                os.kill(waiting[0], signal.SIGTERM)
                return
            time.sleep(0.1)

    interrupter = threading.Thread(target=interrupt_the_waiting_one, daemon=True)
    interrupter.start()
    try:
        second = guarded(db, project, tmp_path, "R6 SIGTERM while waiting", lock_timeout=120)
    finally:
        release(project)
    stopped_after = time.monotonic() - seen["at"]
    interrupter.join(5)
    result, output = first.wait()

    case.message = "%s (ended %.1f s after the signal)" % (second.get("msg"), stopped_after)
    assert seen["waiting for the lock"], "the second run was never seen waiting for the lock"
    assert second["failed"] is True
    assert second["msg"].startswith("interrupted by SIGTERM; the database was not changed"), \
        second["msg"]
    assert stopped_after < 20, stopped_after  # not the lock_timeout of 120 s
    assert result is not None and result["failed"] is False, output[-2000:]
    after = after_our_migrate(db)
    assert_no_duplicate_rows(after)
    assert after == fully_migrated(before, held)
