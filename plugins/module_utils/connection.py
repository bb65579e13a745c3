# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a database is: one plain object, from Django's settings or from module options.

The password lives only here, inside the module process; ``public()`` is what may go into a
result or a manifest.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbsafe.django.plugins.module_utils.errors import ProjectError

ENGINES = ("sqlite", "postgresql", "mysql")

# Seconds a client waits for the server to answer a new connection unless the alias's OPTIONS
# set connect_timeout: a host that accepts TCP and never answers must not hang a run.
CONNECT_TIMEOUT = 10

# Django's vendor names and ENGINE paths (including common third-party backends) to ours.
_VENDOR_TO_ENGINE = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "mysql": "mysql",
}
_ENGINE_ALIASES = {
    "sqlite3": "sqlite",
    "postgres": "postgresql",
    "postgis": "postgresql",
    "mariadb": "mysql",
}


def normalize_engine(value):
    """'django.db.backends.postgresql', 'postgres', 'mariadb', 'sqlite3' -> ours, or None."""
    if not value:
        return None
    name = str(value).rsplit(".", 1)[-1].lower()
    name = _ENGINE_ALIASES.get(name, name)
    return name if name in ENGINES else None


class Connection:
    """engine is 'sqlite', 'postgresql' or 'mysql'; for SQLite ``name`` is the file path."""

    def __init__(self, engine, name, host=None, port=None, user=None, password=None,
                 options=None, alias=None):
        self.engine = engine
        self.name = name
        self.host = host or None
        self.port = int(port) if port not in (None, "") else None
        self.user = user or None
        self.password = password or None
        self.options = dict(options or {})
        self.alias = alias

    @classmethod
    def from_django(cls, settings):
        """From the introspection's database entry (vendor + Django's settings dict)."""
        engine = _VENDOR_TO_ENGINE.get(settings.get("vendor")) or normalize_engine(
            settings.get("ENGINE")
        )
        if engine is None:
            raise ProjectError(
                "database alias %r uses %r, which dbsafe.django does not support "
                "(supported: SQLite, PostgreSQL, MySQL/MariaDB)"
                % (settings.get("alias"), settings.get("ENGINE")),
            )
        return cls(
            engine,
            settings.get("NAME"),
            host=settings.get("HOST"),
            port=settings.get("PORT"),
            user=settings.get("USER"),
            password=settings.get("PASSWORD"),
            options=settings.get("OPTIONS") or {},
            alias=settings.get("alias"),
        )

    @classmethod
    def from_params(cls, params):
        """From explicit module options: engine, name, host, port, user, password."""
        engine = normalize_engine(params.get("engine"))
        if engine is None:
            raise ProjectError(
                "engine must be one of sqlite, postgresql, mysql (got %r)" % params.get("engine")
            )
        if not params.get("name"):
            raise ProjectError("name (the database name, or the file for SQLite) is required")
        return cls(engine, params["name"], params.get("host"), params.get("port"),
                   params.get("user"), params.get("password"))

    def connect_timeout(self):
        """Seconds to wait for the server when connecting: OPTIONS connect_timeout, else 10."""
        try:
            return max(1, int(self.options.get("connect_timeout")))
        except (TypeError, ValueError):
            return CONNECT_TIMEOUT

    def public(self):
        """What may be shown: everything but the password."""
        return {
            "engine": self.engine,
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "alias": self.alias,
        }

    def describe(self):
        """'postgresql database "shop" at db1:5432' — for error messages."""
        if self.engine == "sqlite":
            return "sqlite database %s" % self.name
        return "%s database %r at %s:%s" % (
            self.engine, self.name, self.host or "localhost", self.port or "default port"
        )

    def with_name(self, name):
        """The same server and credentials, another database (scratch / restore-into)."""
        return Connection(self.engine, name, self.host, self.port, self.user, self.password,
                          self.options, self.alias)

    def as_user(self, user, password=None):
        """The same database, logged in as ``user`` (e.g. the privileged account a restore runs
        as); the original when no user is given. The password stays here, like the app's."""
        if not user:
            return self
        return Connection(self.engine, self.name, self.host, self.port, user, password,
                          self.options, self.alias)
