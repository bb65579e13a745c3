"""django_schema_drift against the real demo project on SQLite, PostgreSQL and MariaDB.

Every run also proves that the scratch database is gone afterwards: after success, after a
failure, and after the module process was sent SIGTERM or SIGINT mid-way.
"""
import glob
import json
import os
import re
import signal
import sqlite3
import subprocess
import tempfile
import time

import pytest
import yaml

import demo
from ansible_run import CALLBACKS, ROOT, _bin, ansible_env, run_module
from databases import mysql_admin_sql, pg_admin_sql
from runner_double import engine_of, execute, query_value

MODULE = "django_schema_drift"


def scratch_databases(db):
    """Scratch databases (or files) of ``db`` that exist now."""
    prefix = db.name + "_drift_"
    if db.engine == "sqlite":
        return sorted(glob.glob(glob.escape(prefix) + "*"))
    if db.engine == "postgresql":
        return pg_admin_sql("SELECT datname FROM pg_database WHERE starts_with(datname, '%s');\n"
                            % prefix).split()
    return mysql_admin_sql("SELECT schema_name FROM information_schema.schemata "
                           "WHERE LEFT(schema_name, %d) = '%s';\n" % (len(prefix), prefix)).split()


def assert_clean_run(result, db):
    assert result["scratch"]["dropped"] is True, result["scratch"]
    assert result["scratch"]["name"].startswith(db.name + "_drift_")
    assert scratch_databases(db) == []
    if db.password:
        assert db.password not in json.dumps(result)


def kinds(result):
    return sorted(set((d["table"], d["kind"]) for d in result["differences"]))


# -- no drift -------------------------------------------------------------------------------------
# A freshly migrated database has no drift on every engine: PostgreSQL in
# test_a_user_without_createdb_is_told_and_scratch_database_helps, MariaDB in
# test_a_name_prefix_outside_the_grants_is_told_and_one_inside_works, SQLite in
# test_drift_check_playbook_lists_the_hosts_that_drifted (its clean host).

NOTES_POSITION = {
    "sqlite": "SELECT cid + 1 FROM pragma_table_info('books_book') WHERE name = 'notes'",
    "postgresql": "SELECT ordinal_position FROM information_schema.columns "
                  "WHERE table_name = 'books_book' AND column_name = 'notes'",
    "mysql": "SELECT ORDINAL_POSITION FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
             "DATABASE() AND TABLE_NAME = 'books_book' AND COLUMN_NAME = 'notes'",
}


@pytest.mark.parametrize("engine, django", [
    ("sqlite", "4.2"), ("postgresql", "5.2"), ("mysql", "5.2"),
], ids=["sqlite-django4.2", "postgresql", "mariadb"])
def test_no_drift_after_migrating_forward_and_back(request, tmp_path, engine, django):
    db = request.getfixturevalue({"sqlite": "sqlite_database", "postgresql": "postgres_database",
                                  "mysql": "mysql_database"}[engine])
    python = demo.PYTHONS[django]
    if python is None:
        pytest.skip("no interpreter with Django %s (run scripts/bootstrap)" % django)
    project = demo.copy_demo(tmp_path)
    demo.manage(project, db, "migrate", python=python)
    # Unapplying 0005 adds `notes` back at the end of the table, while the scratch database,
    # built straight to the same applied set, has it where 0001 created it (fifth): only the
    # column order differs, which is never drift. The applied set is not the latest one.
    demo.manage(project, db, "migrate", "books", "0004", python=python)
    assert query_value(db, NOTES_POSITION[engine]) != "5"
    launches = tmp_path / "launches.log"
    wrapper = tmp_path / "python"
    wrapper.write_text('#!/bin/sh\necho launch >> "%s"\nexec "%s" "$@"\n' % (launches, python))
    wrapper.chmod(0o755)

    result = run_module(MODULE, demo.module_args(project, db, str(wrapper)), check=True)

    assert not result.get("failed"), result.get("msg")
    assert launches.read_text().count("launch") == 2  # the live facts, the scratch build
    assert result["changed"] is False
    assert result["drift"] is False and result["differences"] == [], result["summary"]
    assert result["summary"].startswith("No drift")
    assert result["django_version"].startswith(django)
    assert "books.0005_remove_book_notes" not in result["applied"]
    assert "books.0004_fill_book_slugs" in result["applied"]
    assert result["not_replayed"] == []
    assert_clean_run(result, db)


# -- drift ----------------------------------------------------------------------------------------

def _first(db, sql):
    value = query_value(db, sql)
    assert value, "nothing found by %s" % sql
    return value


def change_by_hand(db):
    """Add a column, change a column's type and another's nullability, drop an index, drop a
    foreign key and add a table, the way a person at a database prompt would."""
    if db.engine == "postgresql":
        index = _first(db, "SELECT indexname FROM pg_indexes WHERE tablename = 'books_book' "
                           "AND indexdef LIKE '%(slug)';")
        fk = _first(db, "SELECT conname FROM pg_constraint WHERE contype = 'f' "
                        "AND conrelid = 'books_book'::regclass;")
        execute(db, 'ALTER TABLE books_book ADD COLUMN rating integer;\n'
                    'ALTER TABLE books_book ALTER COLUMN title TYPE text;\n'
                    'ALTER TABLE books_book ALTER COLUMN isbn DROP NOT NULL;\n'
                    'DROP INDEX "%s";\n'
                    'ALTER TABLE books_book DROP CONSTRAINT "%s";\n'
                    'CREATE TABLE hand_made (id integer PRIMARY KEY);\n' % (index, fk))
    elif db.engine == "mysql":
        index = _first(db, "SELECT INDEX_NAME FROM information_schema.STATISTICS WHERE "
                           "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'books_book' "
                           "AND COLUMN_NAME = 'slug';")
        fk = _first(db, "SELECT CONSTRAINT_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS "
                        "WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = 'books_book';")
        execute(db, "ALTER TABLE books_book ADD COLUMN rating integer NULL;\n"
                    "ALTER TABLE books_book MODIFY title longtext NOT NULL;\n"
                    "ALTER TABLE books_book MODIFY isbn varchar(13) NULL;\n"
                    "DROP INDEX `%s` ON books_book;\n"
                    "ALTER TABLE books_book DROP FOREIGN KEY `%s`;\n"
                    "CREATE TABLE hand_made (id integer PRIMARY KEY);\n" % (index, fk))
    else:
        # SQLite changes a column or drops a foreign key by rebuilding the table.
        conn = sqlite3.connect(db.name)
        try:
            create = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' "
                                  "AND name = 'books_book'").fetchone()[0]
            indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                   "AND tbl_name = 'books_book' AND sql IS NOT NULL").fetchall()
        finally:
            conn.close()
        rebuilt = create.replace('"title" varchar(200) NOT NULL', '"title" text NOT NULL')
        rebuilt = rebuilt.replace('"isbn" varchar(13) NOT NULL', '"isbn" varchar(13) NULL')
        rebuilt = re.sub(r' REFERENCES "authors_author" \("id"\) DEFERRABLE INITIALLY DEFERRED',
                         "", rebuilt)
        rebuilt = rebuilt.replace('CREATE TABLE "books_book"', 'CREATE TABLE "books_book_new"')
        assert rebuilt.count("books_book_new") == 1 and "REFERENCES" not in rebuilt, rebuilt
        kept = [sql for name, sql in indexes if "slug" not in name]
        assert len(kept) == len(indexes) - 1
        execute(db, "PRAGMA foreign_keys = OFF;\nBEGIN;\n%s;\n"
                    "INSERT INTO books_book_new SELECT * FROM books_book;\n"
                    "DROP TABLE books_book;\n"
                    "ALTER TABLE books_book_new RENAME TO books_book;\n%s;\n"
                    "ALTER TABLE books_book ADD COLUMN rating integer;\n"
                    "CREATE TABLE hand_made (id integer PRIMARY KEY);\nCOMMIT;\n"
                    % (rebuilt, ";\n".join(kept)))


def test_the_check_waits_for_a_migrate_under_way(database, tmp_path):
    """The migration lock held (as a guarded migrate, a restore or a reset holds it): the check
    does not read the live schema half-way through their work - it waits for the lock and,
    after lock_timeout, fails naming the holder, changing nothing."""
    db = database
    project = demo.copy_demo(tmp_path)
    demo.manage(project, db, "migrate")

    with engine_of(db).lock(timeout=10):
        started = time.monotonic()
        refused = run_module(MODULE, demo.module_args(project, db, lock_timeout=2))
        waited = time.monotonic() - started

    assert refused["failed"] is True, refused.get("msg")
    assert "could not take the lock" in refused["msg"] and "held by" in refused["msg"], refused["msg"]
    assert waited >= 2, waited
    assert scratch_databases(db) == []
    result = run_module(MODULE, demo.module_args(project, db, lock_timeout=2))
    assert not result["failed"], result.get("msg")
    assert result["drift"] is False
    assert_clean_run(result, db)


def test_drift_is_detected_and_described(database, tmp_path):
    db = database
    project = demo.copy_demo(tmp_path)
    # sessions.0001_initial recorded as applied with --fake: django_session was never made.
    demo.manage(project, db, "migrate", "sessions", "--fake")
    demo.manage(project, db, "migrate")
    change_by_hand(db)

    result = run_module(MODULE, demo.module_args(project, db, fail_on_drift=True))

    assert result["failed"] is True
    assert result["drift"] is True
    assert result["msg"] == result["summary"] and result["summary"].startswith("Drift: ")
    found = kinds(result)
    for expected in [("books_book", "extra_column"), ("books_book", "column"),
                     ("books_book", "indexes"), ("books_book", "foreign_keys"),
                     ("hand_made", "extra_table"), ("django_session", "missing_table")]:
        assert expected in found, (expected, found)
    by_kind = dict(((d["table"], d["kind"]), d) for d in result["differences"])
    assert list(by_kind[("books_book", "extra_column")]["live"]) == ["rating"]
    changed = [d for d in result["differences"] if d["kind"] == "column"]
    assert sorted(next(iter(d["live"])) for d in changed) == ["isbn", "title"]
    isbn = [d for d in changed if "isbn" in d["live"]][0]
    assert isbn["expected"]["isbn"]["nullable"] is False and isbn["live"]["isbn"]["nullable"]
    title = [d for d in changed if "title" in d["live"]][0]
    assert title["expected"]["title"]["type"] != title["live"]["title"]["type"]
    missing_fk = by_kind[("books_book", "foreign_keys")]
    assert [fk["ref_table"] for fk in missing_fk["expected"]] == ["authors_author"]
    assert missing_fk["live"] == []
    lines = " | ".join(result["summary_lines"])
    for phrase in ("column books_book.rating is not built by the migrations",
                   "table hand_made is not built by the migrations",
                   "table django_session is missing",
                   "foreign key (author_id) -> authors_author(id)",
                   "column books_book.isbn: ", "nullable true (expected false)"):
        assert phrase in lines, (phrase, lines)
    # Nothing else: the comparison does not invent differences.
    assert set(found) <= {("books_book", "extra_column"), ("books_book", "column"),
                          ("books_book", "indexes"), ("books_book", "foreign_keys"),
                          ("hand_made", "extra_table"), ("django_session", "missing_table")}
    assert_clean_run(result, db)


# -- the scratch database is always dropped --------------------------------------------------------

def test_a_migration_that_fails_in_the_scratch_database_is_reported_and_dropped(
        postgres_database, tmp_path):
    db = postgres_database
    project = demo.copy_demo(tmp_path)
    demo.manage(project, db, "migrate")
    failing = demo.add_failing_migration(project, "runsql")
    demo.manage(project, db, "migrate", "books", failing, "--fake")

    result = run_module(MODULE, demo.module_args(project, db))

    assert result["failed"] is True
    assert "could not be replayed into the scratch database" in result["msg"], result["msg"]
    assert "books.%s failed" % failing in result["msg"]
    assert "was dropped" in result["msg"]
    assert result["migration"] == "books." + failing
    assert scratch_databases(db) == []
    assert db.password not in json.dumps(result)


def _descends_from(pid, ancestor):
    """Whether ``pid`` is ``ancestor`` or one of its descendants (via /proc parent links)."""
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            with open("/proc/%d/stat" % pid) as handle:
                pid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def find_module_process(name, ancestor, timeout=60):
    """The pid of the python process running the module (AnsiballZ runs it in-process), among
    the descendants of ``ancestor`` only: other test runs on the machine are left alone."""
    deadline = time.monotonic() + timeout
    needle = ("AnsiballZ_%s.py" % name).encode()
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as handle:
                    argv = handle.read().split(b"\0")
            except OSError:
                continue
            if any(needle in arg for arg in argv) and b"python" in argv[0] \
                    and _descends_from(int(entry), ancestor):
                return int(entry)
        time.sleep(0.1)
    raise AssertionError("the module process did not show up")


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting for %s" % what)


@pytest.mark.parametrize("engine_fixture, signum", [
    ("postgres_database", signal.SIGTERM), ("mysql_database", signal.SIGINT),
], ids=["postgresql-SIGTERM", "mariadb-SIGINT"])
def test_an_interrupted_module_drops_the_scratch_database(request, tmp_path, engine_fixture,
                                                          signum):
    db = request.getfixturevalue(engine_fixture)
    project = demo.copy_demo(tmp_path)
    demo.manage(project, db, "migrate")
    slow = demo.add_slow_migration(project, 120)
    demo.manage(project, db, "migrate", "books", slow, "--fake")
    marker = demo.slow_marker_path(project)

    with tempfile.TemporaryDirectory(prefix="dbsafe-play-") as play_dir:
        play = os.path.join(play_dir, "play.yml")
        results = os.path.join(play_dir, "results")
        with open(play, "w") as handle:
            json.dump([{"hosts": "localhost", "gather_facts": False, "connection": "local",
                        "tasks": [{"name": "under test",
                                   "dbsafe.django." + MODULE: demo.module_args(project, db)}]}],
                      handle)
        env = ansible_env({"ANSIBLE_CALLBACK_PLUGINS": CALLBACKS,
                           "ANSIBLE_CALLBACKS_ENABLED": "dbsafe_last_result",
                           "DBSAFE_RESULT_DIR": results})
        playbook = subprocess.Popen([_bin("ansible-playbook"), "-i", "localhost,", play],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env=env, cwd=ROOT)
        try:
            module_pid = find_module_process(MODULE, playbook.pid)
            # The slow migration sleeps inside the scratch database's build.
            wait_for(lambda: os.path.exists(marker), 90, "the scratch build to reach %s" % slow)
            with open(marker) as handle:
                project_pid = int(handle.read())
            assert len(scratch_databases(db)) == 1
            os.kill(module_pid, signum)
            output = playbook.communicate(timeout=90)[0]
        finally:
            if playbook.poll() is None:
                playbook.kill()
                playbook.wait()
        with open(os.path.join(results, "localhost")) as handle:
            result = json.load(handle)

    assert scratch_databases(db) == []
    name = signal.Signals(signum).name
    assert "interrupted by %s" % name in result["msg"], (result, output)
    assert "was dropped" in result["msg"]
    wait_for(lambda: not os.path.exists("/proc/%d" % project_pid), 10,
             "the project's interpreter to stop")
    # The live database was not touched: the slow migration is only recorded there.
    assert query_value(db, "SELECT COUNT(*) FROM django_migrations WHERE name = '%s'"
                       % slow) == "1"


def rename_slug_index(db):
    """Give the index on books_book.slug another name than Django's (as another history may)."""
    if db.engine == "postgresql":
        index = _first(db, "SELECT indexname FROM pg_indexes WHERE tablename = 'books_book' "
                           "AND indexdef LIKE '%(slug)';")
        execute(db, 'ALTER INDEX "%s" RENAME TO books_book_slug_renamed;\n' % index)
    else:
        index = _first(db, "SELECT INDEX_NAME FROM information_schema.STATISTICS WHERE "
                           "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'books_book' "
                           "AND COLUMN_NAME = 'slug';")
        execute(db, "ALTER TABLE books_book RENAME INDEX `%s` TO books_book_slug_renamed;\n"
                % index)


def assert_renamed_index_is_harmless(result):
    assert [(d["table"], d["kind"]) for d in result["harmless"]] == [("books_book", "names")]
    assert "books_book_slug_renamed" in result["harmless"][0]["live"]
    assert "only differ in constraint or index names (harmless)" in result["summary"]


# -- who may create the scratch database ----------------------------------------------------------

def test_a_user_without_createdb_is_told_and_scratch_database_helps(postgres_database, tmp_path):
    db = postgres_database
    project = demo.copy_demo(tmp_path)
    demo.manage(project, db, "migrate")
    pg_admin_sql("ALTER ROLE %s NOCREATEDB;\n" % db.user)

    refused = run_module(MODULE, demo.module_args(project, db))

    assert refused["failed"] is True
    assert "may not create a database" in refused["msg"], refused["msg"]
    assert "CREATEDB" in refused["msg"] and "scratch_database" in refused["msg"]
    assert scratch_databases(db) == []

    # The server's superuser (trust authentication here) may: the scratch goes there. An index
    # with another name than Django gave it is a harmless difference, not drift.
    rename_slug_index(db)
    # (Trust authentication ignores the password; it must not show anywhere all the same.)
    helped = run_module(MODULE, demo.module_args(project, db, scratch_database={
        "user": "postgres", "host": db.host, "port": db.port, "password": "scratch-Secret-42"}))

    assert not helped.get("failed"), helped.get("msg")
    assert helped["drift"] is False and helped["differences"] == [], helped["summary"]
    assert_renamed_index_is_harmless(helped)
    assert helped["scratch"]["user"] == "postgres"
    assert "scratch-Secret-42" not in json.dumps(helped)
    assert_clean_run(helped, db)


def test_a_name_prefix_outside_the_grants_is_told_and_one_inside_works(mysql_database, tmp_path):
    db = mysql_database
    project = demo.copy_demo(tmp_path)
    demo.manage(project, db, "migrate")

    refused = run_module(MODULE, demo.module_args(
        project, db, scratch_database={"name_prefix": "elsewhere_"}))

    assert refused["failed"] is True
    assert "may not create a database" in refused["msg"], refused["msg"]
    assert "GRANT ALL ON `elsewhere_%`" in refused["msg"]
    assert db.password not in json.dumps(refused)

    rename_slug_index(db)
    fresh = run_module(MODULE, demo.module_args(project, db, scratch_database={
        "name_prefix": db.name + "_drift_custom_"}))

    assert not fresh.get("failed"), fresh.get("msg")
    assert fresh["drift"] is False and fresh["differences"] == [], fresh["summary"]
    assert_renamed_index_is_harmless(fresh)
    assert fresh["scratch"]["name"].startswith(db.name + "_drift_custom_")
    assert_clean_run(fresh, db)


# -- the playbook -----------------------------------------------------------------------------------

def test_drift_check_playbook_lists_the_hosts_that_drifted(tmp_path):
    project = demo.copy_demo(tmp_path)
    hosts = {}
    for host in ("clean", "drifted"):
        db_path = str(tmp_path / ("%s.sqlite3" % host))
        environment = {"DEMO_DB_ENGINE": "sqlite", "DEMO_DB_NAME": db_path}
        demo.manage(project, None, "migrate", env=environment)
        hosts[host] = {"ansible_connection": "local", "django_project_path": project,
                       "django_python": demo.PYTHONS["5.2"], "django_environment": environment}
    conn = sqlite3.connect(str(tmp_path / "drifted.sqlite3"))
    conn.execute("CREATE TABLE hand_made (id integer PRIMARY KEY)")
    conn.close()
    hosts["unchecked"] = {"ansible_connection": "local",
                          "django_project_path": str(tmp_path / "nowhere")}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"django": {"hosts": hosts}}}}))

    proc = subprocess.run(
        [_bin("ansible-playbook"), "-i", str(inventory),
         os.path.join(ROOT, "playbooks", "drift_check.yml")],
        capture_output=True, text=True, env=ansible_env(), cwd=ROOT, timeout=300, check=False)

    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    summary = output[output.index("TASK [List the hosts whose schema drifted]"):]
    listed = yaml.safe_load(summary[summary.index("msg:"):summary.index("TASK [Fail")])["msg"]
    assert listed["drifted"] == ["drifted"] and listed["clean"] == ["clean"]
    assert "does not exist" in listed["not_checked"]["unchecked"]
    assert "Schema drift on 1 host(s): drifted; not checked: unchecked." in output
    assert "table hand_made is not built by the migrations" in output
    assert glob.glob(str(tmp_path / "*_drift_*")) == []


# -- after our own dump and restore ---------------------------------------------------------------


def test_no_drift_after_our_restore_and_a_later_migration(database, tmp_path):
    """Our dump writes InnoDB's implicit foreign-key index as an explicit KEY; after the restore
    a migration adding an index that starts with the same column leaves it in place (a fresh
    database drops it). Neither that nor any other dump/restore artefact is drift."""
    db = database
    project = demo.copy_demo(tmp_path)
    demo.manage(project, db, "migrate")
    engine = engine_of(db)
    dump = str(tmp_path / "dump")
    with open(dump, "wb") as out:
        engine.dump(out)
    engine.restore(dump)
    demo.add_composite_index_migration(project)
    demo.manage(project, db, "migrate")

    result = run_module(MODULE, demo.module_args(project, db))

    assert not result["failed"], result.get("msg")
    assert result["drift"] is False, result["summary_lines"]
    assert_clean_run(result, db)
