"""The risk of every pending operation (issue 17, item 2) on real SQLite, PostgreSQL and MariaDB:
one migration with every operation of the acceptance list against a filled books table, the
rows and size read back independently, and max_risk refusing with nothing changed."""
import os
import sqlite3
import subprocess
import time

import pytest

import demo
from ansible_run import run_module

ROWS = 3000

# The operations of the migration, in order, as (name in the test, operation source).
OPERATIONS = [
    ("add nullable", "migrations.AddField('book', 'rating', models.IntegerField(null=True)),"),
    ("add not null, python default", "migrations.AddField('book', 'edition', models.IntegerField(default=1)),"),
    ("add not null, db_default", "migrations.AddField('book', 'printed', models.IntegerField(db_default=1)),"),
    ("add foreign key", "migrations.AddField('book', 'editor', models.ForeignKey('authors.Author', "
                        "on_delete=models.SET_NULL, null=True, related_name='+')),"),
    ("remove field", "migrations.RemoveField('book', 'isbn'),"),
    ("rename field", "migrations.RenameField('book', 'cover', 'cover_image'),"),
    ("alter type", "migrations.AlterField('book', 'pages', models.BigIntegerField(null=True)),"),
    ("add index", "migrations.AddIndex('book', models.Index(fields=['title'], name='book_title_risk_idx')),"),
    ("check constraint", "migrations.AddConstraint('book', models.CheckConstraint(condition=models.Q(pages__gte=0), "
                         "name='book_pages_risk_check')),"),
    ("unique constraint", "migrations.AddConstraint('book', models.UniqueConstraint(fields=['slug', 'title'], "
                          "name='book_slug_title_risk_uniq')),"),
    ("runsql", "migrations.RunSQL('SELECT 1', migrations.RunSQL.noop),"),
    ("runpython", "migrations.RunPython(touch, migrations.RunPython.noop),"),
]

# What each engine's server does with them (PostgreSQL 15, MariaDB 10.11, SQLite 3.35+).
EXPECTED = {
    "postgresql": ["safe", "incompatible", "safe", "locks", "data_loss", "incompatible", "incompatible", "locks",
                   "locks", "locks", "locks", "locks"],
    "mysql": ["safe", "incompatible", "safe", "locks", "data_loss", "incompatible", "incompatible", "safe",
              "locks", "safe", "locks", "locks"],
    "sqlite": ["safe", "incompatible", "locks", "locks", "data_loss", "incompatible", "incompatible", "locks",
               "locks", "locks", "locks", "locks"],
}


def write_risky_migration(project):
    return demo._write_migration(
        project, "%s_risky" % demo.next_number(project), demo.leaf_migration(project),
        "\n".join(source for _name, source in OPERATIONS),
        preamble="def touch(apps, schema_editor):\n    pass\n")


def fill_books(project, database):
    demo.django_json(project, database, """
        from books.models import Book
        Book.objects.bulk_create([Book(title="title %%d" %% i, isbn="%%013d" %% i, slug="s%%d" %% i, pages=i)
                                  for i in range(%d)])
        result = Book.objects.count()
    """ % ROWS)


def independent_size(database):
    """The books table's rows and size read with the database's own driver, not our code."""
    if database.engine == "postgresql":
        import psycopg
        with psycopg.connect(host=database.host, port=database.port, user=database.user,
                             dbname=database.name, password=database.password or None) as conn:
            conn.execute("ANALYZE books_book")
            rows = conn.execute("SELECT count(*) FROM books_book").fetchone()[0]
            size = conn.execute("SELECT pg_total_relation_size('books_book')").fetchone()[0]
        return rows, size
    if database.engine == "mysql":
        import pymysql
        conn = pymysql.connect(host=database.host, port=int(database.port), user=database.user,
                               password=database.password or "", database=database.name)
        try:
            cursor = conn.cursor()
            cursor.execute("ANALYZE TABLE books_book")
            cursor.fetchall()
            cursor.execute("SELECT count(*) FROM books_book")
            rows = cursor.fetchone()[0]
            cursor.execute("SELECT DATA_LENGTH + INDEX_LENGTH FROM information_schema.tables "
                           "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'books_book'")
            size = cursor.fetchone()[0]
        finally:
            conn.close()
        return rows, size
    conn = sqlite3.connect(database.name)
    try:
        rows = conn.execute("SELECT count(*) FROM books_book").fetchone()[0]
        size = conn.execute("SELECT SUM(pgsize) FROM dbstat WHERE name = 'books_book'").fetchone()[0]
    finally:
        conn.close()
    return rows, size


def columns(database):
    """books_book's columns and django_migrations' rows, read independently."""
    if database.engine == "postgresql":
        import psycopg
        with psycopg.connect(host=database.host, port=database.port, user=database.user,
                             dbname=database.name, password=database.password or None) as conn:
            cols = [r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE "
                                               "table_name = 'books_book' ORDER BY ordinal_position")]
            applied = conn.execute("SELECT app, name FROM django_migrations ORDER BY id").fetchall()
            rows = conn.execute("SELECT count(*) FROM books_book").fetchone()[0]
        return cols, [tuple(a) for a in applied], rows
    if database.engine == "mysql":
        import pymysql
        conn = pymysql.connect(host=database.host, port=int(database.port), user=database.user,
                               password=database.password or "", database=database.name)
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT COLUMN_NAME FROM information_schema.columns WHERE TABLE_SCHEMA = DATABASE() "
                           "AND TABLE_NAME = 'books_book' ORDER BY ORDINAL_POSITION")
            cols = [r[0] for r in cursor.fetchall()]
            cursor.execute("SELECT app, name FROM django_migrations ORDER BY id")
            applied = [tuple(r) for r in cursor.fetchall()]
            cursor.execute("SELECT count(*) FROM books_book")
            rows = cursor.fetchone()[0]
        finally:
            conn.close()
        return cols, applied, rows
    conn = sqlite3.connect(database.name)
    try:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(books_book)")]
        applied = conn.execute("SELECT app, name FROM django_migrations ORDER BY id").fetchall()
        rows = conn.execute("SELECT count(*) FROM books_book").fetchone()[0]
    finally:
        conn.close()
    return cols, applied, rows


@pytest.fixture
def filled(database, tmp_path):
    project = demo.copy_demo(tmp_path)
    demo.manage(project, database, "migrate")
    fill_books(project, database)
    name = write_risky_migration(project)
    return project, database, name


def test_every_operation_has_its_engines_risk_and_the_live_table_size(filled):
    project, database, name = filled
    rows, size = independent_size(database)
    assert rows == ROWS and size > 0

    result = run_module("django_showmigrations", demo.module_args(project, database))

    assert not result.get("failed"), result.get("msg")
    risks = [item for item in result["risks"] if item["migration"] == "books." + name]
    assert [item["level"] for item in risks] == EXPECTED[database.engine], [
        (name, item["level"], item["reasons"]) for (name, _source), item in zip(OPERATIONS, risks)]
    for item in risks:
        assert item["reasons"] and all(isinstance(reason, str) and reason for reason in item["reasons"])
        if item["type"] in ("RunSQL", "RunPython"):  # no table to name: their code decides
            assert item["table"] is None and item["rows"] is None
            continue
        assert item["table"] == "books_book"
        # Estimates from the catalog: within 10 % of the real count and size.
        assert abs(item["rows"] - rows) <= rows // 10, item
        assert abs(item["bytes"] - size) <= size // 10 + 16384, item
    by_name = dict((op_name, item) for (op_name, _source), item in zip(OPERATIONS, risks))
    assert any("database default" in reason for reason in by_name["add not null, python default"]["reasons"])
    assert any("cannot be analysed" in reason for reason in by_name["runsql"]["reasons"])
    assert any("cannot be analysed" in reason for reason in by_name["runpython"]["reasons"])
    assert result["risk"] == "data_loss"
    assert result["ansible_facts"]["django_migrations"]["risks"] == result["risks"]


@pytest.mark.parametrize("fixture", ["postgres_database", "mysql_database"])
def test_a_table_locked_by_another_session_does_not_hold_up_the_facts(fixture, request, tmp_path):
    """A migrate (or any ALTER) holding the table's exclusive lock: the facts give up on that
    table's size after STATS_LOCK_WAIT instead of waiting behind it; the plan is still read."""
    database = request.getfixturevalue(fixture)
    engine = database.engine
    project = demo.copy_demo(tmp_path)
    demo.manage(project, database, "migrate")
    write_risky_migration(project)
    if engine == "postgresql":
        argv = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", database.host, "-p", str(database.port),
                "-U", database.user, "-d", database.name]
        env = dict(os.environ, PGPASSWORD=database.password or "")
        lock = "BEGIN;\nLOCK TABLE books_book IN ACCESS EXCLUSIVE MODE;\nSELECT 'locked';\n"
    else:
        argv = ["mariadb", "--unbuffered", "--protocol=TCP", "-h", database.host, "-P", str(database.port), "-u", database.user,
                "-N", "-B", database.name]
        env = dict(os.environ, MYSQL_PWD=database.password or "")  # test-only
        lock = "LOCK TABLES books_book WRITE;\nSELECT 'locked';\n"
    holder = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    try:
        holder.stdin.write(lock)
        holder.stdin.flush()
        assert "locked" in holder.stdout.readline()
        started = time.monotonic()
        result = run_module("django_showmigrations", demo.module_args(project, database))
        took = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()

    assert not result.get("failed"), result.get("msg")
    assert took < 60, "the facts waited %.0f s behind the lock" % took
    locked = [item for item in result["risks"] if item["table"] == "books_book"]
    assert locked and all(item["rows"] is None for item in locked), locked


def test_add_index_concurrently_is_safe_on_postgresql(postgres_database, tmp_path):
    project = demo.copy_demo(tmp_path)
    demo.manage(project, postgres_database, "migrate")
    fill_books(project, postgres_database)
    path = os.path.join(demo.migrations_dir(project), demo._write_migration(
        project, "%s_concurrent" % demo.next_number(project), demo.leaf_migration(project),
        "AddIndexConcurrently('book', models.Index(fields=['slug'], name='book_slug_risk_idx')),\n"
        "migrations.SeparateDatabaseAndState(database_operations=[\n"
        "    migrations.RunSQL('CREATE INDEX book_title_risk_idx ON books_book (title)',\n"
        "                      'DROP INDEX book_title_risk_idx')]),\n"
        "migrations.SeparateDatabaseAndState(state_operations=[\n"
        "    migrations.AddField('book', 'ghost', models.IntegerField(null=True))]),\n",
        preamble="from django.contrib.postgres.operations import AddIndexConcurrently\n") + ".py")
    with open(path) as handle:
        source = handle.read()
    with open(path, "w") as handle:  # a concurrent build cannot run in a transaction
        handle.write(source.replace("class Migration(migrations.Migration):\n",
                                    "class Migration(migrations.Migration):\n    atomic = False\n"))

    result = run_module("django_showmigrations", demo.module_args(project, postgres_database))

    assert not result.get("failed"), result.get("msg")
    levels = [item["level"] for item in result["risks"]]
    assert levels == ["safe", "locks", "safe"], result["risks"]
    assert "concurrently" in result["risks"][0]["reasons"][0]
    assert result["risks"][0]["rows"] == ROWS


def test_max_risk_refuses_before_anything_is_touched(database, tmp_path):
    project = demo.copy_demo(tmp_path)
    demo.manage(project, database, "migrate")
    fill_books(project, database)
    # NOT NULL with only a Python default: old code inserting without the column fails.
    demo._add_model_field(project, "edition = models.IntegerField(default=1)")
    name = demo._write_migration(project, "%s_book_edition" % demo.next_number(project), demo.leaf_migration(project),
                                 "migrations.AddField('book', 'edition', models.IntegerField(default=1)),")
    backups = str(tmp_path / "backups")
    before = columns(database)

    checked = run_module("django_migrate_guarded", demo.module_args(project, database, backup_dir=backups),
                         check=True, diff=True)
    assert not checked.get("failed"), checked.get("msg")
    assert checked["risk"] == "incompatible"
    assert [(item["migration"], item["level"], item["rows"]) for item in checked["risks"]] == [
        ("books." + name, "incompatible", ROWS)]

    refused = run_module("django_migrate_guarded", demo.module_args(project, database, backup_dir=backups,
                                                                    max_risk="locks"))

    assert refused.get("failed")
    assert "above max_risk locks" in refused["msg"] and "books." + name in refused["msg"], refused["msg"]
    assert refused["database_changed"] is False
    assert [item["level"] for item in refused["too_risky"]] == ["incompatible"]
    assert refused["risk"] == "incompatible"
    # Independently read: columns, migration rows and row count as before; no backup taken.
    assert columns(database) == before
    assert not os.path.isdir(backups) or not [n for n in os.listdir(backups) if not n.startswith(".")]

    allowed = run_module("django_migrate_guarded", demo.module_args(project, database, backup_dir=backups,
                                                                    max_risk="incompatible"))

    assert not allowed.get("failed"), allowed.get("msg")
    cols, applied, rows = columns(database)
    assert "edition" in cols and ("books", name) in applied and rows == ROWS


# Django 3.2 (Python 3.8): the operations it has, described inside its interpreter the same way.
OPERATIONS_32 = [
    "migrations.AddField('book', 'rating', models.IntegerField(null=True)),",
    "migrations.AddField('book', 'edition', models.IntegerField(default=1)),",
    "migrations.RemoveField('book', 'isbn'),",
    "migrations.AlterField('book', 'pages', models.BigIntegerField(null=True)),",
    "migrations.AddIndex('book', models.Index(fields=['title'], name='book_title_risk_idx')),",
    "migrations.AddConstraint('book', models.CheckConstraint(check=models.Q(pages__gte=0), name='book_pages_risk_check')),",
    "migrations.RunPython(touch, migrations.RunPython.noop),",
]
EXPECTED_32 = {
    "postgresql": ["safe", "incompatible", "data_loss", "incompatible", "locks", "locks", "locks"],
    "mysql": ["safe", "incompatible", "data_loss", "incompatible", "safe", "locks", "locks"],
    "sqlite": ["safe", "incompatible", "data_loss", "incompatible", "locks", "locks", "locks"],
}


def test_django_32_describes_the_operations_the_same_way(database, tmp_path):
    python = demo.python_for("3.2")
    project = demo.copy_demo(tmp_path)
    demo.manage(project, database, "migrate", python=python)
    demo.django_json(project, database, """
        from books.models import Book
        Book.objects.bulk_create([Book(title="t%d" % i, slug="s%d" % i) for i in range(500)])
        result = 1
    """, python=python)
    name = demo._write_migration(project, "%s_risky" % demo.next_number(project), demo.leaf_migration(project),
                                 "\n".join(OPERATIONS_32), preamble="def touch(apps, schema_editor):\n    pass\n")

    result = run_module("django_showmigrations", demo.module_args(project, database, python))

    assert not result.get("failed"), result.get("msg")
    assert result["django_version"].startswith("3.2")
    risks = [item for item in result["risks"] if item["migration"] == "books." + name]
    assert [item["level"] for item in risks] == EXPECTED_32[database.engine], risks
    assert all(item["rows"] == 500 for item in risks if item["table"])
