"""state.py: pure functions over an introspection result."""
from ansible_collections.dbsafe.django.plugins.module_utils import state


def step(migration, backwards=False, ops=()):
    return {
        "migration": migration,
        "backwards": backwards,
        "operations": [
            {"type": t, "description": "%s on %s" % (t, migration), "reversible": r}
            for t, r in ops
        ],
    }


RESULT = {
    "django_version": "5.2.19",
    "database": {"alias": "default", "vendor": "postgresql", "NAME": "shop", "HOST": "db1",
                 "PORT": "5432", "USER": "shop", "PASSWORD": "s3cret"},
    "facts": {
        "apps": {
            "books": [
                {"name": "0001_initial", "applied": True, "applied_at": "2026-01-01T00:00:00",
                 "replaces": []},
                {"name": "0002_pages", "applied": False, "applied_at": None, "replaces": []},
            ],
            "authors": [
                {"name": "0001_initial", "applied": True, "applied_at": "2026-01-01T00:00:00",
                 "replaces": []},
            ],
        },
        "plan": [step("books.0002_pages", ops=[("AddField", True)])],
        "ghosts": ["books.0009_gone", "authors.0007_gone"],
        "conflicts": {"authors": ["0002_a", "0002_b"]},
        "inconsistent": [{"migration": "books.0003_x", "missing_dependency": "books.0002_pages"}],
        "pending_changes": {"books": ["Add field isbn13 to book"]},
        "applied_rows": ["authors.0001_initial", "books.0001_initial", "books.0009_gone"],
    },
}


def test_migration_facts_never_carry_the_password():
    facts = state.migration_facts(RESULT)
    assert "s3cret" not in repr(facts)
    assert facts["database"] == {"alias": "default", "vendor": "postgresql", "name": "shop",
                                 "host": "db1", "port": "5432", "user": "shop",
                                 "key": "postgresql|db1|5432|shop"}


def test_migration_facts_counts_and_lists():
    facts = state.migration_facts(RESULT)
    assert facts["unapplied_count"] == 1
    assert facts["plan"] == ["books.0002_pages"]
    assert facts["ghosts"] == ["books.0009_gone", "authors.0007_gone"]
    assert facts["apps"]["books"][1] == {"name": "0002_pages", "applied": False,
                                         "applied_at": None}


def test_migration_facts_filtered_by_app():
    facts = state.migration_facts(RESULT, apps=["books"])
    assert list(facts["apps"]) == ["books"]
    assert facts["ghosts"] == ["books.0009_gone"]
    assert facts["conflicts"] == {}
    assert facts["inconsistent"] == RESULT["facts"]["inconsistent"]
    assert facts["pending_changes"] == {"books": ["Add field isbn13 to book"]}
    assert state.migration_facts(RESULT, apps=["authors"])["inconsistent"] == []


def test_lossy_steps_forward_removals_and_every_backwards_step():
    plan = [
        step("books.0002", ops=[("AddField", True)]),
        step("books.0003", ops=[("RemoveField", True), ("AddField", True)]),
        step("books.0004", ops=[("DeleteModel", True)]),
        step("authors.0002", backwards=True, ops=[("AddField", True)]),
    ]
    lossy = state.lossy_steps(plan)
    assert [s["migration"] for s in lossy] == ["books.0003", "books.0004", "authors.0002"]
    assert "RemoveField" in lossy[0]["reason"]


def test_irreversible_only_counts_backwards_steps():
    plan = [
        step("books.0004", ops=[("RunPython", False)]),
        step("books.0003", backwards=True, ops=[("RunSQL", False), ("AddField", True)]),
    ]
    assert state.irreversible_steps(plan) == [
        {"migration": "books.0003", "operations": ["RunSQL on books.0003"]}
    ]


def test_plan_names_mark_backwards_steps():
    plan = [step("books.0003", backwards=True), step("books.0002", backwards=True)]
    assert state.plan_names(plan) == ["-books.0003", "-books.0002"]


def test_removals_in_apps_without_applied_migrations_lose_nothing():
    plan = [
        step("books.0001", ops=[("CreateModel", True)]),
        step("books.0005", ops=[("RemoveField", True)]),
        step("contenttypes.0002", ops=[("RemoveField", True)]),
    ]
    assert [s["migration"] for s in state.lossy_steps(plan, ["contenttypes.0001"])] == \
        ["contenttypes.0002"]
    assert state.lossy_steps(plan, []) == []
    assert len(state.lossy_steps(plan)) == 2


def test_plan_problems_names_steps_not_reached_and_what_is_left():
    facts = {"applied_rows": ["books.0001_initial", "books.0003_x"],
             "plan": ["books.0004_y"], "pending_changes": {"books": ["Add field z to book"]},
             "conflicts": {}}
    plan = [step("books.0002_pages"), step("books.0003_x", backwards=True)]

    problems = state.plan_problems(facts, plan, complete=True)

    assert problems == ["books.0002_pages was not applied", "books.0003_x is still applied",
                        "not applied: books.0004_y",
                        "makemigrations --check is not clean: books: Add field z to book"]


def test_plan_problems_of_one_app_to_a_target_ignore_the_rest_of_the_plan():
    facts = {"applied_rows": ["books.0002_pages"], "plan": ["authors.0002_x"],
             "pending_changes": {}, "conflicts": {}}

    assert state.plan_problems(facts, [step("books.0002_pages")], complete=False) == []


def test_plan_problems_read_the_applied_set_from_the_apps_too():
    facts = {"apps": {"books": [{"name": "0001_initial", "applied": True}]},
             "plan": [], "conflicts": {"books": ["0002_a", "0002_b"]}}

    assert state.plan_problems(facts, [step("books.0001_initial")]) == [
        "conflicting migrations in books: 0002_a, 0002_b"]


def test_the_database_key_is_the_same_for_hosts_of_one_server_database():
    server = {"vendor": "postgresql", "NAME": "shop", "HOST": "db1", "PORT": "5432"}
    other = dict(server, NAME="shop_staging")

    assert state.public_database(server)["key"] == state.public_database(dict(server))["key"]
    assert state.public_database(server)["key"] != state.public_database(other)["key"]


def test_an_sqlite_database_key_belongs_to_its_machine():
    sqlite = {"vendor": "sqlite", "NAME": "/srv/shop/db.sqlite3"}

    assert (state.public_database(sqlite, hostname="web1")["key"]
            != state.public_database(sqlite, hostname="web2")["key"])


def test_serious_checks_and_their_text_as_django_prints_them():
    checks = [{"id": "shop.E001", "level": "ERROR", "serious": True, "obj": "shop.Order",
               "message": "needs the UUID migration", "hint": "Run migrate_uuids."},
              {"id": "shop.W001", "level": "WARNING", "serious": False, "obj": None,
               "message": "only a warning", "hint": None}]
    serious = state.serious_checks({"checks": checks})
    assert [m["id"] for m in serious] == ["shop.E001"]
    assert state.check_text(serious[0]) == \
        "shop.Order: (shop.E001) needs the UUID migration HINT: Run migrate_uuids."
    assert state.serious_checks({}) == []


def test_code_steps_name_runpython_and_runsql():
    add_field = {"type": "AddField", "description": "Add field x", "reversible": True}
    run_python = {"type": "RunPython", "description": "Raw Python operation", "reversible": True}
    run_sql = {"type": "RunSQL", "description": "Raw SQL operation", "reversible": True}
    plan = [{"migration": "books.0002", "backwards": False, "operations": [add_field]},
            {"migration": "books.0003", "backwards": False, "operations": [run_python, run_sql]}]
    assert state.code_steps(plan) == [{"migration": "books.0003", "operations": [
        "RunPython: Raw Python operation", "RunSQL: Raw SQL operation"]}]


def test_row_changes_list_only_tables_whose_count_changed():
    before = {"authors_author": {"rows": 100, "hash": "x"}, "books_book": {"rows": 3},
              "django_migrations": {"rows": 20}, "old_table": {"rows": 5},
              "empty_gone": {"rows": 0}}
    after = {"authors_author": 60, "books_book": 3, "django_migrations": 21, "new_table": 2,
             "new_empty": 0}
    assert state.row_changes(before, after) == [
        {"table": "authors_author", "before": 100, "after": 60, "change": -40},
        {"table": "new_table", "before": None, "after": 2, "change": 2},
        {"table": "old_table", "before": 5, "after": None, "change": -5},
    ]
    assert state.row_changes(None, {"t": 0}) == []


def test_a_django_outside_the_tested_range_gets_a_warning_naming_it():
    for inside in ("3.2.25", "4.2.30", "5.2.19", "6.0", "6.1.3", "6.1rc1"):
        assert state.untested_django(inside) is None, inside
    for outside in ("3.1.14", "2.2", "6.2.0", "7.0a1"):
        warning = state.untested_django(outside)
        assert outside in warning and "3.2 to 6.1" in warning


def test_migration_facts_list_edited_migrations_per_app_and_the_tracking_state():
    checksums = {"enabled": True, "active": True, "table": "dbsafe_migration_checksums", "recorded": 3,
                 "unrecorded": 1, "errors": {}, "error": None,
                 "edited": [{"migration": "books.0001_initial", "recorded_at": None},
                            {"migration": "authors.0001_initial", "recorded_at": None}]}
    result = dict(RESULT, facts=dict(RESULT["facts"], checksums=checksums))
    facts = state.migration_facts(result)
    assert facts["edited"] == ["books.0001_initial", "authors.0001_initial"]
    assert facts["checksums"] == {"enabled": True, "active": True, "table": "dbsafe_migration_checksums",
                                  "recorded": 3, "unrecorded": 1}
    assert state.migration_facts(result, apps=["authors"])["edited"] == ["authors.0001_initial"]
    # An older introspection (no checksums): not enabled, nothing edited.
    assert state.migration_facts(RESULT)["edited"] == []
    assert state.migration_facts(RESULT)["checksums"]["enabled"] is False


def test_row_changes_leave_our_checksum_table_out():
    assert state.row_changes({}, {"dbsafe_migration_checksums": 12, "books_book": 1}) == [
        {"table": "books_book", "before": None, "after": 1, "change": 1}]
