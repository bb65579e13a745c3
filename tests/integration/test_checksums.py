"""Applied migrations edited afterwards (issue 17, item 3) on real SQLite, PostgreSQL and
MariaDB: the guarded migrate records each applied migration's checksum in
dbsafe_migration_checksums; an applied migration whose operations were changed afterwards is
reported and refused with the database unchanged (read back independently); one only
reformatted is not; allow_edited goes ahead; track_checksums false leaves no table."""
import os
import sqlite3

import demo
from ansible_run import run_module
from runner_double import execute, query_value

TABLE = "dbsafe_migration_checksums"
NAME = "0006_book_edition"

ORIGINAL = '''\
from django.db import migrations, models


def fill_edition(apps, schema_editor):
    Book = apps.get_model("books", "Book")
    Book.objects.filter(edition__isnull=True).update(edition=1)


class Migration(migrations.Migration):

    dependencies = [("books", %(dependency)r)]

    operations = [
        migrations.AddField("book", "edition", models.IntegerField(null=True)),
        migrations.RunSQL("UPDATE books_book SET pages = 0 WHERE pages IS NULL", migrations.RunSQL.noop),
        migrations.RunPython(fill_edition, migrations.RunPython.noop),
    ]
'''

# The same operations written differently: docstrings, comments, quotes, keyword arguments,
# line breaks, the SQL's spacing, a comment in it and a trailing semicolon.
REFORMATTED = '''\
"""Books get an edition."""
from django.db import migrations
from django.db import models


def fill_edition(apps, schema_editor):
    """Every book without one is a first edition."""
    # The historical model, as a migration must.
    Book = apps.get_model('books', 'Book')
    Book.objects.filter(
        edition__isnull=True,
    ).update(edition=1)  # the first


class Migration(migrations.Migration):
    dependencies = [
        ('books', %(dependency)r),
    ]

    operations = [
        migrations.AddField(
            model_name='book',
            name='edition',
            field=models.IntegerField(null=True),  # nullable: old rows have none
        ),
        migrations.RunSQL(
            sql="""
                -- books without a page count
                UPDATE books_book
                   SET pages = 0
                 WHERE pages IS NULL;
            """,
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.RunPython(code=fill_edition, reverse_code=migrations.RunPython.noop),
    ]
'''


def write(project, source, dependency):
    path = os.path.join(demo.migrations_dir(project), NAME + ".py")
    with open(path, "w") as handle:
        handle.write(source % {"dependency": dependency})


def set_model_field(project, old, new):
    path = os.path.join(str(project), demo.BOOKS, "models.py")
    with open(path) as handle:
        source = handle.read()
    assert old in source
    with open(path, "w") as handle:
        handle.write(source.replace(old, new))


def table_exists(db):
    sql = {"sqlite": "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '%s'" % TABLE,
           "postgresql": "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = '%s'" % TABLE,
           "mysql": "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
                    "AND table_name = '%s'" % TABLE}[db.engine]
    return query_value(db, sql) == "1"


def rows(db, sql):
    """All rows of ``sql`` as tuples of text, read with the engine's own client."""
    if db.engine == "sqlite":
        conn = sqlite3.connect(db.name)
        try:
            return [tuple(str(value) for value in row) for row in conn.execute(sql).fetchall()]
        finally:
            conn.close()
    separator = "|" if db.engine == "postgresql" else "\t"
    return [tuple(line.split(separator)) for line in execute(db, sql).splitlines() if line]


def recorded(db):
    return dict(("%s.%s" % (app, name), checksum) for app, name, checksum in
                rows(db, "SELECT app, name, checksum FROM %s" % TABLE))


def state(db):
    """What a refusal must leave as it was: the applied migrations, books_book's columns and
    the recorded checksums."""
    column_sql = {"sqlite": "SELECT name FROM pragma_table_info('books_book')",
                  "postgresql": "SELECT column_name FROM information_schema.columns WHERE table_name = 'books_book'",
                  "mysql": "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() "
                           "AND table_name = 'books_book'"}[db.engine]
    return (sorted(rows(db, "SELECT app, name FROM django_migrations")), sorted(rows(db, column_sql)),
            recorded(db))


def showmigrations(project, db, **extra):
    result = run_module("django_showmigrations", demo.module_args(project, db, **extra))
    assert not result.get("failed"), result.get("msg")
    return result


def guarded(project, db, tmp_path, **extra):
    extra.setdefault("backup_dir", str(tmp_path / "backups"))
    return run_module("django_migrate_guarded", demo.module_args(project, db, **extra))


def test_an_edited_applied_migration_is_refused_and_a_reformatted_one_is_not(database, tmp_path):
    project = demo.copy_demo(tmp_path)
    demo.manage(project, database, "migrate")  # applied before the first guarded run: the baseline
    dependency = demo.leaf_migration(project)
    write(project, ORIGINAL, dependency)
    demo._add_model_field(project, "edition = models.IntegerField(null=True)")

    facts = showmigrations(project, database)

    assert facts["edited"] == []
    assert facts["checksums"]["enabled"] is True and facts["checksums"]["active"] is False
    assert not table_exists(database)  # reading the facts creates nothing

    first = guarded(project, database, tmp_path)

    assert not first.get("failed"), first.get("msg")
    assert "books." + NAME in [step["migration"] for step in first["applied"]]
    assert first["edited"] == []
    assert TABLE not in [change["table"] for change in first["row_changes"]]
    # Every applied migration of the project's apps, Django's own apps' left out.
    applied = set("%s.%s" % row for row in rows(database, "SELECT app, name FROM django_migrations"))
    ours = recorded(database)
    assert set(ours) == set(name for name in applied if name.split(".")[0] in ("authors", "books"))
    assert all(checksum.startswith("1:") and len(checksum) == 66 for checksum in ours.values())
    assert first["after"]["checksums"]["active"] is True
    assert first["after"]["checksums"]["unrecorded"] == 0
    drift = run_module("django_schema_drift", demo.module_args(project, database))
    assert not drift.get("failed"), drift.get("msg")
    assert drift["drift"] is False, drift["summary"]  # our table is not the migrations'

    write(project, REFORMATTED, dependency)
    facts = showmigrations(project, database)

    assert facts["edited"] == [], "only reformatted, yet reported as edited"
    assert facts["checksums"]["recorded"] == len(ours) and facts["checksums"]["unrecorded"] == 0

    # A changed function body of RunPython is a changed migration.
    write(project, REFORMATTED.replace(".update(edition=1)", ".update(edition=2)"), dependency)
    assert showmigrations(project, database)["edited"] == ["books." + NAME]

    # An edited operation (and the model to match, so makemigrations is clean), and a new
    # migration to apply: refused before anything is touched.
    write(project, REFORMATTED.replace("field=models.IntegerField(null=True)",
                                       "field=models.IntegerField(null=True, default=1)"), dependency)
    set_model_field(project, "edition = models.IntegerField(null=True)",
                    "edition = models.IntegerField(null=True, default=1)")
    demo._add_model_field(project, "rating = models.IntegerField(null=True)")
    demo._write_migration(project, "0007_book_rating", NAME,
                          "migrations.AddField('book', 'rating', models.IntegerField(null=True)),")
    before = state(database)

    refused = guarded(project, database, tmp_path)

    assert refused.get("failed")
    assert "edited after they were applied" in refused["msg"] and "books." + NAME in refused["msg"], refused["msg"]
    assert "allow_edited: true" in refused["msg"]
    assert refused["database_changed"] is False
    assert refused["edited"] == ["books." + NAME]
    assert state(database) == before

    allowed = guarded(project, database, tmp_path, allow_edited=True)

    assert not allowed.get("failed"), allowed.get("msg")
    assert any("allow_edited" in warning for warning in allowed.get("warnings", [])), allowed.get("warnings")
    assert "books.0007_book_rating" in [step["migration"] for step in allowed["applied"]]
    after = recorded(database)
    assert after["books." + NAME] != ours["books." + NAME]  # the edit is accepted
    assert "books.0007_book_rating" in after
    assert showmigrations(project, database)["edited"] == []


def test_track_checksums_false_reads_and_writes_nothing(database, tmp_path):
    project = demo.copy_demo(tmp_path)

    result = guarded(project, database, tmp_path, allow_data_loss=True, track_checksums=False)

    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True
    assert not table_exists(database)
    assert result["after"]["checksums"]["enabled"] is False
    facts = showmigrations(project, database, track_checksums=False)
    assert facts["checksums"]["enabled"] is False and facts["edited"] == []


def test_check_mode_records_nothing(sqlite_database, tmp_path):
    project = demo.copy_demo(tmp_path)

    checked = run_module("django_migrate_guarded", demo.module_args(
        project, sqlite_database, backup_dir=str(tmp_path / "backups"), allow_data_loss=True), check=True)

    assert not checked.get("failed"), checked.get("msg")
    assert checked["changed"] is True
    assert not os.path.exists(sqlite_database.name)  # not even the database file


def test_a_squashed_migration_is_tracked_with_what_it_replaces(sqlite_database, tmp_path):
    """A squash of applied migrations: Django records its row at the next migrate; from then
    on the squash and (while their files exist) the migrations it replaces are checked."""
    project = demo.copy_demo(tmp_path)
    first = guarded(project, sqlite_database, tmp_path, allow_data_loss=True)
    assert not first.get("failed"), first.get("msg")
    demo.manage(project, sqlite_database, "squashmigrations", "authors", "0002", "--noinput")
    squash = [name for name in demo.migration_names(project, "authors") if "squashed" in name]
    assert len(squash) == 1
    demo._add_model_field(project, "rating = models.IntegerField(null=True)")
    demo._write_migration(project, "%s_book_rating" % demo.next_number(project), demo.leaf_migration(project),
                          "migrations.AddField('book', 'rating', models.IntegerField(null=True)),")

    second = guarded(project, sqlite_database, tmp_path)

    assert not second.get("failed"), second.get("msg")
    ours = recorded(sqlite_database)
    assert {"authors.0001_initial", "authors.0002_author_born", "authors." + squash[0]} <= set(ours)
    path = os.path.join(demo.migrations_dir(project, "authors"), squash[0] + ".py")
    with open(path) as handle:
        source = handle.read()
    with open(path, "w") as handle:
        handle.write(source.replace("max_length=", "max_length=1 + "))
    assert showmigrations(project, sqlite_database)["edited"] == ["authors." + squash[0]]


def test_a_django_and_python_upgrade_is_no_edit(sqlite_database, tmp_path):
    """Recorded by Django 3.2 on Python 3.8, compared by Django 5.2 on Python 3.11: the same
    migrations (a RunPython function among them) have the same checksums."""
    project = demo.copy_demo(tmp_path)
    old = guarded(project, sqlite_database, tmp_path, allow_data_loss=True, python=demo.python_for("3.2"))
    assert not old.get("failed"), old.get("msg")
    assert old["before"]["django_version"].startswith("3.2")

    facts = showmigrations(project, sqlite_database)

    assert facts["django_version"].startswith("5.2")
    assert facts["checksums"]["active"] is True and facts["checksums"]["recorded"] > 0
    assert facts["edited"] == []
