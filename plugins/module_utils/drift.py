# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The schema drift check: is the live schema what its applied migrations build?

1. One launch of the project's interpreter reads the live facts: the applied set (the rows of
   django_migrations) and where the database is.
2. The engine snapshots the live schema.
3. A scratch database is created next to it (same server; a file beside it for SQLite), a
   second launch migrates it to exactly the live applied set (not to the latest state), and the
   engine snapshots it.
4. ``snapshots.diff_snapshots`` (the collection's one comparer) compares the two schemas,
   order-insensitively; name-only differences are harmless and reported apart.

The scratch database (``drift_scratch.py``) is dropped in every case, also when the module is
interrupted.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fnmatch
import json

from ansible_collections.dbsafe.django.plugins.module_utils.drift_scratch import (
    Interrupted,
    ScratchDatabase,
)
from ansible_collections.dbsafe.django.plugins.module_utils.engines.registry import engine_for
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    DbsafeError,
    ProjectError,
)
from ansible_collections.dbsafe.django.plugins.module_utils.introspect import CHECKSUM_TABLE
from ansible_collections.dbsafe.django.plugins.module_utils.project import DjangoProject
from ansible_collections.dbsafe.django.plugins.module_utils.snapshots import (
    diff_snapshots,
    split_harmless,
)

_KIND_NAMES = {
    "primary_key": "primary key",
    "unique": "unique constraint",
    "foreign_keys": "foreign key",
    "checks": "check constraint",
    "indexes": "index",
}


class DriftOptions:
    """The module's options that steer the check (plain attributes, defaults as documented)."""

    def __init__(self, database="default", fail_on_drift=False, scratch=None,
                 ignore_tables=None, lock_timeout=300):
        self.database = database
        self.lock_timeout = lock_timeout
        self.fail_on_drift = fail_on_drift
        self.scratch = dict((k, v) for k, v in (scratch or {}).items() if v not in (None, ""))
        self.ignore_tables = list(ignore_tables or [])


class DriftFound(DbsafeError):
    """``fail_on_drift``: the live schema differs; the details are the full result."""


# -- pure helpers -------------------------------------------------------------------------------

def applied_rows(snapshot, launched):
    """The applied migrations as ``app.name``, from the snapshot read under the lock (the ones
    the project's launch read before it, ``launched``, where the snapshot has none)."""
    if snapshot.get("migrations") is None:
        return list(launched)
    return ["%s.%s" % (row[0], row[1]) for row in snapshot["migrations"]]


def ignored(table, patterns):
    return any(fnmatch.fnmatchcase(table, pattern) for pattern in patterns)


def schema_only(snapshot, ignore_tables=(), engine=None):
    """The part of a snapshot the drift check compares: the schema without ignored tables.

    No ``migrations`` (the django_migrations rows are not schema: ghosts and squash records
    differ by history), no table contents, and not our own table of migration checksums
    (the guarded migrate's, not the migrations'). On MySQL/MariaDB without the foreign keys'
    indexes InnoDB keeps or drops by itself (``without_innodb_fk_indexes``).
    """
    schema = snapshot.get("schema") or {}
    schema = dict((table, value) for table, value in schema.items()
                  if not ignored(table, ignore_tables) and table != CHECKSUM_TABLE)
    if engine == "mysql":
        schema = dict((table, without_innodb_fk_indexes(value))
                      for table, value in schema.items())
    return {"schema": schema}


def without_innodb_fk_indexes(table):
    """The table without the plain indexes on exactly a foreign key's columns that another
    index (or the primary key, or a unique constraint) starting with those columns makes
    redundant.

    InnoDB needs an index whose first columns are a foreign key's: it creates one when there
    is none and drops it silently when another index starts with the same columns - but only
    the index it created. A dump writes that index as an explicit KEY, so after a restore it
    stays when such an index is added, where a database built by the migrations has none.
    Neither is a difference the migrations made.
    """
    indexes = [list(index["columns"]) for index in table.get("indexes") or []]
    keys = [list(table.get("primary_key") or [])]
    keys += [list(columns) for columns in table.get("unique") or []]
    redundant = []
    for fk in table.get("foreign_keys") or []:
        columns = list(fk["columns"])
        size = len(columns)
        # A longer plain index, or a key at least as long, serves the foreign key instead.
        if any(len(c) > size and c[:size] == columns for c in indexes) or \
                any(len(c) >= size and c[:size] == columns for c in keys):
            redundant.append(columns)
    if not redundant:
        return table
    kept = [index for index in table.get("indexes") or []
            if index.get("unique") or list(index["columns"]) not in redundant]
    gone = set("index %s(%s)" % (index.get("type"), ",".join(index["columns"]))
               for index in table.get("indexes") or [] if index not in kept)
    names = dict((name, what) for name, what in (table.get("names") or {}).items()
                 if what not in gone)
    return dict(table, indexes=kept, names=names)


def compare(expected, live, ignore_tables=(), engine=None):
    """(real differences, harmless name-only differences) between two engine snapshots of
    ``engine`` (the Connection's engine name)."""
    differences = diff_snapshots(schema_only(expected, ignore_tables, engine),
                                 schema_only(live, ignore_tables, engine), data=False)
    return split_harmless(differences)


def not_replayed(wanted, got):
    """Live rows the scratch database did not get (ghosts: no migration file to run)."""
    have = set(got)
    return sorted(row for row in wanted if row not in have)


def _canonical(value):
    return json.dumps(value, sort_keys=True, default=str)


def _delta(expected, live):
    """Items of two lists: (only expected, only live), order-insensitive."""
    expected, live = expected or [], live or []
    live_keys = set(_canonical(item) for item in live)
    expected_keys = set(_canonical(item) for item in expected)
    return ([item for item in expected if _canonical(item) not in live_keys],
            [item for item in live if _canonical(item) not in expected_keys])


def _item(kind, item):
    if kind == "foreign_keys" and isinstance(item, dict):
        text = "(%s) -> %s(%s)" % (",".join(item.get("columns") or []), item.get("ref_table"),
                                   ",".join(item.get("ref_columns") or []))
        if item.get("on_delete"):
            text += " on delete %s" % item["on_delete"]
        return text
    if kind == "indexes" and isinstance(item, dict):
        return "%s(%s)" % ("unique " if item.get("unique") else "",
                           ",".join(str(c) for c in item.get("columns") or []))
    if isinstance(item, list):
        return "(%s)" % ",".join(str(c) for c in item)
    return str(item)


def describe(difference):
    """One short phrase for a difference."""
    table, kind = difference["table"], difference["kind"]
    expected, live = difference["expected"], difference["live"]
    if kind == "missing_table":
        return "table %s is missing" % table
    if kind == "extra_table":
        return "table %s is not built by the migrations" % table
    if kind == "missing_column":
        return "column %s.%s is missing" % (table, ", ".join(sorted(expected)))
    if kind == "extra_column":
        return "column %s.%s is not built by the migrations" % (table, ", ".join(sorted(live)))
    if kind == "column":
        column = sorted(expected)[0]
        want, got = expected[column], live[column]
        keys = sorted(key for key in set(want) | set(got) if want.get(key) != got.get(key))
        return "column %s.%s: %s" % (table, column, ", ".join(
            "%s %s (expected %s)" % (key, _canonical(got.get(key)), _canonical(want.get(key)))
            for key in keys))
    if kind == "names":
        return "%s: constraint or index names differ (harmless)" % table
    if kind == "primary_key":
        return "%s: primary key %s (expected %s)" % (table, _item(kind, live), _item(kind, expected))
    if isinstance(expected, list) or isinstance(live, list):
        missing, extra = _delta(expected, live)
        label = _KIND_NAMES.get(kind, kind)
        parts = ["%s %s is missing" % (label, _item(kind, item)) for item in missing]
        parts += ["%s %s is not built by the migrations" % (label, _item(kind, item))
                  for item in extra]
        if parts:
            return "%s: %s" % (table, "; ".join(parts))
    return "%s: %s differ" % (table, kind.replace("_", " "))


def summary_text(real, harmless, where, applied_count, limit=5):
    """The short human summary."""
    base = "what its %d applied migrations build" % applied_count
    if not real:
        text = "No drift: the schema of %s equals %s." % (where, base)
        if harmless:
            text += " %d table(s) only differ in constraint or index names (harmless)." \
                % len(harmless)
        return text
    phrases = [describe(d) for d in real[:limit]]
    if len(real) > limit:
        phrases.append("and %d more" % (len(real) - limit))
    return "Drift: %d difference(s) between %s and %s: %s." % (
        len(real), where, base, "; ".join(phrases))


# -- the check ----------------------------------------------------------------------------------

class SchemaDrift:
    """One drift check of one database alias of one project."""

    def __init__(self, project, runner, options, warn=None):
        self.project = project
        self.runner = runner
        self.options = options
        self.warn = warn or (lambda message: None)

    def run(self):
        options = self.options
        live_result = self.project.facts(database=options.database, pending=False,
                                         checks=False)
        live = DjangoProject.connection(live_result)
        if live.engine == "sqlite" and not live_result["database"].get("exists", True):
            raise ProjectError("sqlite database %s does not exist: there is no schema to check "
                               "(run migrate first)" % live.name, database=live.public())
        # Under the migration lock: a migrate or a restore under way would show half its work
        # as drift. The applied migrations are read again with the schema, under that lock.
        engine = engine_for(live, self.runner)
        with engine.lock(timeout=options.lock_timeout):
            live_snapshot = engine.snapshot(content=False)
        applied = applied_rows(live_snapshot, live_result["facts"]["applied_rows"])
        scratch = ScratchDatabase(live, self.runner, options.scratch)
        try:
            with scratch:
                built = self.project.migrate_to_set(applied, database=options.database,
                                                    overrides=scratch.overrides())
                expected_snapshot = scratch.engine.snapshot(content=False)
        except Interrupted as interrupted:
            raise DbsafeError("the drift check was interrupted by %s; %s"
                              % (interrupted.name, scratch.fate()),
                              scratch=scratch.public(), database=live.public())
        except DbsafeError as error:
            raise _explained(error, scratch, live)
        result = self._result(live_result, live, applied, built, live_snapshot,
                              expected_snapshot, scratch)
        if scratch.drop_error:
            raise DbsafeError("%s However, %s." % (result["summary"], scratch.fate()), **result)
        if result["drift"] and options.fail_on_drift:
            raise DriftFound(result["summary"], **result)
        return result

    def _result(self, live_result, live, applied, built, live_snapshot, expected_snapshot,
                scratch):
        real, harmless = compare(expected_snapshot, live_snapshot, self.options.ignore_tables,
                                 live.engine)
        missing = not_replayed(applied, built["migrate_to_set"]["applied_rows"])
        if missing:
            self.warn(
                "%d applied migration(s) could not be replayed into the scratch database "
                "because the project has no file for them (ghosts): %s. Whatever schema they "
                "made in the live database shows up as drift."
                % (len(missing), ", ".join(missing)))
        where = live.describe()
        return {
            "drift": bool(real),
            "differences": real,
            "harmless": harmless,
            "summary": summary_text(real, harmless, where, len(applied)),
            "summary_lines": [describe(d) for d in real],
            "applied": applied,
            "not_replayed": missing,
            "ignored_tables": sorted(
                table for table in set(live_snapshot.get("schema") or {})
                | set(expected_snapshot.get("schema") or {})
                if ignored(table, self.options.ignore_tables)),
            "database": live.public(),
            "scratch": scratch.public(),
            "django_version": live_result.get("django_version"),
        }


def _explained(error, scratch, live):
    """The error, saying what happened to the scratch database (never a silent leftover)."""
    if error.details.get("kind") == "migration_failed":
        message = ("the live database's applied migrations could not be replayed into the "
                   "scratch database: %s" % error.msg)
    else:
        message = error.msg
    if scratch.may_exist or scratch.dropped or scratch.drop_error:
        message = "%s (%s)" % (message.rstrip("."), scratch.fate())
    details = dict(error.details)
    details.update(scratch=scratch.public(), database=live.public())
    return type(error)(message, **details)
