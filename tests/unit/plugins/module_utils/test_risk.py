"""risk.py: the risk of each pending operation, per engine and version (pure)."""
import pytest

from ansible_collections.dbsafe.django.plugins.module_utils import risk, state
from ansible_collections.dbsafe.django.plugins.module_utils.report import build_report, render_markdown

PG = risk.Server("postgresql", "15.4")
PG10 = risk.Server("postgresql", "10.23")
MARIADB = risk.Server("mysql", "10.11.6-MariaDB", "mariadb")
MARIADB_OLD = risk.Server("mysql", "10.2.44-MariaDB", "mariadb")
MYSQL8 = risk.Server("mysql", "8.0.36", "mysql")
SQLITE = risk.Server("sqlite", "3.45.1")
SERVERS = {"postgresql": PG, "mariadb": MARIADB, "sqlite": SQLITE}
STATS = {"books_book": {"rows": 5000, "bytes": 2 * 1024 * 1024}}


def field(**given):
    base = {"type": "IntegerField", "null": False, "has_default": False, "callable_default": False,
            "db_default": False, "db_default_expression": False, "unique": False, "primary_key": False,
            "db_index": False, "relation": False, "many_to_many": False, "db_constraint": True,
            "db_type": "integer"}
    base.update(given)
    return base


def op(kind, **given):
    detail = {"class": kind, "model": "book", "table": "books_book"}
    detail.update(given)
    return detail


# The acceptance list: (name, operation, expected level on PostgreSQL 15, MariaDB 10.11, SQLite).
CASES = [
    ("AddField nullable", op("AddField", field=field(null=True)), ("safe", "safe", "safe")),
    ("AddField NOT NULL, Python default", op("AddField", field=field(has_default=True)),
     ("incompatible", "incompatible", "incompatible")),
    ("AddField NOT NULL, db_default", op("AddField", field=field(db_default=True)), ("safe", "safe", "locks")),
    ("AddField NOT NULL, no default", op("AddField", field=field()), ("incompatible", "incompatible", "incompatible")),
    ("AddField foreign key", op("AddField", field=field(null=True, relation=True, db_index=True, db_type=None)),
     ("locks", "locks", "locks")),
    ("AddField many-to-many", op("AddField", field=field(many_to_many=True)), ("safe", "safe", "safe")),
    ("RemoveField", op("RemoveField", old_field=field()), ("data_loss", "data_loss", "data_loss")),
    ("DeleteModel", op("DeleteModel"), ("data_loss", "data_loss", "data_loss")),
    ("RenameField", op("RenameField"), ("incompatible", "incompatible", "incompatible")),
    ("RenameModel", op("RenameModel"), ("incompatible", "incompatible", "incompatible")),
    ("AlterField type change", op("AlterField", old_field=field(null=True), field=field(null=True, db_type="bigint")),
     ("incompatible", "incompatible", "incompatible")),
    ("AlterField NULL allowed", op("AlterField", old_field=field(), field=field(null=True)), ("safe", "safe", "locks")),
    ("AlterField help text only", op("AlterField", old_field=field(), field=field()), ("safe", "safe", "safe")),
    ("AddIndex", op("AddIndex", index_kind="Index"), ("locks", "safe", "locks")),
    ("AddIndexConcurrently", op("AddIndexConcurrently", concurrent=True, index_kind="Index"), ("safe", "safe", "locks")),
    ("AddConstraint check", op("AddConstraint", constraint_kind="check"), ("locks", "locks", "locks")),
    ("AddConstraint unique", op("AddConstraint", constraint_kind="unique"), ("locks", "safe", "locks")),
    ("AddConstraintNotValid", op("AddConstraintNotValid", constraint_kind="check", not_valid=True),
     ("safe", "safe", "safe")),
    ("RunSQL", op("RunSQL", table=None, sql="UPDATE books_book SET pages = 0"), ("locks", "locks", "locks")),
    ("RunPython", op("RunPython", table=None, code="fill"), ("locks", "locks", "locks")),
    ("CreateModel", op("CreateModel", table="books_new"), ("safe", "safe", "safe")),
    ("SeparateDatabaseAndState, state only", op("SeparateDatabaseAndState", table=None, database_operations=[]),
     ("safe", "safe", "safe")),
    ("SeparateDatabaseAndState with RemoveField", op("SeparateDatabaseAndState", table=None,
                                                     database_operations=[op("RemoveField", old_field=field())]),
     ("data_loss", "data_loss", "data_loss")),
    ("a third-party operation", op("AddTrigger"), ("locks", "locks", "locks")),
]


@pytest.mark.parametrize("name, detail, expected", CASES, ids=[case[0] for case in CASES])
@pytest.mark.parametrize("engine", ["postgresql", "mariadb", "sqlite"])
def test_each_operation_has_its_level_per_engine(name, detail, expected, engine):
    result = risk.classify(detail, SERVERS[engine], STATS)
    assert result["level"] == expected[["postgresql", "mariadb", "sqlite"].index(engine)], result["reasons"]
    assert result["reasons"] and all(isinstance(text, str) and text for text in result["reasons"])
    if detail.get("table") == "books_book":
        assert (result["rows"], result["bytes"]) == (5000, 2 * 1024 * 1024)


def test_the_reasons_name_the_cause_and_the_table_size():
    reasons = risk.classify(op("AddIndex", index_kind="Index"), PG, STATS)["reasons"]
    assert "CONCURRENTLY" in reasons[0] and "~5000 rows" in reasons[0] and "2.0 MB" in reasons[0]
    reasons = risk.classify(op("AddField", field=field(has_default=True)), PG, STATS)["reasons"]
    assert "database default" in reasons[0]
    assert "cannot be analysed" in risk.classify(op("RunSQL", table=None), PG, STATS)["reasons"][0]
    # The worst reason comes first: RemoveField loses data before it breaks old code.
    reasons = risk.classify(op("RemoveField"), PG, STATS)["reasons"]
    assert reasons[0].startswith("drops the column") and len(reasons) == 2


def test_versions_decide_what_is_instant():
    nullable_default = op("AddField", field=field(null=True, has_default=True))
    assert risk.classify(nullable_default, PG, STATS)["level"] == "safe"
    assert risk.classify(nullable_default, PG10, STATS)["level"] == "locks"
    assert risk.classify(nullable_default, MARIADB, STATS)["level"] == "safe"
    assert risk.classify(nullable_default, MARIADB_OLD, STATS)["level"] == "locks"
    assert risk.classify(nullable_default, MYSQL8, STATS)["level"] == "safe"
    # An unknown version is taken as old.
    assert risk.classify(nullable_default, risk.Server("mysql", "", "mariadb"), STATS)["level"] == "locks"


def test_widening_a_varchar_is_metadata_only_on_postgresql_but_narrowing_is_not():
    widen = op("AlterField", old_field=field(db_type="varchar(50)"), field=field(db_type="varchar(200)"))
    narrow = op("AlterField", old_field=field(db_type="varchar(200)"), field=field(db_type="varchar(50)"))
    assert risk.classify(widen, PG, STATS)["level"] == "safe"
    assert risk.classify(narrow, PG, STATS)["level"] == "incompatible"
    assert risk.classify(widen, MARIADB, STATS)["level"] == "incompatible"


def test_making_a_column_not_null_scans_and_breaks_old_writers():
    result = risk.classify(op("AlterField", old_field=field(null=True), field=field()), PG, STATS)
    assert result["level"] == "incompatible"
    assert any("every row is checked" in text for text in result["reasons"])


def test_fulltext_index_on_mariadb_is_not_online():
    assert risk.classify(op("AddIndex", index_kind="FULLTEXT"), MARIADB, STATS)["level"] == "locks"


def test_backwards_steps_are_the_reverse():
    assert risk.classify(op("AddField", field=field(null=True)), PG, STATS, backwards=True)["level"] == "data_loss"
    assert risk.classify(op("RemoveField"), PG, STATS, backwards=True)["level"] == "incompatible"
    assert risk.classify(op("AddIndex"), PG, STATS, backwards=True)["level"] == "locks"


def test_an_operation_that_could_not_be_described_counts_as_locks():
    result = risk.classify({"class": "AddField", "error": "KeyError: 'book'"}, PG, STATS)
    assert result["level"] == "locks" and "KeyError" in result["reasons"][0]


def test_levels_are_ordered_and_the_plan_risk_is_the_highest():
    assert [risk.rank(level) for level in risk.LEVELS] == [0, 1, 2, 3]
    assert risk.highest(["safe", "data_loss", "locks"]) == "data_loss"
    assert risk.highest([]) == "safe"


PLAN = [{"migration": "books.0006_x", "backwards": False, "operations": [
    {"type": "AddField", "description": "Add field rating to book", "detail": op("AddField", field=field(null=True))},
    {"type": "AddIndex", "description": "Create index on title", "detail": op("AddIndex", index_kind="Index")},
]}]


def test_plan_risks_and_max_risk():
    risks = risk.plan_risks(PLAN, {"vendor": "postgresql", "version": "15.4", "flavour": "postgresql"}, STATS)
    assert [(item["migration"], item["type"], item["table"], item["level"], item["rows"]) for item in risks] == [
        ("books.0006_x", "AddField", "books_book", "safe", 5000),
        ("books.0006_x", "AddIndex", "books_book", "locks", 5000)]
    assert risk.above(risks, None) == [] and risk.refusal(risks, None) is None
    assert risk.refusal(risks, "locks") is None
    over = risk.above(risks, "safe")
    assert [item["type"] for item in over] == ["AddIndex"]
    message = risk.refusal(risks, "safe")
    assert "above max_risk safe" in message and "books.0006_x Create index on title on books_book" in message
    assert "nothing was changed" in message


def test_migration_facts_carry_the_risks_filtered_by_app():
    result = {"django_version": "5.2", "database": {"vendor": "postgresql", "NAME": "shop"},
              "facts": {"apps": {}, "plan": PLAN, "ghosts": [], "conflicts": {}, "inconsistent": [],
                        "server": {"vendor": "postgresql", "version": "15.4"}, "table_stats": STATS}}
    facts = state.migration_facts(result)
    assert facts["risk"] == "locks" and len(facts["risks"]) == 2
    assert state.migration_facts(result, apps=["authors"])["risks"] == []
    assert state.migration_facts(result, apps=["authors"])["risk"] == "safe"


def test_the_deploy_report_lists_each_risky_operation_on_one_line():
    risks = risk.plan_risks(PLAN, PG, STATS)
    migrated = {"changed": True, "msg": "applied 1 step(s)", "plan": PLAN, "applied": [],
                "risks": risks, "risk": "locks"}
    report = build_report("deploy", [{"host": "app1", "migrate": migrated}], 100.0)
    assert [item["type"] for item in report["migrations"][0]["risks"]] == ["AddIndex"]  # safe ones left out
    markdown = render_markdown(report)
    assert "Risky operations (plan risk: **locks**):" in markdown
    line = [text for text in markdown.splitlines() if text.startswith("- **locks** books.0006_x")]
    assert len(line) == 1 and "books_book (~5000 rows, 2097152 bytes)" in line[0] and "CONCURRENTLY" in line[0]
    assert "Add field rating" not in markdown
