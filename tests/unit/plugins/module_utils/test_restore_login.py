# -*- coding: utf-8 -*-
"""A privileged restore login: the connection it uses, and whose access the preflight checks."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.dbsafe.django.plugins.module_utils.access_check import refuse_inaccessible
from ansible_collections.dbsafe.django.plugins.module_utils.connection import Connection
from ansible_collections.dbsafe.django.plugins.module_utils.errors import PreflightRefused


def test_as_user_keeps_the_database_and_changes_only_the_login():
    app = Connection("postgresql", "shop", "db1", 5433, "app", "app-secret",
                     options={"connect_timeout": 3}, alias="default")
    admin = app.as_user("restorer", "admin-secret")
    assert (admin.engine, admin.name, admin.host, admin.port, admin.alias) == (
        "postgresql", "shop", "db1", 5433, "default")
    assert admin.options == {"connect_timeout": 3}
    assert (admin.user, admin.password) == ("restorer", "admin-secret")
    # The application's connection is untouched (backups keep using it).
    assert (app.user, app.password) == ("app", "app-secret")
    assert "admin-secret" not in repr(admin.public())


def test_as_user_without_a_user_is_the_same_connection():
    app = Connection("mysql", "shop", user="app", password="pw")
    assert app.as_user("") is app
    assert app.as_user(None, "ignored") is app


class _Access:
    """An engine's access answer: write problems always, restore problems with restore=True."""

    def __init__(self, write=(), restore=()):
        self.write, self.restore, self.asked = list(write), list(restore), []

    def access_problems(self, restore=True):
        self.asked.append(restore)
        return self.write + (self.restore if restore else [])


def test_the_restore_check_is_made_for_the_restore_login():
    app = _Access(restore=["extension citext is owned by postgres"])
    admin = _Access()
    refuse_inaccessible(app, restore=True, restore_engine=admin)
    assert app.asked == [False] and admin.asked == [True]


def test_the_write_check_stays_with_the_application_user():
    app = _Access(write=["the database is read-only"])
    with pytest.raises(PreflightRefused) as refused:
        refuse_inaccessible(app, restore=True, restore_engine=_Access())
    assert refused.value.msg.count("read-only") == 1
    assert "restore_login_user" not in refused.value.msg


def test_without_a_restore_login_a_restore_problem_suggests_one():
    app = _Access(write=["the database is read-only"], restore=["view v is defined by root"])
    with pytest.raises(PreflightRefused) as refused:
        refuse_inaccessible(app, restore=True)
    assert refused.value.msg.count("read-only") == 1
    assert "view v is defined by root" in refused.value.msg
    assert "restore_login_user" in refused.value.msg
    assert refused.value.details["problems"] == ["the database is read-only", "view v is defined by root"]


def test_a_privileged_login_that_cannot_restore_is_refused_too():
    admin = _Access(restore=["view v is defined by root"])
    with pytest.raises(PreflightRefused) as refused:
        refuse_inaccessible(_Access(), restore=True, restore_engine=admin)
    assert "view v is defined by root" in refused.value.msg


def test_the_restorer_is_the_login_on_the_same_database_keeping_the_owners():
    from ansible_collections.dbsafe.django.plugins.module_utils.access_check import restorer_for
    from ansible_collections.dbsafe.django.plugins.module_utils.engines.registry import engine_for

    app = engine_for(Connection("postgresql", "shop", "db1", 5432, "app", "app-secret"), None)
    assert restorer_for(app, None, "ignored") is app and restorer_for(app, "") is app
    restorer = restorer_for(app, "restorer", "admin-secret")
    assert restorer is not app and restorer.name == app.name
    assert (restorer.connection.user, restorer.connection.password) == ("restorer", "admin-secret")
    assert restorer.connection.name == "shop" and restorer.connection.host == "db1"
    # pg_restore sets the recorded owners (the app's user) instead of making the login own all.
    assert restorer._owner_options() == [] and app._owner_options() == ["--no-owner"]
    assert restorer.env()["PGUSER"] == "restorer" and restorer.env()["PGPASSWORD"] == "admin-secret"
