"""Lock-safe migrations (issue 17, item 1) on real PostgreSQL and MariaDB: a migration that meets
another session's lock waits at most db_lock_timeout per try, so the queries queued behind it
wait no longer than that; it is tried again (no restore) until the lock is free, or fails naming
the session that holds it with the database unchanged. Schema operations, RunSQL and RunPython."""
import os
import subprocess
import threading
import time

import pytest

import demo
from ansible_run import run_module
from test_risks import columns, fill_books

LOCK_WAIT = 2
# The blocker's transaction: long enough that the migrate meets it and has to try again.
HELD = 12

ENGINES = ["postgres_database", "mysql_database"]


def client(database, application="shop-report-worker"):
    """A line-by-line client session of the database's own command-line tool."""
    if database.engine == "postgresql":
        argv = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", database.host, "-p",
                str(database.port), "-U", database.user, "-d", database.name]
        env = dict(os.environ, PGPASSWORD=database.password or "", PGAPPNAME=application)
    else:
        argv = ["mariadb", "--unbuffered", "--protocol=TCP", "-h", database.host, "-P", str(database.port),
                "-u", database.user, "-N", "-B", database.name]
        env = dict(os.environ, MYSQL_PWD=database.password or "")  # test-only
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)


class Blocker:
    """Another session: an open transaction that has read (or row-locked) books_book, held until
    ``release`` (or ``seconds`` after it started)."""

    def __init__(self, database, statement="SELECT count(*) FROM books_book;", seconds=None):
        self.process = client(database)
        own_id = "pg_backend_pid()" if database.engine == "postgresql" else "CONNECTION_ID()"
        self.process.stdin.write("BEGIN;\n%s\nSELECT 'held', %s;\n" % (statement, own_id))
        self.process.stdin.flush()
        line = ""
        while "held" not in line:
            line = self.process.stdout.readline()
            assert line, "the blocking session did not start"
        self.session = line.strip().split("|" if database.engine == "postgresql" else "\t")[-1]
        self.timer = threading.Timer(seconds, self.release) if seconds else None
        if self.timer:
            self.timer.start()

    def release(self):
        if self.process.poll() is None:
            self.process.stdin.write("COMMIT;\n")
            self.process.stdin.close()
            self.process.wait(30)

    def stop(self):
        if self.timer:
            self.timer.cancel()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Reader(threading.Thread):
    """A third session running ``SELECT count(*) FROM books_book`` again and again (autocommit,
    one connection): the longest any one of them took is what the site would have felt."""

    def __init__(self, database):
        threading.Thread.__init__(self, daemon=True)
        self.database, self.waits, self.done, self.error = database, [], threading.Event(), None

    def connect(self):
        database = self.database
        if database.engine == "postgresql":
            import psycopg
            return psycopg.connect(host=database.host, port=database.port, user=database.user,
                                   dbname=database.name, password=database.password or None,
                                   autocommit=True)
        import pymysql
        return pymysql.connect(host=database.host, port=int(database.port), user=database.user,
                               password=database.password or "", database=database.name,
                               autocommit=True)

    def run(self):
        try:
            connection = self.connect()
            try:
                cursor = connection.cursor()
                while not self.done.is_set():
                    started = time.monotonic()
                    cursor.execute("SELECT count(*) FROM books_book")
                    cursor.fetchall()
                    self.waits.append(time.monotonic() - started)
                    time.sleep(0.05)
            finally:
                connection.close()
        except Exception as error:  # reported by the test
            self.error = error

    def longest(self):
        self.done.set()
        self.join(60)
        assert self.error is None, self.error
        assert len(self.waits) > 10, self.waits
        return max(self.waits)


def prepared(database, tmp_path, operations, preamble="", model_field=None):
    project = demo.copy_demo(tmp_path)
    demo.manage(project, database, "migrate")
    fill_books(project, database)
    if model_field:
        demo._add_model_field(project, model_field)
    name = demo._write_migration(project, "%s_lock_wait" % demo.next_number(project),
                                 demo.leaf_migration(project), operations, preamble=preamble)
    return project, "books." + name


def migrate(project, database, tmp_path, **options):
    return run_module("django_migrate_guarded", demo.module_args(
        project, database, backup_dir=str(tmp_path / "backups"), db_lock_timeout=LOCK_WAIT, **options))


ADD_COLUMN = "migrations.AddField('book', 'lock_note', models.TextField(null=True)),"
RUN_SQL = ("migrations.RunSQL('ALTER TABLE books_book ADD COLUMN sql_note varchar(20) NULL', "
           "'ALTER TABLE books_book DROP COLUMN sql_note'),")
RUN_PYTHON = "migrations.RunPython(touch_first_book, migrations.RunPython.noop),"
TOUCH = """
def touch_first_book(apps, schema_editor):
    Book = apps.get_model('books', 'Book')
    Book.objects.filter(pk=Book.objects.order_by('pk').values_list('pk', flat=True)[0]).update(
        pages=models.F('pages') + 1)
"""


@pytest.mark.parametrize("fixture", ENGINES)
@pytest.mark.parametrize("step", ["schema operation", "RunSQL"])
def test_a_migration_behind_a_long_transaction_never_holds_readers_up(fixture, step, request, tmp_path):
    database = request.getfixturevalue(fixture)
    if step == "RunSQL":
        project, migration = prepared(database, tmp_path, RUN_SQL)
        column = "sql_note"
    else:
        project, migration = prepared(database, tmp_path, ADD_COLUMN,
                                      model_field="lock_note = models.TextField(null=True)")
        column = "lock_note"
    blocker = Blocker(database, seconds=HELD)
    reader = Reader(database)
    reader.start()
    try:
        result = migrate(project, database, tmp_path)
    finally:
        longest = reader.longest()
        blocker.stop()

    assert not result.get("failed"), result.get("msg")
    # It met the lock, gave up after LOCK_WAIT, was tried again, and went through once free.
    assert result["lock_waits"] and all(wait["migration"] == migration for wait in result["lock_waits"])
    assert column in columns(database)[0]
    assert (migration.split(".")[0], migration.split(".")[1]) in columns(database)[1]
    assert longest <= LOCK_WAIT + 1, "a reader waited %.1f s behind the migration" % longest


@pytest.mark.parametrize("fixture", ENGINES)
@pytest.mark.parametrize("step", ["schema operation", "RunPython"])
def test_retries_used_up_name_the_holder_and_change_nothing(fixture, step, request, tmp_path):
    database = request.getfixturevalue(fixture)
    if step == "RunPython":
        # The row the data migration updates is locked by the other session's transaction.
        project, migration = prepared(database, tmp_path, RUN_PYTHON, preamble=TOUCH)
        statement = "SELECT id FROM books_book ORDER BY id LIMIT 1 FOR UPDATE;"
    else:
        project, migration = prepared(database, tmp_path, ADD_COLUMN,
                                      model_field="lock_note = models.TextField(null=True)")
        statement = "SELECT count(*) FROM books_book;"
    before = columns(database)
    blocker = Blocker(database, statement)
    try:
        started = time.monotonic()
        result = migrate(project, database, tmp_path, db_lock_retries=1)
        took = time.monotonic() - started
    finally:
        blocker.stop()

    assert result.get("failed"), result
    message = result["msg"]
    assert "migration %s failed" % migration in message, message
    assert "gave up waiting for a lock" in message and "2 tries of db_lock_timeout=2s" in message, message
    holder = ("pid %s" if database.engine == "postgresql" else "connection %s") % blocker.session
    assert holder in message and holder in result["lock_holders"], message
    if database.engine == "postgresql":
        assert "application shop-report-worker" in message, message
    assert "Nothing was applied and nothing needed restoring" in message, message
    assert "equals its state before the run" in message, message
    assert result["restored"] is False and result["database_as_before"] is True
    assert len(result["lock_waits"]) == 1
    assert columns(database) == before
    assert took < 60, took


def test_bad_lock_options_change_nothing(postgres_database, tmp_path):
    project, _migration = prepared(postgres_database, tmp_path, ADD_COLUMN,
                                   model_field="lock_note = models.TextField(null=True)")
    before = columns(postgres_database)
    result = migrate(project, postgres_database, tmp_path, db_lock_retries=-1, db_statement_timeout=0)
    assert result.get("failed")
    assert "db_lock_retries must not be negative" in result["msg"], result["msg"]
    assert "db_statement_timeout must be 1 second or more" in result["msg"], result["msg"]
    assert columns(postgres_database) == before
    assert not os.path.exists(str(tmp_path / "backups"))


def test_mariadb_after_partial_ddl_the_backup_is_restored(mysql_database, tmp_path):
    """MariaDB commits DDL as it goes: a step that already created a table when its next statement
    gave up waiting is not tried again - the backup is restored (once the lock is free) and proven."""
    database = mysql_database
    project, migration = prepared(database, tmp_path, "\n".join([
        "migrations.RunSQL('CREATE TABLE lock_side (id integer PRIMARY KEY)', 'DROP TABLE lock_side'),",
        ADD_COLUMN]), model_field="lock_note = models.TextField(null=True)")
    before = columns(database)
    blocker = Blocker(database, seconds=HELD)
    try:
        result = migrate(project, database, tmp_path)
    finally:
        blocker.stop()

    assert result.get("failed"), result
    message = result["msg"]
    assert "migration %s failed" % migration in message and "gave up waiting for a lock" in message, message
    assert "1 try of db_lock_timeout=2s" in message, message  # partial DDL: no retry
    assert "lock_waits" not in result
    assert result["restored"] is True and result["proven"] is True, message
    assert "was restored and verified" in message, message
    assert columns(database) == before
    import pymysql
    connection = pymysql.connect(host=database.host, port=int(database.port), user=database.user,
                                 password=database.password or "", database=database.name)
    try:
        cursor = connection.cursor()
        cursor.execute("SHOW TABLES LIKE 'lock_side'")
        assert cursor.fetchall() == ()
    finally:
        connection.close()


def test_postgresql_a_concurrent_index_build_that_gave_up_is_restored_not_retried(postgres_database, tmp_path):
    """CREATE INDEX CONCURRENTLY (a non-atomic step) waits for older transactions; giving up leaves
    an INVALID index, so the step is not tried again over it: the backup is restored once the lock
    is free, and no index is left."""
    database = postgres_database
    project, migration = prepared(
        database, tmp_path,
        # The database side only: the models stay as they are (no index in the model state).
        "migrations.SeparateDatabaseAndState(database_operations=[\n"
        "    AddIndexConcurrently('book', models.Index(fields=['title'], name='book_title_lock_idx'))]),",
        preamble="from django.contrib.postgres.operations import AddIndexConcurrently\n")
    path = os.path.join(demo.migrations_dir(project), migration.split(".")[1] + ".py")
    with open(path) as handle:
        source = handle.read()
    with open(path, "w") as handle:  # a concurrent build cannot run in a transaction
        handle.write(source.replace("class Migration(migrations.Migration):\n",
                                    "class Migration(migrations.Migration):\n    atomic = False\n"))
    before = columns(database)
    # A transaction holding a snapshot: the concurrent build waits for it to end.
    blocker = Blocker(database, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM books_book;",
                      seconds=8)
    try:
        result = migrate(project, database, tmp_path)
    finally:
        blocker.stop()

    assert result.get("failed"), result
    message = result["msg"]
    assert "gave up waiting for a lock" in message and "1 try of db_lock_timeout=2s" in message, message
    assert "lock_waits" not in result
    assert result["restored"] is True and result["proven"] is True, message
    assert columns(database) == before
    import psycopg
    with psycopg.connect(host=database.host, port=database.port, user=database.user, dbname=database.name,
                         password=database.password or None) as connection:
        assert connection.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'book_title_lock_idx'"
                                  ).fetchone()[0] == 0
