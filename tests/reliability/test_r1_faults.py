"""R1 - the fault matrix: every fault, injected for real, on SQLite, PostgreSQL and MariaDB.

Each case must end at the exact state before the run (the engines' snapshots: django_migrations,
schema fingerprint, per-table row counts and content hashes, compared by diff_snapshots) with a
message that names the fault; a failed backup must leave everything unmigrated.
"""
import os
import shutil
import signal
import subprocess
import threading

import pytest

import demo
import harness
from databases import mysql_admin_sql, pg_admin_sql
from ansible_collections.dbsafe.django.plugins.module_utils.engines.mysql import lock_name
from ansible_collections.dbsafe.django.plugins.module_utils.snapshots import diff_snapshots

ENGINES = harness.ENGINES
guarded = harness.guarded
prepared = harness.prepared


def assert_restored(case, result, before, db, *fault_words):
    """Failed, restored and proven equal to ``before``, the message naming the fault."""
    case.message = result.get("msg", "")
    assert result["failed"] is True, result.get("msg")
    assert result.get("restored") is True and result.get("proven") is True, result.get("msg")
    assert "restored and verified" in result["msg"], result["msg"]
    assert diff_snapshots(before, harness.snapshot(db)) == []
    assert any(word in result["msg"] for word in fault_words), (fault_words, result["msg"])


def assert_nothing_migrated(case, result, before, db, backups, *fault_words):
    """The backup failed: nothing ran, the database is as before, no backup file is left."""
    case.message = result.get("msg", "")
    assert result["failed"] is True, result.get("msg")
    assert not result.get("applied"), result.get("applied")
    assert diff_snapshots(before, harness.snapshot(db)) == []
    assert any(word in result["msg"] for word in fault_words), (fault_words, result["msg"])
    left = os.listdir(str(backups)) if os.path.isdir(str(backups)) else []
    assert [n for n in left if not n.startswith(".")] == [], left


@pytest.mark.parametrize("engine", ENGINES)
def test_migration_raises_after_changing_the_schema(case, engine, fresh_database, tmp_path):
    case("R1", engine, "1. a migration raises after AddField")
    db = fresh_database(engine)
    project = prepared(db, tmp_path)
    failing = demo.add_failing_migration(project, "runpython")
    before = harness.snapshot(db)

    result = guarded(db, project, tmp_path, "R1.1")

    assert_restored(case, result, before, db, demo.FAILURE_MESSAGE)
    assert "books.%s" % failing in result["msg"]


@pytest.mark.parametrize("engine", ENGINES)
def test_migrate_process_killed_with_sigkill(case, engine, fresh_database, tmp_path):
    case("R1", engine, "2. the migrate process is killed (SIGKILL)")
    db = fresh_database(engine)
    project = prepared(db, tmp_path)
    demo.add_slow_migration(project, 120)
    before = harness.snapshot(db)
    marker = demo.slow_marker_path(project)

    def kill_when_sleeping():
        harness.wait_for_file(marker)
        with open(marker) as handle:
            os.kill(int(handle.read()), signal.SIGKILL)

    killer = threading.Thread(target=kill_when_sleeping, daemon=True)
    killer.start()
    result = guarded(db, project, tmp_path, "R1.2")
    killer.join(5)

    assert_restored(case, result, before, db, "killed by signal 9 (SIGKILL)")


def _terminate_migrating_session(db):
    """Kill, on the server, the migrating Django session (not our lock session)."""
    if db.engine == "postgresql":
        return pg_admin_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s' "
            "AND usename = '%s' AND application_name NOT LIKE 'dbsafe%%' "
            "AND pid <> pg_backend_pid();\n" % (db.name, db.user)).split()
    holder = mysql_admin_sql("SELECT IS_USED_LOCK('%s');\n" % lock_name(db.name, "dbsafe-migrate"))
    ids = mysql_admin_sql(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '%s' AND ID <> %s;\n"
        % (db.user, holder.strip())).split()
    for session in ids:
        mysql_admin_sql("KILL %s;\n" % session)
    return ids


@pytest.mark.parametrize("engine", ENGINES)
def test_connection_lost_during_migrate(case, engine, fresh_database, tmp_path):
    case("R1", engine, "3. the connection is lost during migrate (killed server-side)")
    if engine == "sqlite":
        case.skip_not_applicable("SQLite has no server connection: the database is a file the "
                                 "migrating process opens itself (a dying process is case 2)")
    db = fresh_database(engine)
    project = prepared(db, tmp_path)
    demo.add_slow_migration(project, 3)
    before = harness.snapshot(db)
    marker = demo.slow_marker_path(project)
    killed = []

    def terminate_when_sleeping():
        harness.wait_for_file(marker)
        killed.extend(_terminate_migrating_session(db))

    killer = threading.Thread(target=terminate_when_sleeping, daemon=True)
    killer.start()
    result = guarded(db, project, tmp_path, "R1.3")
    killer.join(5)

    assert killed, "no migrating session was found to kill"
    assert_restored(case, result, before, db, "terminat", "connection", "gone away",
                    "Lost connection")


@pytest.mark.parametrize("mode", ["exit", "killed", "lies"])
@pytest.mark.parametrize("engine", ENGINES)
def test_backup_tool_fails(case, engine, mode, fresh_database, tmp_path):
    what = {"exit": "exits non-zero", "killed": "is killed, the dump cut short",
            "lies": "cuts the dump short and exits 0"}[mode]
    # SQLite is dumped in-process (the online backup API): its external tool is the compressor.
    tool = {"sqlite": "zstd", "postgresql": "pg_dump", "mysql": "mariadb-dump"}[engine]
    case("R1", engine, "4%s. the backup tool %s (SQLite: zstd, the compressor)"
         % ({"exit": "a", "killed": "b", "lies": "c"}[mode], what))
    db = fresh_database(engine)
    project = prepared(db, tmp_path)
    demo.add_slow_migration(project, 0)
    before = harness.snapshot(db)
    wrappers = tmp_path / "fault-bin"
    harness.wrap_tool(wrappers, tool, shutil.which(tool), mode)

    result = guarded(db, project, tmp_path, "R1.4",
                     env={"PATH": "%s:%s" % (wrappers, os.environ["PATH"])})

    # A tool that claims success is not named: the backup's own completeness check is.
    named = tool if mode != "lies" else "cut short" if engine == "mysql" else "stream" \
        if engine == "sqlite" else "custom archive"
    assert_nothing_migrated(case, result, before, db, tmp_path / "backups", named)
    assert "backup" in result["msg"]
    assert {"exit": "%s exited with 3" % tool,
            "killed": "%s was killed by signal 9 (SIGKILL)" % tool,
            # Each format's own completeness check: zstd's frame, pg_restore reading the
            # custom archive to its end, mariadb-dump's last line.
            "lies": {"sqlite": "is not an intact zstd stream",
                     "postgresql": "is not a complete PostgreSQL custom archive",
                     "mysql": "is incomplete"}[engine]}[mode] in result["msg"], result["msg"]


@pytest.fixture
def mounts():
    made = []
    yield made
    for path in reversed(made):
        subprocess.run(["umount", "-l", path], check=False, capture_output=True)


def _tmpfs(path, options, mounts):
    os.makedirs(path)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail("cannot mount a tmpfs here (%s): the fault cannot be injected"
                    % proc.stderr.strip())
    mounts.append(path)


@pytest.mark.parametrize("mode", ["read-only", "full"])
@pytest.mark.parametrize("engine", ENGINES)
def test_backup_target_cannot_be_written(case, engine, mode, fresh_database, tmp_path, mounts):
    case("R1", engine, "5%s. the backup target is %s" % ({"read-only": "a", "full": "b"}[mode], {
        "read-only": "read-only (a read-only mount: root ignores file modes)",
        "full": "full (a 64 KiB tmpfs: no space left)"}[mode]))
    db = fresh_database(engine)
    project = prepared(db, tmp_path)
    demo.add_slow_migration(project, 0)
    before = harness.snapshot(db)
    target = str(tmp_path / "target")
    if mode == "read-only":
        _tmpfs(target, "ro,size=1m,mode=0700", mounts)
        backups = os.path.join(target, "backups")
        words = ("Read-only file system",)
    else:
        _tmpfs(target, "size=64k,mode=0700", mounts)
        backups = os.path.join(target, "backups")
        os.makedirs(backups, 0o700)
        with open(os.path.join(target, "filler"), "wb") as handle:  # leave a few KiB
            try:
                handle.write(b"\0" * (60 * 1024))
            except OSError:
                pass
        words = ("No space left",)

    result = guarded(db, project, tmp_path, "R1.5", backup_dir=backups)

    assert_nothing_migrated(case, result, before, db, backups, *words)


@pytest.mark.parametrize("engine", ENGINES)
def test_post_migration_verification_fails(case, engine, fresh_database, tmp_path):
    case("R1", engine, "6. verification fails: a model change without a migration appears")
    db = fresh_database(engine)
    project = prepared(db, tmp_path)
    # A migration that completes, and on its way changes the live Book model (as code that
    # patches models at import time would): after migrate, makemigrations --check is not clean.
    demo._write_migration(
        project, "%s_sneaky" % demo.next_number(project), demo.leaf_migration(project),
        "migrations.RunPython(sneak, migrations.RunPython.noop),\n",
        preamble=(
            "def sneak(apps, schema_editor):\n"
            "    from books.models import Book\n"
            "    models.IntegerField(null=True).contribute_to_class(Book, 'sneaked_in')\n"))
    before = harness.snapshot(db)

    result = guarded(db, project, tmp_path, "R1.6")

    assert_restored(case, result, before, db, "makemigrations --check is not clean")
    assert "verification failed" in result["msg"] and "sneaked_in" in result["msg"]
