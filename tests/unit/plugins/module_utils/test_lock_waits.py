"""The migrating connection's lock waits (issue 17, item 1): when a step that gave up waiting for
a lock may be tried again, the backoff between tries, and the options' own checks (pure)."""
import pytest

from ansible_collections.dbsafe.django.plugins.module_utils import introspect
from ansible_collections.dbsafe.django.plugins.module_utils.guard import GuardOptions


@pytest.mark.parametrize("in_step, atomic, rollback_ddl, changed, safe", [
    # PostgreSQL/SQLite, atomic migration: the step's transaction rolled back, whatever it ran.
    (True, True, True, True, True),
    # PostgreSQL, atomic = False (e.g. AddIndexConcurrently): only if nothing had changed.
    (True, False, True, True, False),
    (True, False, True, False, True),
    # MySQL/MariaDB: DDL commits as it goes.
    (True, True, False, True, False),
    (True, True, False, False, True),
    # Between steps (a post_migrate handler): only if nothing had changed since the last step.
    (False, True, True, True, False),
    (False, True, True, False, True),
])
def test_retry_only_when_the_wait_left_nothing_behind(in_step, atomic, rollback_ddl, changed, safe):
    assert introspect.retry_is_safe(in_step, atomic, rollback_ddl, changed) is safe


@pytest.mark.parametrize("sql, changes", [
    ("SELECT 1", False),
    ("  select * from books_book", False),
    ("SET SESSION lock_wait_timeout = 5", False),
    ("SAVEPOINT s1", False),
    ("RELEASE SAVEPOINT s1", False),
    ("PRAGMA foreign_keys = OFF", False),
    ("(SELECT 1) UNION (SELECT 2)", False),
    ("ALTER TABLE books_book ADD COLUMN note text NULL", True),
    ("UPDATE books_book SET pages = 1", True),
    ("INSERT INTO django_migrations (app, name, applied) VALUES (%s, %s, %s)", True),
    ("WITH gone AS (DELETE FROM t RETURNING id) SELECT count(*) FROM gone", True),
    ("", True),
    (b"SELECT 1", True),  # a text we cannot read counts as a change
])
def test_what_counts_as_a_change(sql, changes):
    assert introspect.changes_something(sql) is changes


@pytest.mark.parametrize("sql, leaves", [
    ('CREATE INDEX CONCURRENTLY "book_title_idx" ON "books_book" ("title")', True),
    ('CREATE UNIQUE INDEX CONCURRENTLY "u" ON "books_book" ("slug")', True),
    ('REINDEX INDEX CONCURRENTLY "book_title_idx"', True),
    ('CREATE INDEX "book_title_idx" ON "books_book" ("title")', False),
    ('ALTER TABLE "books_book" ADD COLUMN "note" text NULL', False),
    ('DROP INDEX CONCURRENTLY IF EXISTS "book_title_idx"', False),
])
def test_a_failed_concurrent_index_build_is_not_retried(sql, leaves):
    """It leaves an INVALID index behind: the step is restored, never tried again over it."""
    assert introspect.leaves_something_when_failing(sql) is leaves


def test_backoff_doubles_with_jitter_and_a_cap():
    assert introspect.retry_delay(1, lambda: 0.5) == 1.0
    assert introspect.retry_delay(2, lambda: 0.5) == 2.0
    assert introspect.retry_delay(4, lambda: 0.5) == 8.0
    # Jitter: 0.5x to 1.5x of the base.
    assert introspect.retry_delay(3, lambda: 0.0) == 2.0
    assert introspect.retry_delay(3, lambda: 0.999) == pytest.approx(5.996)
    assert introspect.retry_delay(20, lambda: 0.5) == introspect.RETRY_DELAY_CAP


class _DriverError(Exception):
    pass


def _wrapped(driver_error):
    """How Django raises a driver's error: its own class with the driver's args, raised from it."""
    django_error = type("OperationalError", (Exception,), {})(*driver_error.args)
    django_error.__cause__ = driver_error
    return django_error


def test_lock_waits_are_told_from_other_failures():
    pg = _DriverError("canceling statement due to lock timeout")
    pg.pgcode = "55P03"
    assert introspect.lock_wait_error(_wrapped(pg))
    psycopg3 = _DriverError("canceling statement due to lock timeout")
    psycopg3.sqlstate = "55P03"
    assert introspect.lock_wait_error(_wrapped(psycopg3))
    assert introspect.lock_wait_error(_wrapped(_DriverError(1205, "Lock wait timeout exceeded")))
    statement = _DriverError("canceling statement due to statement timeout")
    statement.pgcode = "57014"
    assert not introspect.lock_wait_error(_wrapped(statement))
    assert not introspect.lock_wait_error(_wrapped(_DriverError(1054, "Unknown column")))
    assert not introspect.lock_wait_error(KeyboardInterrupt())
    assert not introspect.lock_wait_error(None)


def test_option_values_are_checked_before_anything_runs():
    assert GuardOptions().problems() == []
    assert GuardOptions(db_lock_timeout=0, db_lock_retries=0).problems() == []
    problems = GuardOptions(db_lock_timeout=-1, db_lock_retries=-2, db_statement_timeout=0,
                            keep=0).problems()
    assert problems == [
        "keep must be 1 or more (got 0)",
        "db_lock_timeout must not be negative (got -1)",
        "db_lock_retries must not be negative (got -2)",
        "db_statement_timeout must be 1 second or more, or not set for no limit (got 0)",
    ]
    assert GuardOptions(db_lock_timeout=2, db_lock_retries=1).db_timeouts == {
        "lock_wait": 2, "retries": 1, "statement": None}
