"""R2 - concurrency: guarded migrates started at once against one database, a lock held too
long, and a lock left by a run that was killed."""
import glob
import json
import os
import socket
import sqlite3
import threading

import pytest

import databases
import demo
import harness
from harness import ENGINES, guarded, prepared
from ansible_collections.dbsafe.django.plugins.module_utils.snapshots import diff_snapshots


def manifests(tmp_path):
    return glob.glob(str(tmp_path / "backups" / "*.json"))


def applied_rows(db, name):
    return [row for row in harness.snapshot(db)["migrations"] if row == ["books", name]]


def at_once(count, run):
    results = [None] * count
    errors = []

    def one(index):
        try:
            results[index] = run()
        except BaseException as error:  # noqa: B902 - reported below
            errors.append(error)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(900)
    assert not errors, errors
    return results


@pytest.mark.parametrize("count", [2, 5])
@pytest.mark.parametrize("engine", ENGINES)
def test_runs_started_at_once_migrate_exactly_once(case, engine, count, fresh_database, tmp_path):
    case("R2", engine, "%d guarded migrates started at once" % count)
    db = fresh_database(engine)
    project = prepared(db, tmp_path)
    slow = demo.add_slow_migration(project, 2)

    results = at_once(count, lambda: guarded(db, project, tmp_path, "R2 %d at once" % count,
                                             lock_timeout=300))

    assert [r["failed"] for r in results] == [False] * count, [r.get("msg") for r in results]
    migrated = [r for r in results if r["changed"]]
    idle = [r for r in results if not r["changed"]]
    assert len(migrated) == 1, [r.get("msg") for r in results]
    assert all(r["backup"] is None for r in idle)
    assert all("another run migrated" in r["msg"] or r["msg"] == "nothing to migrate"
               for r in idle), [r["msg"] for r in idle]
    assert len(applied_rows(db, slow)) == 1
    assert len(manifests(tmp_path)) == 1
    case.message = "1 migrated (waited %ss for the lock); others: %s" % (
        migrated[0]["lock"]["waited"], "; ".join(sorted(set(r["msg"] for r in idle))))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_run_that_waits_too_long_names_the_holder(case, engine, fresh_database, tmp_path):
    case("R2", engine, "lock_timeout while another run migrates: fails naming the holder")
    db = fresh_database(engine)
    project = prepared(db, tmp_path)
    demo.add_slow_migration(project, 15)
    before_second = {}
    first = {}
    worker = threading.Thread(target=lambda: first.update(
        guarded(db, project, tmp_path, "R2 holder")))
    worker.start()
    harness.wait_for_file(demo.slow_marker_path(project))
    before_second["manifests"] = manifests(tmp_path)

    second = guarded(db, project, tmp_path, "R2 waiter", lock_timeout=1)
    worker.join(300)

    case.message = second.get("msg", "")
    assert second["failed"] is True
    assert "could not take the lock" in second["msg"] and "within 1s" in second["msg"]
    assert "pid " in second["msg"] and "host %s" % socket.gethostname()[:24] in second["msg"], \
        second["msg"]
    assert manifests(tmp_path) == before_second["manifests"]  # the waiter took no backup
    assert first["failed"] is False and first["changed"] is True, first.get("msg")


def write_an_author(db):
    """What the application does when it runs again after the killed run: a new row."""
    sql = "INSERT INTO authors_author (name) VALUES ('written after the killed run');"
    if db.engine == "sqlite":
        with sqlite3.connect(db.name) as conn:
            conn.execute(sql)
    elif db.engine == "postgresql":
        databases.pg_admin_sql(sql, database=db.name)
    else:
        databases.mysql_admin_sql(sql, database=db.name)


@pytest.mark.parametrize("writes_meanwhile", [False, True], ids=["untouched", "app-wrote-since"])
@pytest.mark.parametrize("engine", ENGINES)
def test_a_lock_left_by_a_killed_run_is_taken_over_safely(case, engine, writes_meanwhile,
                                                          fresh_database, tmp_path):
    if writes_meanwhile:
        case("R2", engine, "a run killed while migrating, then the application wrote a row: the "
                           "next run refuses to restore over it, changes nothing, keeps the marker")
    else:
        case("R2", engine, "a run killed while migrating (all its processes): the next run "
                           "recognises it, puts back what it left (restore if anything "
                           "remained), warns, migrates")
    db = fresh_database(engine)
    project = prepared(db, tmp_path)
    slow = demo.add_slow_migration(project, 300)
    before = harness.snapshot(db)
    died = {}

    def doomed():
        try:
            guarded(db, project, tmp_path, "R2 killed run")
        except AssertionError as error:  # ansible-playbook was killed: no task result
            died["error"] = str(error)

    worker = threading.Thread(target=doomed)
    worker.start()
    harness.wait_for_file(demo.slow_marker_path(project))
    killed = harness.kill_everything_below(os.getpid())
    worker.join(120)
    assert killed and "error" in died, died
    [marker] = glob.glob(str(tmp_path / "backups" / ".dbsafe-run-*.json"))
    with open(marker) as handle:
        left = json.load(handle)
    assert left["phase"] == "migrating" and os.path.isfile(left["backup"]["path"])
    half_done = diff_snapshots(before, harness.snapshot(db))
    if writes_meanwhile:
        write_an_author(db)
        written = harness.snapshot(db)
    # The next release: the same migration, without the long sleep.
    path = os.path.join(demo.migrations_dir(project), slow + ".py")
    with open(path) as handle:
        source = handle.read()
    with open(path, "w") as handle:
        handle.write(source.replace("SECONDS = 300.0", "SECONDS = 0.0"))

    result = guarded(db, project, tmp_path, "R2 takeover")

    if writes_meanwhile:  # restoring would lose the new author: refused, nothing touched
        case.message = result.get("msg")
        assert result["failed"] is True
        assert "would lose those changes" in result["msg"] and left["backup"]["path"] in \
            result["msg"] and "authors_author" in result["msg"], result["msg"]
        assert diff_snapshots(written, harness.snapshot(db)) == []
        assert os.path.exists(marker)
        return
    warnings = " ".join(result.get("warnings") or [])
    case.message = warnings
    assert result["failed"] is False, result.get("msg")
    assert result["changed"] is True and result["after"]["unapplied_count"] == 0
    assert "lock left by host %s, pid %s" % (left["holder"]["host"], left["holder"]["pid"]) \
        in warnings, warnings
    if half_done:  # MariaDB (no transactional DDL): its column was left behind
        assert "%s was restored and verified" % left["backup"]["path"] in warnings, warnings
    else:  # PostgreSQL and SQLite rolled the killed migration back themselves
        assert "nothing of it remained" in warnings, warnings
    assert "process gone" in warnings
    assert not os.path.exists(marker)
    assert len(applied_rows(db, slow)) == 1
    if engine == "sqlite":  # the lock file named the dead holder too
        assert result["lock"]["holder"]["taken_over_from"]["pid"] == left["holder"]["pid"]
    if engine == "mysql":  # no transactional DDL: the killed run had left its column behind
        assert half_done, "expected the killed run to leave a half-done schema on MariaDB"
