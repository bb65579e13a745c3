"""The engines against the real servers: dump, restore, snapshot, lock, errors, secrecy."""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from runner_double import (
    add_bulk_rows,
    connection_of,
    engine_of,
    execute,
    make_runner,
    query_value,
    seed,
)

from ansible_collections.dbsafe.django.plugins.module_utils.engines.registry import engine_for
from ansible_collections.dbsafe.django.plugins.module_utils.engines.base import (
    canonical_json,
    normalize_expression,
    split_type,
)
from ansible_collections.dbsafe.django.plugins.module_utils.engines.mysql import (
    client_understands_sandbox,
    lock_name,
    option_value,
    quote_identifier,
)
from ansible_collections.dbsafe.django.plugins.module_utils.engines.postgresql import (
    RESTRICT_FILTER,
    conninfo_value,
    psql_understands_restrict,
)
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    EngineError,
    LockTimeout,
)
from ansible_collections.dbsafe.django.plugins.module_utils.snapshots import diff_snapshots

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, ".collections")


def dump_to(engine, path, fmt=None, jobs=1):
    if engine.is_directory_format(fmt):
        engine.dump(path, fmt=fmt, jobs=jobs)
    else:
        with open(path, "wb") as out:
            engine.dump(out, fmt=fmt, jobs=jobs)
    return path


def restore_from(engine, path, fmt=None, jobs=1):
    if engine.is_directory_format(fmt):
        engine.restore(path, fmt=fmt, jobs=jobs)
    else:
        with open(path, "rb") as src:
            engine.restore(src, fmt=fmt, jobs=jobs)


def mutate(db):
    """Delete rows, add a table, drop a column: everything a restore must undo."""
    execute(db, "DELETE FROM django_migrations WHERE name = '0002_product_photo';")
    execute(db, "DELETE FROM shop_product WHERE title = 'nothing';")
    execute(db, "CREATE TABLE made_later (id integer PRIMARY KEY, note varchar(10));")
    execute(db, "ALTER TABLE shop_product DROP COLUMN notes;")


def kinds(differences):
    return sorted(set(d["kind"] for d in differences))


# -- round trips --------------------------------------------------------------------------------

def test_dump_mutate_restore_gives_back_the_same_snapshot(database, tmp_path):
    seed(database)
    engine = engine_of(database)
    before = engine.snapshot()
    assert before["migrations"] == [["contenttypes", "0001_initial"], ["shop", "0001_initial"],
                                    ["shop", "0002_product_photo"]]
    assert before["tables"]["shop_product"]["rows"] == 3
    dump = dump_to(engine, str(tmp_path / "dump"))
    mutate(database)
    mutated = engine.snapshot()
    assert kinds(diff_snapshots(before, mutated)) == ["extra_table", "migrations",
                                                      "missing_column", "rows"]
    restore_from(engine, dump)
    after = engine.snapshot()
    assert diff_snapshots(before, after) == []
    assert after == before  # schema, row counts, hashes, migrations and fingerprint
    assert "made_later" not in after["schema"]


def test_pg_directory_format_with_two_jobs_round_trips(postgres_database, tmp_path):
    seed(postgres_database)
    add_bulk_rows(postgres_database, 2000)
    engine = engine_of(postgres_database)
    before = engine.snapshot()
    directory = str(tmp_path / "dump.d")
    engine.dump(directory, fmt="directory", jobs=2)
    assert os.path.isfile(os.path.join(directory, "toc.dat"))
    mutate(postgres_database)
    engine.restore(directory, fmt="directory", jobs=2)
    assert engine.snapshot() == before


def test_pg_custom_format_restores_in_parallel_from_a_file(postgres_database, tmp_path):
    seed(postgres_database)
    engine = engine_of(postgres_database)
    before = engine.snapshot()
    dump = dump_to(engine, str(tmp_path / "dump.pgdump"), fmt="custom")
    mutate(postgres_database)
    restore_from(engine, dump, fmt="custom", jobs=2)
    assert engine.snapshot() == before


def test_pg_plain_format_round_trips_with_and_without_the_restrict_filter(
        postgres_database, tmp_path):
    seed(postgres_database)
    engine = engine_of(postgres_database)
    before = engine.snapshot()
    dump = dump_to(engine, str(tmp_path / "dump.sql"), fmt="plain")
    with open(dump, "rb") as handle:
        text = handle.read()
    assert b"CREATE TABLE public.shop_product" in text
    versions = engine.tool_versions()
    if psql_understands_restrict(versions["pg_dump"]):
        assert text.startswith(b"--") and b"\n\\restrict " in text
    filtered = subprocess.run(["sed", "-E", RESTRICT_FILTER, dump], capture_output=True,
                              check=True).stdout
    assert b"restrict" not in filtered
    assert filtered.count(b"\n") == text.count(b"\n") - 2 * text.count(b"\n\\restrict ")
    # An older psql rejects \restrict; the filter drops those lines on the way in.
    for filter_restrict in (True, False):
        engine.filter_restrict = filter_restrict
        mutate(postgres_database)
        restore_from(engine, dump, fmt="plain")
        assert engine.snapshot() == before


def test_mysql_dump_sandbox_line_is_handled(mysql_database, tmp_path):
    seed(mysql_database)
    engine = engine_of(mysql_database)
    before = engine.snapshot()
    dump = dump_to(engine, str(tmp_path / "dump.sql"))
    with open(dump, "rb") as handle:
        first = handle.readline()
        rest = handle.read()
    assert b"CREATE DATABASE" not in rest and b"\nUSE " not in rest
    if "MariaDB" in engine.tool_versions().get("mariadb-dump", "MariaDB"):
        assert first.startswith(b"/*M!999999\\- enable the sandbox mode */")
    # An older (or MySQL's) client stops on that line: the filter strips it.
    for filter_sandbox in (True, False):
        engine.filter_sandbox = filter_sandbox
        mutate(mysql_database)
        restore_from(engine, dump)
        assert engine.snapshot() == before
    filtered = subprocess.run(["sed", "-e", r"1{/^\/\*M!999999/d;}", dump], capture_output=True,
                              check=True).stdout
    assert not filtered.startswith(b"/*M!999999") and filtered.endswith(rest)


def test_restore_into_another_database(database, tmp_path):
    seed(database)
    engine = engine_of(database)
    before = engine.snapshot()
    other_name = (database.name + ".copy") if database.engine == "sqlite" else \
        database.name + "_copy"
    assert not engine.database_exists(other_name)
    engine.create_database(other_name)
    assert engine.database_exists(other_name)
    other = engine.for_database(other_name)
    dump = dump_to(engine, str(tmp_path / "dump"))
    restore_from(other, dump)
    copy = other.snapshot()
    assert copy["schema"] == before["schema"] and copy["tables"] == before["tables"]
    assert copy["migrations"] == before["migrations"]
    engine.drop_database(other_name)
    assert not engine.database_exists(other_name)
    assert engine.snapshot() == before


# -- snapshot -----------------------------------------------------------------------------------

COLUMN_ORDER_DDL = {
    "first": "CREATE TABLE {t} (a integer NOT NULL, b varchar(20) NULL, c decimal(8, 3) "
             "NOT NULL DEFAULT 1);",
    "second": "CREATE TABLE {t} (c decimal(8, 3) NOT NULL DEFAULT 1, a integer NOT NULL, "
              "b varchar(20) NULL);",
}


def test_snapshot_does_not_depend_on_column_order(database):
    execute(database, COLUMN_ORDER_DDL["first"].format(t="order_one"))
    execute(database, COLUMN_ORDER_DDL["second"].format(t="order_two"))
    execute(database, "INSERT INTO order_one (a, b, c) VALUES (1, 'x', 2.5), (2, NULL, 3);")
    execute(database, "INSERT INTO order_two (a, b, c) VALUES (2, NULL, 3), (1, 'x', 2.5);")
    snapshot = engine_of(database).snapshot()
    assert snapshot["schema"]["order_one"] == snapshot["schema"]["order_two"]
    assert snapshot["tables"]["order_one"] == snapshot["tables"]["order_two"]
    assert snapshot["migrations"] is None  # no django_migrations table


def test_snapshot_without_content_has_the_same_schema_and_migrations(database):
    seed(database)
    engine = engine_of(database)
    full = engine.snapshot()
    light = engine.snapshot(content=False)
    assert full["tables"]["shop_product"]["rows"] == 3  # the full one did read the rows
    assert light["tables"] == {}
    assert light["schema"] == full["schema"]
    assert light["fingerprint"] == full["fingerprint"]
    assert light["migrations"] == full["migrations"] == [
        ["contenttypes", "0001_initial"], ["shop", "0001_initial"],
        ["shop", "0002_product_photo"]]
    assert sorted(light) == sorted(full)
    assert diff_snapshots(full, light, data=False) == []
    # Without django_migrations: no migration rows either way, the same schema still.
    execute(database, "DROP TABLE django_migrations;")
    full, light = engine.snapshot(), engine.snapshot(content=False)
    assert "django_migrations" not in light["schema"]
    assert light["migrations"] is None and full["migrations"] is None
    assert light["tables"] == {}
    assert (light["schema"], light["fingerprint"]) == (full["schema"], full["fingerprint"])


def test_snapshot_content_hash_ignores_physical_row_order(database):
    seed(database)
    engine = engine_of(database)
    before = engine.snapshot()
    execute(database, "DELETE FROM django_migrations;")
    execute(database, "INSERT INTO django_migrations (id, app, name, applied) VALUES "
                      "(3, 'shop', '0002_product_photo', '2024-01-01 00:00:02'), "
                      "(1, 'contenttypes', '0001_initial', '2024-01-01 00:00:00'), "
                      "(2, 'shop', '0001_initial', '2024-01-01 00:00:01');")
    assert diff_snapshots(before, engine.snapshot()) == []


_SQLITE_CATEGORY = ('CREATE TABLE "new_cat" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, '
                    '"name" varchar(100) NOT NULL UNIQUE, "slug" {slug});'
                    'INSERT INTO "new_cat" SELECT id, name, slug FROM shop_category;'
                    'DROP TABLE shop_category; ALTER TABLE "new_cat" RENAME TO shop_category;'
                    'CREATE INDEX "shop_category_slug_idx" ON "shop_category" ("slug");')
_SQLITE_PRODUCT = ('PRAGMA foreign_keys = OFF;'
                   'CREATE TABLE "new_prod" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, '
                   '"title" varchar(200) {title}, "price" decimal(10, 2) NOT NULL DEFAULT 0, '
                   '"stock" integer unsigned NOT NULL CHECK ("stock" >= 0), "photo" BLOB NULL, '
                   '"notes" text NULL, "category_id" bigint NULL {fk}, "created" datetime NOT '
                   'NULL);'
                   'INSERT INTO "new_prod" SELECT id, title, price, stock, photo, notes, '
                   'category_id, created FROM shop_product;'
                   'DROP TABLE shop_product; ALTER TABLE "new_prod" RENAME TO shop_product;'
                   'CREATE INDEX "shop_product_category_id_idx" ON "shop_product" '
                   '("category_id");'
                   'CREATE UNIQUE INDEX "shop_product_title_cat_uniq" ON "shop_product" '
                   '("title", "category_id");')
_SQLITE_FK = 'REFERENCES "shop_category" ("id") DEFERRABLE INITIALLY DEFERRED'

# name -> (sql per engine, the difference kind it must produce)
CHANGES = {
    "changed type": ({
        "sqlite": _SQLITE_CATEGORY.format(slug="varchar(60) NOT NULL"),
        "postgresql": "ALTER TABLE shop_category ALTER COLUMN slug TYPE varchar(60);",
        "mysql": "ALTER TABLE shop_category MODIFY slug varchar(60) NOT NULL;",
    }, "column"),
    "changed nullability": ({
        "sqlite": _SQLITE_PRODUCT.format(title="NULL", fk=_SQLITE_FK),
        "postgresql": "ALTER TABLE shop_product ALTER COLUMN title DROP NOT NULL;",
        "mysql": "ALTER TABLE shop_product MODIFY title varchar(200) NULL;",
    }, "column"),
    "dropped index": ({
        "sqlite": "DROP INDEX shop_category_slug_idx;",
        "postgresql": "DROP INDEX shop_category_slug_idx;",
        "mysql": "DROP INDEX shop_category_slug_idx ON shop_category;",
    }, "indexes"),
    "removed foreign key": ({
        "sqlite": _SQLITE_PRODUCT.format(title="NOT NULL", fk=""),
        "postgresql": "ALTER TABLE shop_product DROP CONSTRAINT shop_product_category_fk;",
        "mysql": "ALTER TABLE shop_product DROP FOREIGN KEY shop_product_category_fk;",
    }, "foreign_keys"),
    "extra table": ({
        "sqlite": "CREATE TABLE extra_t (id integer);",
        "postgresql": "CREATE TABLE extra_t (id integer);",
        "mysql": "CREATE TABLE extra_t (id integer);",
    }, "extra_table"),
    "changed row": ({
        "sqlite": "UPDATE shop_product SET notes = 'changed' WHERE title = 'nothing';",
        "postgresql": "UPDATE shop_product SET notes = 'changed' WHERE title = 'nothing';",
        "mysql": "UPDATE shop_product SET notes = 'changed' WHERE title = 'nothing';",
    }, "content"),
}


def test_snapshot_detects_each_kind_of_change(database):
    seed(database)
    engine = engine_of(database)
    for change, (sql, kind) in CHANGES.items():
        before = engine.snapshot()
        execute(database, sql[database.engine])
        after = engine.snapshot()
        differences = diff_snapshots(before, after)
        assert kind in kinds(differences), (change, differences)
        if kind in ("content", "extra_table"):
            assert before["fingerprint"] == after["fingerprint"] or kind == "extra_table"
        if kind not in ("content",):
            assert before["fingerprint"] != after["fingerprint"], change


def test_snapshot_sees_checks_uniques_and_nulls(database):
    seed(database)
    schema = engine_of(database).snapshot()["schema"]
    product = schema["shop_product"]
    assert product["checks"] == ["stock >= 0"]
    assert product["columns"]["notes"]["nullable"] is True
    assert product["columns"]["title"]["nullable"] is False
    assert product["columns"]["title"]["length"] == 200
    assert product["columns"]["price"]["precision"] == 10
    assert product["foreign_keys"][0]["columns"] == ["category_id"]
    assert product["foreign_keys"][0]["ref_table"] == "shop_category"
    assert ["name"] in schema["shop_category"]["unique"]
    assert {"columns": ["slug"], "unique": False}.items() <= \
        schema["shop_category"]["indexes"][0].items()
    assert set(schema) == {"shop_category", "shop_product", "django_migrations"}


# -- failures -----------------------------------------------------------------------------------

def test_restore_of_a_broken_dump_stops_at_the_first_error(database, tmp_path):
    seed(database)
    engine = engine_of(database)
    good = dump_to(engine, str(tmp_path / "dump"))
    execute(database, "CREATE TABLE made_later (id integer PRIMARY KEY);")
    before = engine.snapshot()
    broken = str(tmp_path / "broken")
    if database.engine == "sqlite":
        with open(broken, "wb") as handle:
            handle.write(b"this is not a database\n" * 100)
        expected = "not a SQLite database"
    else:
        fmt = "plain" if database.engine == "postgresql" else None
        text = open(dump_to(engine, str(tmp_path / "plain"), fmt=fmt), "rb").read()
        marker = b"CREATE TABLE"
        cut = text.index(marker)
        text = (text[:cut] + b"THIS IS NOT SQL;\nCREATE TABLE after_error (id int);\n"
                + text[cut:])
        with open(broken, "wb") as handle:
            handle.write(text)
        expected = "syntax"
    with pytest.raises(EngineError) as failure:
        restore_from(engine, broken, fmt="plain" if database.engine == "postgresql" else None)
    message = failure.value.msg
    assert expected in message, message
    assert database.engine in message
    after = engine.snapshot()
    assert "after_error" not in after["schema"]  # nothing after the first error ran
    # Every engine restores atomically (MySQL: a scratch database swapped in): nothing changed.
    assert after == before
    assert "was not changed" in message or database.engine == "sqlite"
    restore_from(engine, good)  # the good dump still restores
    assert "made_later" not in engine.snapshot()["schema"]


def test_a_pg_directory_restore_with_one_job_is_one_transaction(postgres_database, tmp_path):
    """A directory backup restored with one job goes through the same one-transaction path as
    the other formats: a data file that breaks off half-way changes nothing."""
    seed(postgres_database)
    engine = engine_of(postgres_database)
    directory = dump_to(engine, str(tmp_path / "dump.pgdir"), fmt="directory")
    execute(postgres_database, "CREATE TABLE made_later (id integer PRIMARY KEY);")
    before = engine.snapshot()
    data = max((os.path.join(directory, name) for name in os.listdir(directory) if name.endswith(".dat.gz")
                or name.endswith(".dat")), key=os.path.getsize)
    with open(data, "r+b") as handle:  # the archive's biggest table data, cut short
        handle.truncate(os.path.getsize(data) // 2)

    with pytest.raises(EngineError) as failure:
        restore_from(engine, directory, fmt="directory")

    assert "was not changed" in failure.value.msg, failure.value.msg
    assert engine.snapshot() == before


def test_truncated_custom_dump_is_refused_with_a_clear_error(postgres_database, tmp_path):
    seed(postgres_database)
    engine = engine_of(postgres_database)
    dump = dump_to(engine, str(tmp_path / "dump.pgdump"), fmt="custom")
    before = engine.snapshot()
    data = open(dump, "rb").read()
    with open(dump, "wb") as handle:
        handle.write(data[:len(data) // 2])
    with pytest.raises(EngineError) as failure:
        restore_from(engine, dump, fmt="custom")
    assert "pg_restore" in failure.value.msg or "restore" in failure.value.msg
    assert engine.snapshot() == before


class RejectingPostgresServer:
    """Answers every PostgreSQL login with the server's 'password authentication failed'.

    The test server trusts every local login, so a wrong password cannot fail there; this
    stand-in speaks just enough of the protocol for the real psql to hear the real message.
    """

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                client, _address = self.sock.accept()
            except OSError:
                return
            with client:
                try:
                    self._reject(client)
                except OSError:
                    pass

    @staticmethod
    def _read_message(client):
        length = struct.unpack("!I", client.recv(4, socket.MSG_WAITALL))[0]
        return client.recv(length - 4, socket.MSG_WAITALL)

    def _reject(self, client):
        while True:
            body = self._read_message(client)
            code = struct.unpack("!I", body[:4])[0]
            if code in (80877103, 80877104):  # SSLRequest / GSSENCRequest: not here
                client.sendall(b"N")
                continue
            break
        params = body[4:].split(b"\0")
        user = params[params.index(b"user") + 1].decode()
        client.sendall(b"R" + struct.pack("!II", 8, 3))  # cleartext password, please
        client.recv(1)
        self._read_message(client)
        message = 'password authentication failed for user "%s"' % user
        fields = b"SFATAL\0VFATAL\0C28P01\0M" + message.encode() + b"\0\0"
        client.sendall(b"E" + struct.pack("!I", len(fields) + 4) + fields)

    def close(self):
        self.sock.close()


def test_wrong_password_is_named_postgresql(postgres_database):
    engine_of(postgres_database).ping()
    try:
        engine_of(postgres_database, password="wrong-password").ping()
    except EngineError as error:
        failure = error  # a server that checks passwords
        port = postgres_database.port
    else:
        server = RejectingPostgresServer()
        try:
            with pytest.raises(EngineError) as raised:
                engine_of(postgres_database, password="wrong-password", port=server.port).ping()
        finally:
            server.close()
        failure, port = raised.value, server.port
    assert failure.msg.startswith(
        "authentication failed for user %r on postgresql database %r at 127.0.0.1:%s"
        % (postgres_database.user, postgres_database.name, port)), failure.msg
    assert "wrong-password" not in json.dumps(failure.details) + failure.msg


def test_wrong_password_is_named_mysql(mysql_database):
    with pytest.raises(EngineError) as failure:
        engine_of(mysql_database, password="wrong-password").ping()
    assert failure.value.msg.startswith("authentication failed for user %r"
                                        % mysql_database.user), failure.value.msg
    assert "wrong-password" not in json.dumps(failure.value.details) + failure.value.msg


@pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])
def test_down_server_and_missing_tool_are_named(engine_name, request, monkeypatch):
    db = request.getfixturevalue("postgres_database" if engine_name == "postgresql"
                                 else "mysql_database")
    with pytest.raises(EngineError) as failure:
        engine_of(db, port=1).ping()
    assert failure.value.msg.startswith("cannot connect to %s database %r at %s:1"
                                        % (engine_name, db.name, db.host)), failure.value.msg
    with monkeypatch.context() as patch:
        patch.setenv("PATH", "/nonexistent")
        with pytest.raises(EngineError) as failure:
            engine_of(db).ping()
    assert "is not installed" in failure.value.msg


def test_sqlite_missing_file_is_named(sqlite_database):
    connection = connection_of(sqlite_database, name=sqlite_database.name + ".missing")
    with pytest.raises(EngineError) as failure:
        engine_for(connection, make_runner()).ping()
    assert "does not exist" in failure.value.msg


# -- locks --------------------------------------------------------------------------------------

def test_second_lock_times_out_naming_the_holder(database):
    engine = engine_of(database)
    other = engine_of(database)
    with engine.lock("migrate", timeout=5) as holder:
        assert holder["pid"] == os.getpid()
        started = time.monotonic()
        with pytest.raises(LockTimeout) as failure:
            with other.lock("migrate", timeout=0.5):
                pass
        assert 0.45 <= time.monotonic() - started < 5
        message = failure.value.msg
        assert "pid %d" % os.getpid() in message, message
        assert "host %s" % holder["host"] in message
        assert "since %s" % holder["since"] in message
        with other.lock("another-name", timeout=1):
            pass  # other names are other locks
    with other.lock("migrate", timeout=2):
        pass


HOLDER_SCRIPT = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
from runner_double import make_runner
from ansible_collections.dbsafe.django.plugins.module_utils.connection import Connection
from ansible_collections.dbsafe.django.plugins.module_utils.engines.registry import engine_for
params = json.loads(sys.stdin.readline())
engine = engine_for(Connection.from_params(params), make_runner())
with engine.lock("migrate", timeout=5):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_killed_holder_releases_the_lock(database):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, COLLECTIONS,
         os.path.join(ROOT, "tests", "integration")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        holder.stdin.write((json.dumps(database.connection()) + "\n").encode())
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == b"locked", holder.stderr.read()
        engine = engine_of(database)
        with pytest.raises(LockTimeout) as failure:
            with engine.lock("migrate", timeout=0.5):
                pass
        assert "pid %d" % holder.pid in failure.value.msg
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        started = time.monotonic()
        with engine.lock("migrate", timeout=15):
            assert time.monotonic() - started < 10
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


# -- secrets ------------------------------------------------------------------------------------

class CommandLineWatcher:
    """Polls /proc/*/cmdline of every process while something runs."""

    def __init__(self):
        self.seen = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()

    def _poll(self):
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open("/proc/%s/cmdline" % pid, "rb") as handle:
                        raw = handle.read()
                except OSError:
                    continue
                if raw:
                    self.seen.add(raw.replace(b"\0", b" ").decode("utf-8", "replace"))
            time.sleep(0.001)


@pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])
def test_the_password_never_appears_on_a_command_line(engine_name, request, tmp_path):
    db = request.getfixturevalue("postgres_database" if engine_name == "postgresql"
                                 else "mysql_database")
    seed(db)
    add_bulk_rows(db, 20000)
    engine = engine_of(db)
    dump_tool = "pg_dump" if engine_name == "postgresql" else "-dump"
    with CommandLineWatcher() as watcher:
        dump = dump_to(engine, str(tmp_path / "dump"))
        restore_from(engine, dump)
        with engine.lock("migrate", timeout=5):
            time.sleep(0.3)
        engine.snapshot()
    assert any(dump_tool in line for line in watcher.seen), "the watcher saw no dump running"
    leaks = [line for line in watcher.seen if db.password in line]
    assert leaks == []
    # The private option file is gone afterwards. The watcher sees every process on the
    # machine: other runs' clients (their databases, their option files, maybe still in use)
    # are not ours to judge, so only the command lines naming our database count.
    if engine_name == "mysql":
        assert not [line for line in watcher.seen if "--defaults-file=" in line and db.name in line
                    and os.path.exists(line.split("--defaults-file=")[1].split(" ")[0])]


# -- pure helpers -------------------------------------------------------------------------------

def test_version_rules_for_restrict_and_sandbox():
    assert psql_understands_restrict("psql (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)")
    assert psql_understands_restrict("psql (PostgreSQL) 17.6")
    assert psql_understands_restrict("psql (PostgreSQL) 18.0")
    assert not psql_understands_restrict("psql (PostgreSQL) 15.13")
    assert not psql_understands_restrict("psql (PostgreSQL) 12.22")
    assert client_understands_sandbox("mariadb  Ver 15.1 Distrib 10.11.19-MariaDB, for debian")
    assert client_understands_sandbox("mariadb from 11.8.2-MariaDB, client 15.2 Distrib "
                                      "11.8.2-MariaDB")
    assert not client_understands_sandbox("mysql  Ver 15.1 Distrib 10.11.6-MariaDB, for linux")
    assert not client_understands_sandbox("mysql  Ver 8.0.36 for Linux on x86_64 (MySQL)")


def test_quoting_helpers():
    assert quote_identifier("a`b") == "`a``b`"
    assert option_value('p"w\\d') == '"p\\"w\\\\d"'
    assert conninfo_value("it's") == "'it\\'s'"
    assert len(lock_name("d" * 80, "migrate")) <= 64
    assert split_type("timestamp(3) with time zone") == ("timestamp with time zone", ["3"])
    assert split_type("numeric(10, 2)") == ("numeric", ["10", "2"])
    assert normalize_expression('CHECK ((("stock" >= 0)))') == "stock >= 0"
    assert canonical_json({"b": [1], "a": "é"}) == '{"a":"é","b":[1]}'


def test_sqlite_lock_file_holds_a_readable_holder(sqlite_database):
    engine = engine_of(sqlite_database)
    with engine.lock(timeout=1) as holder:
        with open(engine.lock_path(), "rb") as handle:
            assert json.loads(handle.read().decode()) == holder
        assert oct(os.stat(engine.lock_path()).st_mode & 0o777) == "0o600"
    # A clean release leaves no file beside the database.
    assert not os.path.exists(engine.lock_path())


def test_sqlite_lock_stays_exclusive_while_releases_remove_the_file(sqlite_database):
    """Each release removes the lock file while others wait on it: still one holder at a time."""
    engine = engine_of(sqlite_database)
    inside, overlaps, errors = [], [], []

    def take_it_a_few_times():
        try:
            for _round in range(15):
                with engine.lock(timeout=30):
                    inside.append(1)
                    if len(inside) > 1:
                        overlaps.append(len(inside))
                    time.sleep(0.002)
                    inside.pop()
        except Exception as error:  # reported below
            errors.append(error)

    workers = [threading.Thread(target=take_it_a_few_times) for _worker in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert errors == [] and overlaps == []
    assert not os.path.exists(engine.lock_path())


def test_query_value_helper_works(database):
    seed(database)
    assert query_value(database, "SELECT count(*) FROM shop_product") == "3"


def test_row_counts_are_the_snapshots_counts_without_reading_the_rows(database):
    seed(database)
    engine = engine_of(database)
    full = engine.snapshot()

    counts = engine.row_counts()

    assert counts == dict((table, entry["rows"]) for table, entry in full["tables"].items())
    assert counts["shop_product"] == 3
