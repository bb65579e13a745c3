"""guard.py: the pure decisions of the guarded migrate."""
from ansible_collections.dbsafe.django.plugins.module_utils.guard import (
    GuardOptions,
    preflight_problems,
    verification_problems,
)


def result(**facts):
    base = {"conflicts": {}, "inconsistent": [], "ghosts": [], "pending_changes": {},
            "plan": [], "applied_rows": []}
    base.update(facts)
    return {"facts": base}


def step(name, backwards=False, reversible=True):
    return {"migration": name, "backwards": backwards,
            "operations": [{"type": "RunPython", "description": "Raw Python operation",
                            "reversible": reversible}]}


def test_a_clean_project_has_no_preflight_problem():
    assert preflight_problems(result(plan=[step("books.0002")]), GuardOptions()) == []


def test_each_refusal_says_what_to_do():
    problems = preflight_problems(result(
        conflicts={"books": ["0003_a", "0003_b"]},
        inconsistent=[{"migration": "books.0003", "missing_dependency": "books.0002"}],
        ghosts=["books.0009_gone"],
        pending_changes={"books": ["Add field isbn13 to book"]},
        plan=[step("books.0004", backwards=True, reversible=False)],
    ), GuardOptions(fake=True))
    text = "\n".join(problems)
    assert "makemigrations --merge books" in text
    assert "books.0003 is applied but its dependency books.0002 is not" in text
    assert "allow_ghosts" in text
    assert "forget to commit a migration" in text
    assert "books.0004 cannot be unapplied" in text
    assert "allow_fake" in text
    assert len(problems) == 6


def test_allowances_lift_their_refusals_only():
    options = GuardOptions(allow_ghosts=True, fake=True, allow_fake=True)
    assert preflight_problems(result(ghosts=["books.0009_gone"]), options) == []


def test_verification_checks_every_planned_step_and_pending_changes():
    before = result(ghosts=["books.0009_gone"])
    plan = [step("books.0002"), step("books.0003"), step("authors.0002", backwards=True)]
    after = result(applied_rows=["books.0002", "authors.0002"],
                   pending_changes={"books": ["Add field x"]},
                   ghosts=["books.0009_gone", "books.0010_new"])
    problems = verification_problems(before, after, plan)
    assert problems == [
        "books.0003 was not applied",
        "authors.0002 is still applied",
        "makemigrations --check is not clean: books: Add field x",
        "new ghost migrations: books.0010_new",
    ]
    good = result(applied_rows=["books.0002", "books.0003"], ghosts=["books.0009_gone"])
    assert verification_problems(before, good, plan) == []


def test_unreadable_state_after_migrate_is_a_verification_failure():
    problems = verification_problems(result(), {"facts": None, "facts_error": "gone away"}, [])
    assert problems == ["cannot read the migration state after migrate: gone away"]


def test_app_without_migration_targets_the_apps_latest():
    assert GuardOptions(app="books").target == {"app": "books", "migration": None}
    assert GuardOptions().target is None


def test_a_system_check_error_refuses_naming_its_id_and_hint_unless_skip_checks():
    checks = [{"id": "shop.E001", "level": "ERROR", "serious": True, "obj": None,
               "message": "MariaDB 10.7+ needs the UUID migration",
               "hint": "Run manage.py migrate_uuids first."},
              {"id": "shop.W001", "level": "WARNING", "serious": False, "obj": None,
               "message": "only a warning", "hint": None}]
    problems = preflight_problems(result(plan=[step("books.0002")], checks=checks),
                                  GuardOptions())
    assert len(problems) == 1
    assert "shop.E001" in problems[0] and "Run manage.py migrate_uuids first." in problems[0]
    assert "skip_checks" in problems[0]
    assert preflight_problems(result(plan=[step("books.0002")], checks=checks),
                              GuardOptions(skip_checks=True)) == []


EDITED = {"enabled": True, "active": True, "table": "dbsafe_migration_checksums",
          "edited": [{"migration": "books.0003_author", "recorded_at": "2026-12-01T10:00:00+00:00"}]}


def test_edited_applied_migrations_refuse_naming_them_unless_allowed():
    problems = preflight_problems(result(checksums=EDITED), GuardOptions())
    assert len(problems) == 1
    assert "books.0003_author" in problems[0] and "new migration" in problems[0]
    assert "allow_edited: true" in problems[0]
    assert preflight_problems(result(checksums=EDITED), GuardOptions(allow_edited=True)) == []
    assert preflight_problems(result(checksums=EDITED), GuardOptions(track_checksums=False)) == []
    # Not started yet (no table) or nothing edited: nothing to refuse.
    assert preflight_problems(result(checksums={"enabled": True, "active": False, "edited": []}), GuardOptions()) == []


def test_unreadable_checksums_refuse_saying_how_to_go_on():
    broken = {"enabled": True, "active": False, "table": "dbsafe_migration_checksums", "edited": [],
              "error": "ProgrammingError: permission denied for table dbsafe_migration_checksums"}
    problems = preflight_problems(result(checksums=broken), GuardOptions())
    assert len(problems) == 1 and "permission denied" in problems[0] and "track_checksums: false" in problems[0]
    assert preflight_problems(result(checksums=broken), GuardOptions(track_checksums=False)) == []
