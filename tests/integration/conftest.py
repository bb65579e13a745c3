"""Fixtures for the integration tests: real databases, created and dropped per test."""
import os

import pytest

from databases import (
    ServerUnavailable,
    create_mysql,
    create_postgres,
    create_sqlite,
    drop_mysql,
    drop_postgres,
)

ENGINES = ("sqlite", "postgresql", "mysql")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(engine, error):
    message = "%s server unavailable: %s" % (engine, error)
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing database is a failure)", pytrace=False)
    pytest.skip(message)


def make_database(engine, tmp_path):
    """Create a throw-away database of ``engine``; returns (db, cleanup)."""
    if engine == "sqlite":
        return create_sqlite(tmp_path), lambda: None
    create, drop = {"postgresql": (create_postgres, drop_postgres),
                    "mysql": (create_mysql, drop_mysql)}[engine]
    try:
        db = create()
    except ServerUnavailable as error:
        _unavailable(engine, error)
    return db, lambda: drop(db)


@pytest.fixture(params=ENGINES)
def database(request, tmp_path):
    """A fresh empty database on each engine in turn."""
    db, cleanup = make_database(request.param, tmp_path)
    yield db
    cleanup()


@pytest.fixture
def postgres_database(tmp_path):
    db, cleanup = make_database("postgresql", tmp_path)
    yield db
    cleanup()


@pytest.fixture
def mysql_database(tmp_path):
    db, cleanup = make_database("mysql", tmp_path)
    yield db
    cleanup()


@pytest.fixture
def sqlite_database(tmp_path):
    db, cleanup = make_database("sqlite", tmp_path)
    yield db
    cleanup()


@pytest.fixture
def apps():
    """Collects the App objects (tests/integration/test_playbooks.py) of a test; their servers
    are stopped afterwards."""
    made = []
    yield made
    for app in made:
        app.stop()
