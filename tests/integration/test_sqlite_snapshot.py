"""The SQLite content snapshot on real files: every single-value change shows, row order does not.

SQLite keeps each value's own type whatever the column says, so 1, 1.0 and '1' can sit in the
same column, and ``1 = 1.0`` is true in SQL: the hash has to tell them apart by itself.
"""
import sqlite3

import pytest

from runner_double import engine_of

from databases import create_sqlite

from ansible_collections.dbsafe.django.plugins.module_utils.engines.sqlite import _unique_key
from ansible_collections.dbsafe.django.plugins.module_utils.snapshots import diff_snapshots

SCHEMA = """
CREATE TABLE anything (id integer NOT NULL PRIMARY KEY, value, data BLOB, note text);
CREATE TABLE keyless (a, b);
CREATE TABLE keyed (code text PRIMARY KEY, n integer) WITHOUT ROWID;
CREATE TABLE loose (code text PRIMARY KEY, n);
CREATE TABLE pair (a text NOT NULL COLLATE NOCASE, b integer NOT NULL, c, PRIMARY KEY (a, b));
CREATE TABLE cased (a text NOT NULL COLLATE NOCASE, PRIMARY KEY (a COLLATE BINARY));
CREATE TABLE untouched (id integer PRIMARY KEY, name text);
INSERT INTO anything (id, value, data, note) VALUES
    (1, 1, X'00010203', ''),
    (2, '1', X'', NULL),
    (3, 2.5, NULL, 'a' || char(0) || 'b'),
    (4, NULL, X'FF', CAST(X'61FF62' AS TEXT)),
    (5, 0.0, X'00', 'same');
INSERT INTO keyless (a, b) VALUES (1, 'x'), (1, 'x'), (2, NULL), ('2', ''), (3.0, X'00');
INSERT INTO keyed (code, n) VALUES ('b', 2), ('a', 1), ('c', NULL);
INSERT INTO untouched (id, name) VALUES (1, 'one');
INSERT INTO loose (code, n) VALUES (NULL, 1), (NULL, 2), ('a', 3);
INSERT INTO pair (a, b, c) VALUES ('x', 1, 'A'), ('Y', 1, NULL), ('x', 2, 1), ('z', 0, X'00');
INSERT INTO cased (a) VALUES ('b'), ('A'), ('a'), ('B');
"""

# name -> (the change, the statement that undoes it)
SINGLE_VALUE_CHANGES = {
    "int to float of the same value": (
        "UPDATE anything SET value = 1.0 WHERE id = 1",
        "UPDATE anything SET value = 1 WHERE id = 1"),
    "float to int of the same value": (
        "UPDATE anything SET value = 0 WHERE id = 5",
        "UPDATE anything SET value = 0.0 WHERE id = 5"),
    "text to int": (
        "UPDATE anything SET value = 1 WHERE id = 2",
        "UPDATE anything SET value = '1' WHERE id = 2"),
    "int to text": (
        "UPDATE anything SET value = '1' WHERE id = 1",
        "UPDATE anything SET value = 1 WHERE id = 1"),
    "NULL to empty string": (
        "UPDATE anything SET note = '' WHERE id = 2",
        "UPDATE anything SET note = NULL WHERE id = 2"),
    "empty string to NULL": (
        "UPDATE anything SET note = NULL WHERE id = 1",
        "UPDATE anything SET note = '' WHERE id = 1"),
    "empty blob to empty string": (
        "UPDATE anything SET data = '' WHERE id = 2",
        "UPDATE anything SET data = X'' WHERE id = 2"),
    "one blob byte": (
        "UPDATE anything SET data = X'00010204' WHERE id = 1",
        "UPDATE anything SET data = X'00010203' WHERE id = 1"),
    "blob to text of the same bytes": (
        "UPDATE anything SET data = CAST(X'00' AS TEXT) WHERE id = 5",
        "UPDATE anything SET data = X'00' WHERE id = 5"),
    "text after an embedded NUL": (
        "UPDATE anything SET note = 'a' || char(0) || 'c' WHERE id = 3",
        "UPDATE anything SET note = 'a' || char(0) || 'b' WHERE id = 3"),
    "one byte of text that is not UTF-8": (
        "UPDATE anything SET note = CAST(X'61FE62' AS TEXT) WHERE id = 4",
        "UPDATE anything SET note = CAST(X'61FF62' AS TEXT) WHERE id = 4"),
    "float by one ulp": (
        "UPDATE anything SET value = 2.5000000000000004 WHERE id = 3",
        "UPDATE anything SET value = 2.5 WHERE id = 3"),
    "one of two equal rows of a table without a key": (
        "UPDATE keyless SET b = 'y' WHERE rowid = 2", "UPDATE keyless SET b = 'x' WHERE rowid = 2"),
    "a value of a row whose key is NULL": (
        "UPDATE loose SET n = 1.0 WHERE n = 1",
        "UPDATE loose SET n = 1 WHERE n = 1"),
    "the case of a key value unique without case": (
        "UPDATE pair SET a = 'X' WHERE b = 1 AND a = 'x'",
        "UPDATE pair SET a = 'x' WHERE b = 1 AND a = 'X'"),
    "the case of a key value unique with case": (
        "UPDATE cased SET a = 'c' WHERE a = 'b' COLLATE BINARY",
        "UPDATE cased SET a = 'b' WHERE a = 'c'"),
    "a value of a WITHOUT ROWID table": (
        "UPDATE keyed SET n = 3 WHERE code = 'b'", "UPDATE keyed SET n = 2 WHERE code = 'b'"),
}


def run(path, sql):
    conn = sqlite3.connect(path)
    try:
        conn.executescript(sql)
    finally:
        conn.close()


@pytest.fixture
def seeded(tmp_path):
    db = create_sqlite(tmp_path)
    run(db.name, SCHEMA)
    return db


@pytest.mark.parametrize("change", sorted(SINGLE_VALUE_CHANGES))
def test_each_single_value_change_changes_the_content_hash(seeded, change):
    forward, back = SINGLE_VALUE_CHANGES[change]
    engine = engine_of(seeded)
    before = engine.snapshot()
    table = forward.split()[1]
    run(seeded.name, forward)
    after = engine.snapshot()
    assert after["tables"][table]["rows"] == before["tables"][table]["rows"]
    assert after["tables"][table]["hash"] != before["tables"][table]["hash"], change
    assert diff_snapshots(before, after) == [
        {"table": table, "kind": "content", "expected": before["tables"][table]["hash"],
         "live": after["tables"][table]["hash"]}]
    # The hash is the content's, not its history's: undone, it is the first one again.
    run(seeded.name, back)
    assert engine.snapshot() == before


def test_a_row_more_or_less_changes_the_row_count(seeded):
    engine = engine_of(seeded)
    before = engine.snapshot()
    run(seeded.name, "DELETE FROM keyless WHERE rowid = 2")  # one of two equal rows
    after = engine.snapshot()
    assert (before["tables"]["keyless"]["rows"], after["tables"]["keyless"]["rows"]) == (5, 4)
    assert [d["kind"] for d in diff_snapshots(before, after)] == ["rows"]


def test_a_copy_with_another_physical_row_order_has_the_same_snapshot(seeded, tmp_path):
    """Same rows, written in reverse order (other rowids for the table without a key)."""
    copy = str(tmp_path / "copy.sqlite3")
    conn = sqlite3.connect(copy)
    try:
        source = sqlite3.connect(seeded.name)
        ddl = [row[0] for row in source.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        source.close()
        for statement in ddl:
            conn.execute(statement)
        conn.execute("ATTACH DATABASE ? AS original", (seeded.name,))
        for table, order in (("anything", "rowid"), ("keyless", "rowid"), ("keyed", "code"),
                             ("untouched", "rowid"), ("loose", "rowid"), ("pair", "rowid"),
                             ("cased", "rowid")):
            conn.execute("INSERT INTO main.%s SELECT * FROM original.%s ORDER BY %s DESC"
                         % (table, table, order))
        conn.commit()
        conn.execute("DETACH DATABASE original")
        reordered = conn.execute("SELECT a, b FROM keyless ORDER BY rowid").fetchall()
    finally:
        conn.close()
    original = sqlite3.connect(seeded.name)
    try:
        in_order = original.execute("SELECT a, b FROM keyless ORDER BY rowid").fetchall()
    finally:
        original.close()
    assert reordered == list(reversed(in_order)) != in_order  # the copy really is reordered
    before = engine_of(seeded).snapshot()
    restored = engine_of(seeded, name=copy).snapshot()
    assert diff_snapshots(before, restored) == []
    assert restored["tables"] == before["tables"]


def test_a_restored_backup_has_the_same_snapshot(seeded, tmp_path):
    """The guard's case: dump, change a value, restore, compare with the snapshot before."""
    engine = engine_of(seeded)
    before = engine.snapshot()
    dump = str(tmp_path / "dump.sqlite3")
    with open(dump, "wb") as out:
        engine.dump(out)
    run(seeded.name, "UPDATE anything SET value = 1.0 WHERE id = 1")
    assert diff_snapshots(before, engine.snapshot()) != []
    with open(dump, "rb") as src:
        engine.restore(src)
    assert engine.snapshot() == before


def test_tables_with_a_key_without_nulls_are_read_in_its_order(seeded):
    """Both ways of hashing are covered above: these tables take the key-ordered one."""
    schema = engine_of(seeded).snapshot(content=False)["schema"]
    keys = dict((table, _unique_key(schema[table])) for table in schema)
    assert keys == {"anything": ["id"], "keyed": ["code"], "pair": ["a", "b"], "cased": ["a"],
                    "keyless": None, "loose": None, "untouched": None}
