"""drift.py: the pure parts of the schema drift check; drift_scratch.py: the scratch lifecycle on
SQLite."""
import os
import signal

import pytest

from ansible_collections.dbsafe.django.plugins.module_utils import drift, drift_scratch
from ansible_collections.dbsafe.django.plugins.module_utils.connection import Connection
from ansible_collections.dbsafe.django.plugins.module_utils.errors import DbsafeError
from ansible_collections.dbsafe.django.plugins.module_utils.runner import Runner


def table(**overrides):
    value = {
        "columns": {
            "id": {"type": "bigint", "nullable": False, "default": None},
            "title": {"type": "varchar", "nullable": False, "default": None, "length": 200},
            "author_id": {"type": "bigint", "nullable": True, "default": None},
        },
        "primary_key": ["id"],
        "unique": [],
        "foreign_keys": [{"columns": ["author_id"], "ref_table": "authors_author",
                          "ref_columns": ["id"], "on_delete": "NO ACTION"}],
        "checks": [],
        "indexes": [{"columns": ["author_id"], "unique": False}],
        "names": {"books_book_author_id_1a2b": "index (author_id)",
                  "books_book_author_id_fk": "foreign key(author_id)->authors_author(id)"},
    }
    value.update(overrides)
    return value


def snapshot(tables=None, migrations=None):
    return {"schema": tables if tables is not None else {"books_book": table()},
            "tables": {}, "migrations": migrations or [["books", "0001_initial"]]}


# -- names ------------------------------------------------------------------------------------

def test_scratch_name_starts_with_the_live_name_and_keeps_the_whole_token():
    assert drift_scratch.scratch_name("shop", "1a2b3c4d", 63) == "shop_drift_1a2b3c4d"
    long_name = "x" * 70
    name = drift_scratch.scratch_name(long_name, "1a2b3c4d", 63)
    assert len(name) == 63 and name.endswith("_drift_1a2b3c4d") and name.startswith("x" * 48)
    assert drift_scratch.scratch_name("shop", "1a2b3c4d", 64, prefix="tmp_") == "tmp_1a2b3c4d"


def test_sqlite_scratch_goes_beside_the_live_file_else_a_prefix_or_the_temp_dir(tmp_path):
    live = str(tmp_path / "db.sqlite3")
    assert drift_scratch.sqlite_scratch_path(live, "abcd1234") == live + "_drift_abcd1234"
    assert drift_scratch.sqlite_scratch_path(live, "abcd1234", prefix="/var/tmp/d-") == \
        "/var/tmp/d-abcd1234.sqlite3"
    fallback = drift_scratch.sqlite_scratch_path(live, "abcd1234", writable=lambda path, mode: False)
    assert os.path.basename(fallback) == "dbsafe_drift_abcd1234.sqlite3"
    assert not fallback.startswith(str(tmp_path))


def test_scratch_server_falls_back_to_the_live_settings_but_never_to_another_users_password():
    live = Connection("postgresql", "shop", "db1", 5432, "shop", "secret", {"sslmode": "require"})
    same = drift_scratch.scratch_server(live, {})
    assert (same.host, same.port, same.user, same.password, same.name) == \
        ("db1", 5432, "shop", "secret", "shop")
    assert same.options == {"sslmode": "require"}
    other = drift_scratch.scratch_server(live, {"host": "db2", "user": "admin"})
    assert (other.host, other.port, other.user, other.password) == ("db2", 5432, "admin", None)
    given = drift_scratch.scratch_server(live, {"user": "admin", "password": "pw", "port": 6432})
    assert (given.port, given.password) == (6432, "pw")


def test_django_overrides_name_the_scratch_and_only_what_differs():
    live = Connection("postgresql", "shop", "db1", 5432, "shop", "secret")
    scratch = drift_scratch.scratch_server(live, {"host": "db2", "user": "admin", "password": "pw"})
    scratch = scratch.with_name("shop_drift_1")
    assert drift_scratch.django_overrides(live, live.with_name("shop_drift_1")) == {"NAME": "shop_drift_1"}
    assert drift_scratch.django_overrides(live, scratch) == {
        "NAME": "shop_drift_1", "HOST": "db2", "USER": "admin", "PASSWORD": "pw"}
    sqlite = Connection("sqlite", "/srv/db.sqlite3")
    assert drift_scratch.django_overrides(sqlite, sqlite.with_name("/srv/x")) == {"NAME": "/srv/x"}


# -- comparing --------------------------------------------------------------------------------

def test_column_order_and_migration_rows_are_never_drift():
    reordered = table()
    reordered["columns"] = dict(reversed(list(reordered["columns"].items())))
    live = snapshot({"books_book": reordered},
                    migrations=[["books", "0001_initial"], ["books", "0007_ghost"]])
    assert drift.compare(snapshot(), live) == ([], [])


def test_a_name_only_difference_is_harmless():
    renamed = table(names={"books_book_author_id_9z9z": "index (author_id)",
                           "books_book_author_id_fk": "foreign key(author_id)->authors_author(id)"})
    real, harmless = drift.compare(snapshot(), snapshot({"books_book": renamed}))
    assert real == []
    assert [d["kind"] for d in harmless] == ["names"]
    assert drift.summary_text(real, harmless, "db", 3).startswith("No drift")
    assert "harmless" in drift.summary_text(real, harmless, "db", 3)


def test_real_differences_are_found_and_described():
    live_table = table(foreign_keys=[], indexes=[])
    live_table["columns"] = dict(live_table["columns"],
                                 rating={"type": "integer", "nullable": True, "default": None},
                                 title={"type": "text", "nullable": True, "default": None})
    live = snapshot({"books_book": live_table, "hand_made": table()})
    expected = snapshot({"books_book": table(), "django_session": table()})
    real, _harmless = drift.compare(expected, live)
    described = dict(((d["table"], d["kind"]), drift.describe(d)) for d in real)
    assert described[("books_book", "extra_column")] == \
        "column books_book.rating is not built by the migrations"
    assert described[("books_book", "column")].startswith("column books_book.title: ")
    assert 'nullable true (expected false)' in described[("books_book", "column")]
    assert 'type "text" (expected "varchar")' in described[("books_book", "column")]
    assert described[("books_book", "foreign_keys")] == \
        "books_book: foreign key (author_id) -> authors_author(id) on delete NO ACTION is missing"
    assert described[("books_book", "indexes")] == "books_book: index (author_id) is missing"
    assert described[("hand_made", "extra_table")] == \
        "table hand_made is not built by the migrations"
    assert described[("django_session", "missing_table")] == "table django_session is missing"
    summary = drift.summary_text(real, [], "sqlite database x", 25)
    assert summary.startswith("Drift: 6 difference(s) between sqlite database x and what its 25")
    assert summary.endswith("and 1 more.")


def test_ignored_tables_are_left_out():
    live = snapshot({"books_book": table(), "django_cache": table(), "celery_x": table()})
    assert drift.compare(snapshot(), live, ["django_cache", "celery_*"]) == ([], [])
    real = drift.compare(snapshot(), live, ["django_cache"])[0]
    assert [(d["table"], d["kind"]) for d in real] == [("celery_x", "extra_table")]


def test_rows_that_could_not_be_replayed():
    assert drift.not_replayed(["a.1", "b.1", "b.2"], ["a.1", "b.1", "b.0001_squashed"]) == ["b.2"]


@pytest.mark.parametrize("text", [
    'ERROR:  permission denied to create database',
    "ERROR 1044 (42000) at line 1: Access denied for user 'u'@'%' to database 'x_drift_1'",
])
def test_permission_errors_are_recognised(text):
    assert drift_scratch.is_permission_error(text)
    assert not drift_scratch.is_permission_error('ERROR:  database "x" already exists')


# -- the scratch database on SQLite (a real file, no server needed) ---------------------------

def no_commands(*args, **kwargs):
    raise AssertionError("SQLite needs no command")


def sqlite_scratch(tmp_path, options=None):
    live = Connection("sqlite", str(tmp_path / "db.sqlite3"))
    return drift_scratch.ScratchDatabase(live, Runner(no_commands), options, token="0123abcd")


def test_the_scratch_file_is_created_and_removed(tmp_path):
    scratch = sqlite_scratch(tmp_path)
    with scratch:
        assert os.path.exists(scratch.name)
        assert scratch.name == str(tmp_path / "db.sqlite3_drift_0123abcd")
        assert oct(os.stat(scratch.name).st_mode & 0o777) == "0o600"
        open(scratch.name + "-journal", "w").close()
    assert os.listdir(str(tmp_path)) == []
    assert scratch.public()["dropped"] is True
    assert "was dropped" in scratch.fate()


def test_the_scratch_file_is_removed_when_the_body_fails(tmp_path):
    scratch = sqlite_scratch(tmp_path)
    with pytest.raises(RuntimeError):
        with scratch:
            raise RuntimeError("boom")
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_termination_signal_drops_the_scratch_and_raises_interrupted(tmp_path, signum):
    before = signal.getsignal(signum)
    scratch = sqlite_scratch(tmp_path)
    with pytest.raises(drift_scratch.Interrupted) as caught:
        with scratch:
            os.kill(os.getpid(), signum)
            raise AssertionError("the signal handler did not interrupt")
    assert caught.value.signum == signum
    assert caught.value.name == signal.Signals(signum).name
    assert os.listdir(str(tmp_path)) == []
    assert signal.getsignal(signum) == before


def test_an_existing_file_is_never_taken_over(tmp_path):
    scratch = sqlite_scratch(tmp_path)
    with open(scratch.name, "w") as handle:
        handle.write("not ours")
    with pytest.raises(DbsafeError, match="cannot create the scratch sqlite file"):
        with scratch:
            pass
    with open(scratch.name) as handle:
        assert handle.read() == "not ours"


def test_innodb_fk_indexes_made_redundant_by_a_longer_index_are_not_drift():
    """After our restore InnoDB keeps the foreign key's index (author_id) next to a later
    (author_id, title) index; a database built by the migrations has only the latter."""
    composite = {"columns": ["author_id", "title"], "unique": False, "type": "BTREE"}
    implicit = {"columns": ["author_id"], "unique": False, "type": "BTREE"}
    fresh = table(indexes=[composite], names={"book_author_title_idx":
                                              "index BTREE(author_id,title)"})
    restored = table(indexes=[composite, implicit], names={
        "book_author_title_idx": "index BTREE(author_id,title)",
        "books_book_author_id_fk": "index BTREE(author_id)"})
    expected, live = snapshot({"books_book": fresh}), snapshot({"books_book": restored})

    assert drift.compare(expected, live, engine="mysql") == ([], [])
    # Elsewhere the index is real drift; so is an index on author_id alone without a longer one.
    assert drift.compare(expected, live, engine="postgresql")[0]
    alone = snapshot({"books_book": table(indexes=[implicit])})
    assert drift.compare(snapshot({"books_book": table(indexes=[])}), alone, engine="mysql")[0]


def test_our_checksum_table_is_never_drift():
    """The guarded migrate's own table exists only in the live database, never in the scratch one."""
    live = {"schema": {"books_book": {"columns": {"id": {}}},
                       "dbsafe_migration_checksums": {"columns": {"id": {}, "checksum": {}}}}}
    expected = {"schema": {"books_book": {"columns": {"id": {}}}}}
    assert drift.schema_only(live) == expected
    assert drift.compare(expected, live) == ([], [])
