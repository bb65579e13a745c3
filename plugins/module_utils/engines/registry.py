# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``engine_for(connection, runner)``: the database engine for a connection;
``dump_format(name)``: what the engines know about a dump format, by its name.

It lives here, not in ``engines/__init__.py``: ansible-core 2.17's sanity test empty-init
requires empty ``__init__.py`` files under module_utils (and ansible-lint forbids ignoring it).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbsafe.django.plugins.module_utils.engines.base import DumpFormat
from ansible_collections.dbsafe.django.plugins.module_utils.engines.mysql import MysqlEngine
from ansible_collections.dbsafe.django.plugins.module_utils.engines.postgresql import (
    PostgresqlEngine,
)
from ansible_collections.dbsafe.django.plugins.module_utils.engines.sqlite import SqliteEngine
from ansible_collections.dbsafe.django.plugins.module_utils.errors import EngineError

ENGINE_CLASSES = {
    "sqlite": SqliteEngine,
    "postgresql": PostgresqlEngine,
    "mysql": MysqlEngine,
}


def engine_for(connection, runner):
    """The Engine for ``connection`` (engine 'sqlite', 'postgresql' or 'mysql')."""
    try:
        engine_class = ENGINE_CLASSES[connection.engine]
    except KeyError:
        raise EngineError(
            "no engine for %r (supported: %s)" % (connection.engine, ", ".join(ENGINE_CLASSES))
        )
    return engine_class(connection, runner)


def dump_format(name):
    """The DumpFormat called ``name`` (format names are unique across the engines); for a name
    no engine knows (None, or a manifest from elsewhere) one that checks nothing of its own."""
    for engine_class in ENGINE_CLASSES.values():
        for dump in engine_class.dump_formats:
            if dump.name == name:
                return dump
    return DumpFormat()
