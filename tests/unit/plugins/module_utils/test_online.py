"""online.py: which plans may run while the application serves, and the proof of an online undo (pure)."""
from ansible_collections.dbsafe.django.plugins.module_utils import online


def step(migration, *operations, backwards=False):
    return {"migration": migration, "backwards": backwards,
            "operations": [{"description": text, "reversible": reversible} for text, reversible in operations]}


def risk_item(migration, level, operation="Add field note to book", reason="adds a nullable column"):
    return {"migration": migration, "operation": operation, "table": "books_book", "level": level,
            "reasons": [reason]}


def test_a_plan_of_safe_reversible_operations_has_no_blockers():
    plan = [step("books.0005_note", ("Add field note to book", True))]
    assert online.blockers(plan, [risk_item("books.0005_note", "safe")]) == []


def test_every_operation_above_safe_is_a_blocker_with_its_reason():
    plan = [step("books.0005_drop", ("Remove field isbn from book", True)),
            step("books.0006_index", ("Create index", True))]
    risks = [risk_item("books.0005_drop", "data_loss", "Remove field isbn from book", "drops the column"),
             risk_item("books.0006_index", "locks", "Create index", "blocks writes while it builds"),
             risk_item("books.0006_index", "safe")]
    assert online.blockers(plan, risks) == [
        "books.0005_drop Remove field isbn from book on books_book is data_loss: drops the column",
        "books.0006_index Create index on books_book is locks: blocks writes while it builds",
    ]


def test_an_operation_without_reverse_and_a_backwards_step_are_blockers():
    plan = [step("books.0005_fill", ("Raw Python operation", False)),
            step("books.0004_old", ("Add field x to book", True), backwards=True)]
    found = online.blockers(plan, [])
    assert len(found) == 2
    assert found[0].startswith("books.0005_fill Raw Python operation has no reverse")
    assert found[1].startswith("books.0004_old is unapplied")


SCHEMA = {"books_book": {"columns": {"id": {"type": "bigint"}}}}


def snapshot(rows, migrations=(("books", "0004"),), schema=None):
    return {"schema": schema or SCHEMA, "migrations": [list(m) for m in migrations],
            "tables": dict((table, {"rows": count, "hash": "x"}) for table, count in rows.items())}


def test_an_undo_is_proven_when_schema_and_migrations_are_back_and_no_table_lost_rows():
    before = snapshot({"books_book": 100, "django_migrations": 20})
    live = snapshot({})
    assert online.undo_problems(before, live, {"books_book": 130, "django_migrations": 20}) == []
    assert online.grown(before, {"books_book": 130, "django_migrations": 20}) == {"books_book": 30}


def test_a_table_with_fewer_rows_or_a_schema_left_changed_is_not_proven():
    before = snapshot({"books_book": 100})
    live = snapshot({}, schema={"books_book": {"columns": {"id": {"type": "bigint"}, "note": {"type": "text"}}}})
    problems = online.undo_problems(before, live, {"books_book": 99})
    assert any("books_book" in problem and "column" in problem for problem in problems), problems
    assert "books_book: 100 rows before the run, 99 after the undo (1 lost)" in problems


def test_migrations_left_recorded_or_unreadable_counts_are_not_proven():
    before = snapshot({"books_book": 1})
    live = snapshot({}, migrations=(("books", "0004"), ("books", "0005")))
    problems = online.undo_problems(before, live, {})
    assert any("django_migrations" in problem for problem in problems), problems
    assert "books_book: its row count could not be read after the undo" in problems
