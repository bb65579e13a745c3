"""R6 - operator faults: a backup belongs to one database.

Two databases (two projects, or staging and production) share a backup_dir and a label; a
writer's clock is an hour behind; the newest manifest is damaged; a backup of database X is
restored into database Y; another project's run marker lies in the shared directory. Every case
ends with each database exactly as before or holding its own backup's data, checked
independently of the collection's snapshot code: row counts with the admin clients of
tests/integration/databases.py (psql / mariadb) or Python's sqlite3, django_migrations read
the same way, and the backup files on disk.
"""
import datetime
import glob
import json
import os
import signal
import socket
import sqlite3
import threading
import time

import pytest

import demo
import harness
from databases import mysql_admin_sql, pg_admin_sql

ENGINES = harness.ENGINES
LABEL = "shop"


# -- the databases' data, written and read without the collection ------------------------------

def sql(db, text):
    if db.engine == "postgresql":
        # As the database's owner (its user), so that user can dump and restore the table.
        return pg_admin_sql("SET ROLE %s;\n%s" % (db.user, text), database=db.name)
    if db.engine == "mysql":
        return mysql_admin_sql(text, database=db.name)
    with sqlite3.connect(db.name) as conn:
        rows = conn.execute(text).fetchall()
    conn.close()
    return "\n".join("\t".join(str(value) for value in row) for row in rows)


def add_rows(db, first, count):
    """Rows ``first`` .. ``first + count - 1`` of the table ``items`` (made on first use)."""
    if first == 1:
        sql(db, "CREATE TABLE items (id INTEGER PRIMARY KEY, note VARCHAR(40));")
    values = ", ".join("(%d, 'row %d')" % (n, n) for n in range(first, first + count))
    sql(db, "INSERT INTO items (id, note) VALUES %s;" % values)


def rows(db):
    return int(sql(db, "SELECT count(*) FROM items;").strip())


def database_with_rows(fresh_database, engine, count):
    db = fresh_database(engine)
    add_rows(db, 1, count)
    return db


def backup(db, tmp_path, test, **args):
    """db_backup with the explicit connection of ``db`` and the shared backup_dir."""
    params = dict(db.connection(), backup_dir=str(tmp_path / "shared-backups"), label=LABEL)
    params.update(args)
    result = harness.watched_run(db, "db_backup", params, test)
    return result


def listing(tmp_path):
    return sorted(os.listdir(str(tmp_path / "shared-backups")))


# -- shared backup_dir ---------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_shared_backup_dir_keep_and_newest_see_only_their_own_database(
        case, engine, fresh_database, tmp_path):
    case("R6", engine, "shared backup_dir, same label: keep 1 of one database keeps the other's "
                       "backups, restore newest restores its own data")
    first = database_with_rows(fresh_database, engine, 3)
    second = database_with_rows(fresh_database, engine, 5)

    old = backup(first, tmp_path, "R6 shared dump 1")
    other = backup(second, tmp_path, "R6 shared dump 2")
    new = backup(first, tmp_path, "R6 shared dump 3", keep=1)

    for result in (old, other, new):
        assert result["failed"] is False, result.get("msg")
    assert new["pruned"] == [os.path.basename(old["backup"]["path"])]
    left = listing(tmp_path)
    assert os.path.basename(other["backup"]["path"]) in left  # the other database's backup
    assert os.path.basename(other["backup"]["path"]) + ".json" in left
    assert os.path.basename(old["backup"]["path"]) not in left

    add_rows(second, 6, 10)  # the second database moves on; its newest backup has 5 rows
    restored = backup(second, tmp_path, "R6 shared restore", state="restore")

    case.message = restored.get("msg", "")
    assert restored["failed"] is False, restored.get("msg")
    assert restored["backup"]["path"] == other["backup"]["path"], restored["backup"]
    assert restored["restored_into_other_database"] is False
    assert rows(second) == 5  # its own data, not the first database's 3 rows
    assert rows(first) == 3


# -- clock skew ----------------------------------------------------------------------------------

def set_clock_back(path, before):
    """What a writer whose clock is an hour behind leaves: a name and created_at an hour before
    the backup ``before`` was taken (though it was taken after it). Returns the new path."""
    with open(path + ".json") as handle:
        manifest = json.load(handle)
    then = datetime.datetime.strptime(before["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ") - \
        datetime.timedelta(hours=1)
    stamp = then.strftime("%Y%m%dT%H%M%S%fZ")
    old_stamp = manifest["file"].split("-")[-1].split(".")[0]
    manifest["file"] = manifest["file"].replace(old_stamp, stamp)
    manifest["created_at"] = then.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    moved = os.path.join(os.path.dirname(path), manifest["file"])
    os.rename(path, moved)
    os.unlink(path + ".json")
    with open(moved + ".json", "w") as handle:
        json.dump(manifest, handle)
    return moved


@pytest.mark.parametrize("engine", ENGINES)
def test_newest_is_the_last_taken_whatever_the_writers_clock(case, engine, fresh_database,
                                                             tmp_path):
    case("R6", engine, "clock skew: the newest backup, written with a clock an hour behind, is "
                       "still the one restored")
    db = database_with_rows(fresh_database, engine, 3)
    earlier = backup(db, tmp_path, "R6 skew dump 1")
    add_rows(db, 4, 4)
    later = backup(db, tmp_path, "R6 skew dump 2")
    assert earlier["failed"] is False and later["failed"] is False
    skewed = set_clock_back(later["backup"]["path"], earlier["backup"])
    add_rows(db, 8, 5)

    restored = backup(db, tmp_path, "R6 skew restore", state="restore", safety_backup=False)

    case.message = restored.get("msg", "")
    assert restored["failed"] is False, restored.get("msg")
    assert restored["backup"]["path"] == skewed
    assert rows(db) == 7  # the later backup's rows, not the earlier one's 3


# -- backups of an earlier version ---------------------------------------------------------------

def as_earlier_version(path):
    """The manifest an earlier version wrote: no instance, no sequence."""
    with open(path + ".json") as handle:
        manifest = json.load(handle)
    del manifest["instance"], manifest["sequence"]
    with open(path + ".json", "w") as handle:
        json.dump(manifest, handle)


@pytest.mark.parametrize("engine", ENGINES)
def test_backups_of_an_earlier_version_are_still_found_and_rank_below_numbered_ones(
        case, engine, fresh_database, tmp_path):
    case("R6", engine, "backups of an earlier version (no instance, no sequence) in the backup_dir: "
                       "still restored as the newest, and said so; a numbered one outranks them")
    db = database_with_rows(fresh_database, engine, 3)
    old = backup(db, tmp_path, "R6 earlier dump")
    assert old["failed"] is False, old.get("msg")
    as_earlier_version(old["backup"]["path"])
    add_rows(db, 4, 4)

    restored = backup(db, tmp_path, "R6 earlier restore", state="restore", safety_backup=False)

    assert restored["failed"] is False, restored.get("msg")
    assert restored["backup"]["path"] == old["backup"]["path"]
    assert "earlier version" in restored["msg"], restored["msg"]
    assert rows(db) == 3

    add_rows(db, 4, 6)
    numbered = backup(db, tmp_path, "R6 earlier dump 2")
    # The earlier version's backup claims to be from the future: its clock does not count.
    with open(old["backup"]["path"] + ".json") as handle:
        manifest = json.load(handle)
    manifest["created_at"] = "2099-01-01T00:00:00.000000Z"
    with open(old["backup"]["path"] + ".json", "w") as handle:
        json.dump(manifest, handle)
    add_rows(db, 10, 2)

    again = backup(db, tmp_path, "R6 earlier restore 2", state="restore", safety_backup=False)

    case.message = "%s | %s" % (restored["msg"], again.get("msg"))
    assert again["failed"] is False, again.get("msg")
    assert again["backup"]["path"] == numbered["backup"]["path"]
    assert rows(db) == 9


# -- damaged manifest ----------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_a_damaged_newest_manifest_is_an_error_naming_it(case, engine, fresh_database, tmp_path):
    case("R6", engine, "damaged manifest of the newest backup: restore newest and keep refuse, "
                       "naming it; nothing restored or removed")
    db = database_with_rows(fresh_database, engine, 3)
    earlier = backup(db, tmp_path, "R6 damaged dump 1")
    add_rows(db, 4, 4)
    later = backup(db, tmp_path, "R6 damaged dump 2")
    assert earlier["failed"] is False and later["failed"] is False
    manifest = later["backup"]["path"] + ".json"
    with open(manifest, "r+") as handle:
        handle.truncate(os.path.getsize(manifest) // 2)
    add_rows(db, 8, 5)
    files = listing(tmp_path)

    restored = backup(db, tmp_path, "R6 damaged restore", state="restore")
    pruned = backup(db, tmp_path, "R6 damaged prune", state="pruned", keep=1)

    case.message = restored.get("msg", "")
    for result in (restored, pruned):
        assert result["failed"] is True
        assert os.path.basename(manifest) in result["msg"], result["msg"]
    assert rows(db) == 12  # nothing restored: not the older backup's 3 rows
    assert listing(tmp_path) == files  # nothing removed, no safety backup written


# -- a backup of X restored into Y ---------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_restore_into_another_database_needs_allow_other_database(case, engine, fresh_database,
                                                                  tmp_path):
    case("R6", engine, "a backup of database X restored into database Y: refused untouched "
                       "without allow_other_database; with it, done and said so")
    source = database_with_rows(fresh_database, engine, 3)
    target = database_with_rows(fresh_database, engine, 5)
    taken = backup(source, tmp_path, "R6 other dump")
    assert taken["failed"] is False, taken.get("msg")
    files = listing(tmp_path)

    refused = backup(target, tmp_path, "R6 other restore refused", state="restore",
                     src=taken["backup"]["path"])

    assert refused["failed"] is True
    assert "allow_other_database" in refused["msg"] and "Nothing was changed" in refused["msg"]
    assert rows(target) == 5 and listing(tmp_path) == files

    allowed = backup(target, tmp_path, "R6 other restore allowed", state="restore",
                     src=taken["backup"]["path"], allow_other_database=True)

    case.message = "%s | %s" % (refused["msg"], allowed.get("msg"))
    assert allowed["failed"] is False, allowed.get("msg")
    assert allowed["restored_into_other_database"] is True
    assert "another database" in allowed["msg"]
    assert rows(target) == 3 and rows(source) == 3


# -- another project's run marker ----------------------------------------------------------------

def applied(db):
    with sqlite3.connect(db.name) as conn:
        found = conn.execute("SELECT app || '.' || name FROM django_migrations").fetchall()
    conn.close()
    return sorted(row[0] for row in found)


def gone(pid, seconds=15):
    deadline = time.time() + seconds
    while os.path.exists("/proc/%d" % pid) and time.time() < deadline:
        with open("/proc/%d/stat" % pid) as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        time.sleep(0.1)
    return not os.path.exists("/proc/%d" % pid)


@pytest.mark.parametrize("engine", ENGINES)
def test_another_projects_run_marker_does_not_refuse_this_one(
        case, engine, fresh_database, tmp_path):
    case("R6", engine, "shared backup_dir: project B's guarded migrate is not refused because of "
                       "project A's run marker (A's next run still deals with it)")
    if engine != "sqlite":
        case.skip_not_applicable(
            "the guard's label is <alias>-<database name>: two databases share one only on two "
            "servers (one test server per engine); SQLite's db.sqlite3 in two projects does")
    shared = str(tmp_path / "shared-backups")
    first_db = fresh_database(engine, tmp_path / "a")
    second_db = fresh_database(engine, tmp_path / "b")
    first = harness.prepared(first_db, tmp_path / "a")
    second = harness.prepared(second_db, tmp_path / "b")
    slow = demo.add_slow_migration(first, 120)
    added = demo.add_composite_index_migration(second)
    first_before, second_before = applied(first_db), applied(second_db)

    # Project A's run is killed (SIGKILL, as the OOM killer does) while it migrates: its run
    # marker stays in the shared directory.
    results = []
    killed = threading.Thread(target=lambda: results.append(harness.guarded(
        first_db, first, tmp_path, "R6 shared marker A killed", backup_dir=shared)))
    killed.start()
    harness.wait_for_file(demo.slow_marker_path(first))
    [marker] = glob.glob(os.path.join(shared, ".dbsafe-run-*.json"))
    with open(marker) as handle:
        holder = json.load(handle)["holder"]["pid"]
    with open(demo.slow_marker_path(first)) as handle:
        interpreter = int(handle.read())
    os.kill(holder, signal.SIGKILL)
    killed.join(60)
    assert gone(interpreter), "project A's interpreter outlived its killed module"
    assert os.path.exists(marker) and applied(first_db) == first_before

    migrated = harness.guarded(second_db, second, tmp_path, "R6 shared marker B",
                               backup_dir=shared)

    case.message = migrated.get("msg", "")
    assert migrated["failed"] is False, migrated.get("msg")
    assert not [w for w in migrated.get("warnings") or [] if "lock left" in w], migrated["warnings"]
    assert applied(second_db) == sorted(second_before + ["books.%s" % added])
    assert os.path.exists(marker)  # A's, untouched

    # A's next run finds its own marker and deals with it before migrating.
    path = os.path.join(demo.migrations_dir(first), slow + ".py")
    with open(path) as handle:
        source = handle.read()
    with open(path, "w") as handle:
        handle.write(source.replace("SECONDS = 120.0", "SECONDS = 0.0"))
    again = harness.guarded(first_db, first, tmp_path, "R6 shared marker A again",
                            backup_dir=shared)

    warnings = " ".join(again.get("warnings") or [])
    case.message = "%s | A: %s" % (case.message, warnings)
    assert again["failed"] is False, again.get("msg")
    assert "lock left by host %s, pid %s" % (socket.gethostname(), holder) in warnings, warnings
    assert applied(first_db) == sorted(first_before + ["books.%s" % slow])
    assert not os.path.exists(marker)


@pytest.mark.parametrize("engine", ENGINES)
def test_guarded_keep_with_a_damaged_manifest_of_its_database_migrates_nothing(
        case, engine, fresh_database, tmp_path):
    case("R6", engine, "guarded migrate with keep, a damaged manifest among its database's "
                       "backups: refused naming it, nothing migrated, nothing removed")
    db = fresh_database(engine)
    project = harness.prepared(db, tmp_path)
    backups = str(tmp_path / "backups")
    taken = harness.watched_run(db, "db_backup", demo.module_args(project, db, backup_dir=backups),
                                "R6 guarded keep dump")
    assert taken["failed"] is False, taken.get("msg")
    manifest = taken["backup"]["path"] + ".json"
    with open(manifest, "w") as handle:
        handle.write("{")
    demo.add_composite_index_migration(project)
    applied_before = sql(db, "SELECT count(*) FROM django_migrations;").strip()

    result = harness.guarded(db, project, tmp_path, "R6 guarded keep", keep=1)

    case.message = result.get("msg", "")
    assert result["failed"] is True and os.path.basename(manifest) in result["msg"], result
    assert "database was not changed" in result["msg"], result["msg"]
    assert sql(db, "SELECT count(*) FROM django_migrations;").strip() == applied_before
    assert os.path.exists(manifest) and os.path.exists(taken["backup"]["path"])
