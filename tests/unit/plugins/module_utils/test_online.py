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


def staged(migration, *operations, dependencies=(), marker=None):
    found = step(migration, *((text, True) for text, _type in operations))
    for op, (_text, kind) in zip(found["operations"], operations):
        op["type"] = kind
    found.update(dependencies=list(dependencies), stage_marker=marker)
    return found


ADD = ("Add field note to book", "AddField")
DROP = ("Remove field sku from book", "RemoveField")


def test_removals_wait_for_the_rollout_and_the_rest_runs_before_it():
    plan = [staged("books.0005_note", ADD), staged("books.0006_drop", DROP, dependencies=["books.0005_note"]),
            staged("shop.0002_table", ("Create model Shelf", "CreateModel"))]
    risks = [risk_item("books.0005_note", "safe"),
             risk_item("books.0006_drop", "data_loss", DROP[0], "drops the column"),
             risk_item("shop.0002_table", "safe")]
    assert online.stages(plan, risks) == {"expand": ["books.0005_note", "shop.0002_table"],
                                          "contract": ["books.0006_drop"], "blockers": []}
    assert online.stage_targets(plan, {"books.0005_note", "shop.0002_table"}) == [
        {"app": "books", "migration": "0005_note"}, {"app": "shop", "migration": "0002_table"}]


def test_a_plan_that_cannot_be_split_says_why():
    mixed = staged("books.0005_mixed", ADD, DROP)
    after_drop = [staged("books.0005_drop", DROP), staged("books.0006_note", ADD, dependencies=["books.0005_drop"])]
    assert online.stages([mixed], [])["blockers"][0].startswith(
        "books.0005_mixed removes (Remove field sku from book) beside other operations")
    found = online.stages(after_drop, [risk_item("books.0006_note", "safe")])
    assert found["contract"] == ["books.0005_drop"] and found["expand"] == []
    assert found["blockers"] == ["books.0006_note depends on books.0005_drop, which may only run once no host "
                                 "runs the previous code: the plan cannot be split"]
    locked = staged("books.0005_index", ("Create index", "AddIndex"))
    assert online.stages([locked], [risk_item("books.0005_index", "locks", "Create index", "blocks writes")])["blockers"]


def test_stage_markers_of_safemigrate_and_syzygy_decide():
    marked_after = staged("books.0005_backfill", ("Raw Python operation", "RunPython"), marker="after")
    marked_before = staged("books.0006_drop", DROP, marker="before")
    found = online.stages([marked_after, marked_before], [])
    assert found["contract"] == ["books.0005_backfill"]
    # "before" on a removal: the developer says the previous code does not use it - still a
    # removal the undo could not bring back with its data, so not online before the rollout.
    assert found["blockers"] and found["blockers"][0].startswith("books.0006_drop is marked to run before the deploy")


def test_stage_marker_reads_each_tools_attribute():
    import enum

    from ansible_collections.dbsafe.django.plugins.module_utils.introspect import stage_marker

    class When(enum.Enum):
        BEFORE_DEPLOY = "before_deploy"
        AFTER_DEPLOY = "after_deploy"
        ALWAYS = "always"

    class Safe:  # django-safemigrate 5: Safe.after_deploy() -> Safe(when=When.AFTER_DEPLOY)
        def __init__(self, when):
            self.when = when

    class Stage(enum.Enum):  # django-syzygy
        PRE_DEPLOY = "pre_deploy"
        POST_DEPLOY = "post_deployment"

    def migration(**attributes):
        return type("Migration", (), attributes)()

    assert stage_marker(migration(safe=Safe(When.AFTER_DEPLOY))) == "after"
    assert stage_marker(migration(safe=When.BEFORE_DEPLOY)) == "before"  # 2.x-4.x: the enum itself
    assert stage_marker(migration(safe=Safe(When.ALWAYS))) == "always"
    assert stage_marker(migration(safe=False)) == "after" and stage_marker(migration(safe=True)) == "before"
    assert stage_marker(migration(stage=Stage.POST_DEPLOY)) == "after"
    assert stage_marker(migration(stage=Stage.PRE_DEPLOY)) == "before"
    assert stage_marker(migration()) is None
