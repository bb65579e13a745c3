# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What each pending operation will do to a live table: its risk. Pure, no I/O.

Input: the plan's steps as introspect.py describes them (each operation with a ``detail``:
its Django class, the table, the field before and after, the index or constraint, the
concurrent flag, SeparateDatabaseAndState's database operations), the server (vendor,
MariaDB or MySQL, version) and the live tables' estimated rows and size.

Levels, ordered: ``safe`` (metadata only, instant, or online) < ``locks`` (a lock that blocks
writes or reads for a time that grows with the table: a rewrite, a full-scan validation, a
non-concurrent index build; or code we cannot analyse) < ``incompatible`` (the code still
running against the database breaks: a dropped or renamed column or table, NOT NULL without
a database default, a type change) < ``data_loss``. An operation's level is the highest of its
reasons; the plan's risk is the highest of its operations.

Choices: on MySQL/MariaDB an index is built online (InnoDB in place, reads and writes go on,
only a short metadata lock at its start and end) so AddIndex is ``safe`` there, with a reason
that names the table's size; FULLTEXT/SPATIAL indexes and CHECK/FOREIGN KEY constraints copy
or scan the table under a lock, so they are ``locks``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

LEVELS = ("safe", "locks", "incompatible", "data_loss")

# An operation whose class we do not know (third-party) is treated like RunSQL.
UNKNOWN = "cannot be analysed: takes whatever locks its code takes"


def rank(level):
    """0 for safe ... 3 for data_loss; None (no limit) is above everything."""
    if level is None:
        return len(LEVELS)
    return LEVELS.index(level)


def highest(levels, empty="safe"):
    levels = [level for level in levels if level]
    if not levels:
        return empty
    return max(levels, key=rank)


def version_tuple(text):
    """'10.11.6-MariaDB-log' -> (10, 11, 6); '' -> ()."""
    return tuple(int(part) for part in re.findall(r"\d+", str(text or ""))[:3])


class Server:
    """The database server the plan will run on."""

    def __init__(self, vendor, version=None, flavour=None):
        self.vendor = vendor  # postgresql | mysql | sqlite | other
        self.flavour = flavour or vendor  # mariadb | mysql for vendor mysql
        self.version = version_tuple(version)

    def at_least(self, *version):
        # An unknown version is taken as old: the cautious answer.
        return bool(self.version) and self.version >= version

    @classmethod
    def from_facts(cls, server):
        server = server or {}
        return cls(server.get("vendor"), server.get("version"), server.get("flavour"))


def size_text(rows, size):
    parts = []
    if rows is not None:
        parts.append("~%d rows" % rows)
    if size is not None:
        parts.append(human_bytes(size))
    return ", ".join(parts) if parts else "size unknown"


def human_bytes(size):
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return ("%d %s" % (size, unit)) if unit == "B" else ("%.1f %s" % (size, unit))
        size /= 1024.0
    return "%d B" % size


class _Reasons:
    def __init__(self):
        self.items = []

    def add(self, level, text):
        self.items.append((level, text))

    def level(self):
        return highest([level for level, _text in self.items])

    def texts(self):
        # Worst first, in the order found within a level.
        ordered = sorted(enumerate(self.items), key=lambda item: (-rank(item[1][0]), item[0]))
        return [text for _index, (_level, text) in ordered]


def _not_null_without_db_default(field):
    return not field.get("null") and not field.get("db_default") and not field.get("many_to_many")


def _add_field(reasons, server, detail, rows, size):
    field = detail.get("field") or {}
    if field.get("many_to_many"):
        reasons.add("safe", "creates the new many-to-many table; the model's table is not touched")
        return
    vendor = server.vendor
    if _not_null_without_db_default(field):
        reasons.add("incompatible", "adds a NOT NULL column without a database default: code still "
                    "running that inserts rows without it fails (db_default, Django 5.0+, or null=True avoids it)")
        if not field.get("has_default") and rows:
            reasons.add("incompatible", "the column has no default and the table has rows: the migration fails on them")
    volatile = field.get("has_default") and field.get("callable_default")
    if vendor == "postgresql":
        if field.get("db_default") and field.get("db_default_expression"):
            reasons.add("locks", "a database default that is an expression may rewrite the table (%s)" % size_text(rows, size))
        elif server.at_least(11) or (not field.get("has_default") and not field.get("db_default")):
            reasons.add("safe", "PostgreSQL adds the column as metadata only (a constant default included)")
        else:
            reasons.add("locks", "PostgreSQL before 11 rewrites the table to fill the default (%s)" % size_text(rows, size))
    elif vendor == "mysql":
        instant = server.at_least(10, 3) if server.flavour == "mariadb" else server.at_least(8, 0, 12)
        if instant:
            reasons.add("safe", "%s adds the column at the end instantly (ALGORITHM=INSTANT)" % _name(server))
        else:
            reasons.add("locks", "%s %s rebuilds the table to add a column (%s)"
                        % (_name(server), ".".join(str(p) for p in server.version) or "(version unknown)", size_text(rows, size)))
    elif vendor == "sqlite":
        if field.get("null") and not field.get("has_default") and not field.get("db_default") and not field.get("unique") \
                and not field.get("primary_key"):
            reasons.add("safe", "SQLite adds a nullable column without a default with ALTER TABLE ADD COLUMN")
        else:
            reasons.add("locks", "SQLite rebuilds the table (copy and rename) under a write lock on the whole database (%s)"
                        % size_text(rows, size))
    if vendor in ("postgresql", "mysql") and field.get("relation") and field.get("db_constraint", True):
        reasons.add("locks", "the foreign key is validated against every row while writes to both tables wait (%s)"
                    % size_text(rows, size))
    if field.get("unique") or field.get("db_index") or field.get("relation"):
        _index_build(reasons, server, rows, size, concurrent=False, unique=field.get("unique"))
    if volatile and vendor == "postgresql":
        reasons.add("safe", "a callable default is evaluated once: every existing row gets the same value")


def _name(server):
    return {"mariadb": "MariaDB", "mysql": "MySQL", "postgresql": "PostgreSQL", "sqlite": "SQLite"}.get(
        server.flavour, server.flavour or "the database")


def _index_build(reasons, server, rows, size, concurrent, unique=False, kind=None):
    what = "unique index" if unique else "index"
    if server.vendor == "postgresql":
        if concurrent:
            reasons.add("safe", "the %s is built concurrently: reads and writes go on (it waits for running transactions)" % what)
        else:
            reasons.add("locks", "the %s is built while writes to the table wait (CREATE INDEX without CONCURRENTLY; %s)"
                        % (what, size_text(rows, size)))
    elif server.vendor == "mysql":
        if kind in ("FULLTEXT", "SPATIAL"):
            reasons.add("locks", "a %s index is not built online: writes wait (%s)" % (kind, size_text(rows, size)))
        else:
            reasons.add("safe", "the %s is built online (InnoDB in place, reads and writes go on; the build takes a time "
                        "that grows with the table: %s)" % (what, size_text(rows, size)))
    elif server.vendor == "sqlite":
        reasons.add("locks", "SQLite builds the %s under a write lock on the whole database (%s)" % (what, size_text(rows, size)))
    else:
        reasons.add("locks", "builds an %s (%s)" % (what, size_text(rows, size)))


def _type_changed(old, new):
    if not old or not new:
        return False
    if old.get("db_type") and new.get("db_type"):
        return old["db_type"] != new["db_type"]
    return old.get("type") != new.get("type")


def _varchar_widened(old, new):
    match_old = re.match(r"varchar\((\d+)\)$", old.get("db_type") or "")
    match_new = re.match(r"varchar\((\d+)\)$", new.get("db_type") or "")
    return bool(match_old and match_new and int(match_new.group(1)) >= int(match_old.group(1)))


def _alter_field(reasons, server, detail, rows, size):
    old, new = detail.get("old_field"), detail.get("field") or {}
    if not old:
        reasons.add("locks", "the field's previous definition is unknown: " + UNKNOWN)
        return
    changed = False
    if _type_changed(old, new):
        changed = True
        change = "%s to %s" % (old.get("db_type") or old.get("type"), new.get("db_type") or new.get("type"))
        if server.vendor == "postgresql" and _varchar_widened(old, new):
            reasons.add("safe", "widening %s is metadata only on PostgreSQL" % change)
        else:
            reasons.add("incompatible", "changes the column's type (%s): code still running may write values the new type "
                        "refuses or read values it does not expect" % change)
            how = {"postgresql": "rewrites the table under an ACCESS EXCLUSIVE lock (reads and writes wait)",
                   "mysql": "copies the table while writes wait",
                   "sqlite": "rebuilds the table under a write lock on the whole database"}.get(server.vendor, "rewrites the table")
            reasons.add("locks", "the type change %s (%s)" % (how, size_text(rows, size)))
    if old.get("null") and not new.get("null"):
        changed = True
        reasons.add("incompatible", "makes the column NOT NULL: code still running that writes NULL fails")
        reasons.add("locks", "every row is checked (and NULLs updated to the default) while writes wait (%s)" % size_text(rows, size))
    elif not old.get("null") and new.get("null"):
        changed = True
        reasons.add("safe", "allowing NULL is metadata only")
    if new.get("unique") and not old.get("unique"):
        changed = True
        _index_build(reasons, server, rows, size, concurrent=False, unique=True)
    elif (new.get("db_index") or new.get("relation")) and not (old.get("db_index") or old.get("relation") or old.get("unique")):
        changed = True
        _index_build(reasons, server, rows, size, concurrent=False)
    if new.get("relation") and not old.get("relation") and new.get("db_constraint", True) and server.vendor != "sqlite":
        changed = True
        reasons.add("locks", "the new foreign key is validated against every row while writes wait (%s)" % size_text(rows, size))
    if server.vendor == "sqlite" and changed:
        reasons.add("locks", "SQLite rebuilds the table under a write lock on the whole database (%s)" % size_text(rows, size))
    if not changed:
        reasons.add("safe", "no change to the column in the database (or only its default)")


def _add_constraint(reasons, server, detail, rows, size):
    kind = detail.get("constraint_kind")
    if detail.get("not_valid"):
        reasons.add("safe", "added NOT VALID: existing rows are not scanned (validate later with ValidateConstraint)")
        return
    if kind == "unique":
        _index_build(reasons, server, rows, size, concurrent=False, unique=True)
        return
    if server.vendor == "postgresql":
        what = {"check": "the check constraint", "exclusion": "the exclusion constraint",
                "foreign_key": "the foreign key"}.get(kind, "the constraint")
        reasons.add("locks", "%s is validated by a full scan while the table is locked (%s); "
                    "NOT VALID then VALIDATE CONSTRAINT is the safe path" % (what, size_text(rows, size)))
    elif server.vendor == "mysql":
        reasons.add("locks", "%s checks every row by copying the table while writes wait (%s)"
                    % (_name(server), size_text(rows, size)))
    else:
        reasons.add("locks", "SQLite rebuilds the table under a write lock on the whole database (%s)" % size_text(rows, size))


def _code(reasons, detail, rows, size):
    what = "RunSQL" if detail.get("class") == "RunSQL" else (
        "RunPython" if detail.get("class") == "RunPython" else "the operation %s" % detail.get("class"))
    reasons.add("locks", "%s %s" % (what, UNKNOWN))


def classify(detail, server, stats=None, backwards=False):
    """One operation's risk: {"level", "reasons", "rows", "bytes"}. ``detail``: introspect's
    description; ``server``: a Server; ``stats``: {table: {"rows", "bytes"}}."""
    detail = detail or {}
    reasons = _Reasons()
    table_stats = (stats or {}).get(detail.get("table") or "") or {}
    rows, size = table_stats.get("rows"), table_stats.get("bytes")
    kind = detail.get("class")
    if detail.get("error"):
        reasons.add("locks", "could not be described (%s): %s" % (detail["error"], UNKNOWN))
    elif backwards:
        _backwards(reasons, server, detail, rows, size)
    elif kind == "AddField":
        _add_field(reasons, server, detail, rows, size)
    elif kind == "AlterField":
        _alter_field(reasons, server, detail, rows, size)
    elif kind in ("RemoveField", "DeleteModel"):
        what = "column" if kind == "RemoveField" else "table"
        reasons.add("data_loss", "drops the %s and its data (%s)" % (what, size_text(rows, size)))
        reasons.add("incompatible", "code still running that uses the %s fails" % what)
    elif kind in ("RenameField", "RenameModel", "AlterModelTable"):
        what = "column" if kind == "RenameField" else "table"
        reasons.add("incompatible", "renames the %s: code still running uses the old name and fails" % what)
        if kind == "RenameField" and server.vendor == "sqlite" and not server.at_least(3, 25):
            reasons.add("locks", "SQLite before 3.25 rebuilds the table to rename a column (%s)" % size_text(rows, size))
        else:
            reasons.add("safe", "the rename itself is metadata only")
    elif kind in ("AddIndex", "AddIndexConcurrently"):
        _index_build(reasons, server, rows, size, concurrent=kind == "AddIndexConcurrently" or detail.get("concurrent"),
                     unique=detail.get("unique"), kind=detail.get("index_kind"))
    elif kind in ("AlterUniqueTogether", "AlterIndexTogether"):
        if detail.get("added"):
            _index_build(reasons, server, rows, size, concurrent=False, unique=kind == "AlterUniqueTogether")
        else:
            reasons.add("safe", "only drops indexes or changes nothing in the database")
    elif kind == "AddConstraint":
        _add_constraint(reasons, server, detail, rows, size)
    elif kind in ("AddConstraintNotValid",):
        reasons.add("safe", "added NOT VALID: existing rows are not scanned")
    elif kind == "ValidateConstraint":
        reasons.add("safe", "validation takes a lock that lets reads and writes go on (SHARE UPDATE EXCLUSIVE)")
    elif kind in ("RemoveIndex", "RemoveIndexConcurrently", "RemoveConstraint", "RenameIndex", "CreateModel",
                  "AlterModelOptions", "AlterModelManagers", "AlterOrderWithRespectTo", "AddField_m2m",
                  "CreateExtension", "BtreeGistExtension", "TrigramExtension", "HStoreExtension",
                  "UnaccentExtension", "CITextExtension", "CryptoExtension", "BloomExtension"):
        reasons.add("safe", "metadata only or a new object; no existing row is rewritten or scanned")
    elif kind == "SeparateDatabaseAndState":
        inner = detail.get("database_operations") or []
        if not inner:
            reasons.add("safe", "changes Django's state only: nothing runs in the database")
        for item in inner:
            result = classify(item, server, stats)
            for text in result["reasons"]:
                reasons.add(result["level"], "%s: %s" % (item.get("class"), text))
    else:  # RunSQL, RunPython and whatever we do not know
        _code(reasons, detail, rows, size)
    return {"level": reasons.level(), "reasons": reasons.texts(), "rows": rows, "bytes": size}


def _backwards(reasons, server, detail, rows, size):
    kind = detail.get("class")
    if kind in ("AddField", "CreateModel"):
        what = "column" if kind == "AddField" else "table"
        reasons.add("data_loss", "unapplying drops the %s and its data (%s)" % (what, size_text(rows, size)))
        reasons.add("incompatible", "code still running that uses the %s fails" % what)
    elif kind in ("RemoveField", "DeleteModel"):
        reasons.add("incompatible", "unapplying re-creates what was removed, without its old data")
    elif kind in ("RunSQL", "RunPython"):
        _code(reasons, detail, rows, size)
    else:
        reasons.add("locks", "unapplying %s: %s" % (kind, UNKNOWN))


def plan_risks(plan, server, stats=None):
    """Per operation of the plan: {migration, operation, type, table, level, reasons, rows,
    bytes}. ``server`` is a Server or introspect's {"vendor", "version", "flavour"}."""
    if not isinstance(server, Server):
        server = Server.from_facts(server)
    found = []
    for step in plan or []:
        for operation in step.get("operations") or []:
            detail = operation.get("detail") or {"class": operation.get("type")}
            result = classify(detail, server, stats, backwards=step.get("backwards"))
            found.append({
                "migration": ("-" if step.get("backwards") else "") + step["migration"],
                "operation": operation.get("description") or operation.get("type"),
                "type": operation.get("type"),
                "table": detail.get("table"),
                "level": result["level"],
                "reasons": result["reasons"],
                "rows": result["rows"],
                "bytes": result["bytes"],
            })
    return found


def above(risks, max_risk):
    """The operations whose level is above ``max_risk`` (None: no limit, nothing is above)."""
    if max_risk is None:
        return []
    return [item for item in risks if rank(item["level"]) > rank(max_risk)]


def refusal(risks, max_risk):
    """The sentence a preflight refuses with, or None."""
    over = above(risks, max_risk)
    if not over:
        return None
    level = highest([item["level"] for item in over])
    listed = "; ".join("%s %s on %s: %s (%s)" % (item["migration"], item["operation"], item["table"] or "-",
                                                 item["level"], item["reasons"][0] if item["reasons"] else "")
                       for item in over)
    return ("the plan's risk is %s, above max_risk %s: %s; nothing was changed. Make the migrations safer "
            "(see each reason) or raise max_risk to %s to go ahead" % (level, max_risk, listed, level))
