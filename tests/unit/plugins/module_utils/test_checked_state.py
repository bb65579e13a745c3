"""checked_state: after a failed restore the message says what the database IS (compared with
its snapshot before the run), on a real SQLite file."""
import sqlite3

from ansible_collections.dbsafe.django.plugins.module_utils.checked_state import state_after_failure
from ansible_collections.dbsafe.django.plugins.module_utils.connection import Connection
from ansible_collections.dbsafe.django.plugins.module_utils.engines.sqlite import SqliteEngine


def test_equal_different_and_unreadable(tmp_path):
    path = str(tmp_path / "db.sqlite3")
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO t (name) VALUES ('a')")
    engine = SqliteEngine(Connection("sqlite", path), runner=None)
    before = engine.snapshot()

    sentence, as_before = state_after_failure(engine, before)
    assert as_before is True and sentence.startswith("Checked: the database equals")

    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO t (name) VALUES ('b')")
    sentence, as_before = state_after_failure(engine, before)
    assert as_before is False and "does NOT equal" in sentence and "1 difference" in sentence

    with open(path, "wb") as handle:
        handle.write(b"not a database at all" * 100)
    sentence, as_before = state_after_failure(engine, before)
    assert as_before is None and "unknown" in sentence
