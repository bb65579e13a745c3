# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The MySQL/MariaDB snapshot: the catalog and content queries and the reading of their rows.

Only SQL text and parsing; ``engines/mysql.py`` runs the text through the client.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import re

from ansible_collections.dbsafe.django.plugins.module_utils.engines.base import (
    MIGRATIONS_TABLE,
    column_entry,
    new_table_schema,
    normalize_expression,
)

_TABLE_TYPES = ("BASE TABLE", "SYSTEM VERSIONED")


def quote_identifier(name):
    return "`%s`" % name.replace("`", "``")


def quote_literal(value):
    """A string literal that no sql_mode can misread: hex bytes converted to utf8mb4."""
    data = value.encode("utf-8")
    if not data:
        return "''"
    return "CONVERT(X'%s' USING utf8mb4)" % data.hex()


def catalog_sql(is_mariadb):
    """One client script listing tables, columns, indexes, foreign keys and checks, one
    ``kind<TAB>json`` line per item."""
    types = ", ".join(quote_literal(t) for t in _TABLE_TYPES)
    if is_mariadb:
        checks = ("SELECT 'check', JSON_OBJECT('table', TABLE_NAME, 'name', CONSTRAINT_NAME, "
                  "'clause', CHECK_CLAUSE) FROM information_schema.CHECK_CONSTRAINTS "
                  "WHERE CONSTRAINT_SCHEMA = DATABASE();")
    else:
        checks = ("SELECT 'check', JSON_OBJECT('table', tc.TABLE_NAME, 'name', "
                  "cc.CONSTRAINT_NAME, 'clause', cc.CHECK_CLAUSE) "
                  "FROM information_schema.CHECK_CONSTRAINTS cc "
                  "JOIN information_schema.TABLE_CONSTRAINTS tc "
                  "ON tc.CONSTRAINT_SCHEMA = cc.CONSTRAINT_SCHEMA "
                  "AND tc.CONSTRAINT_NAME = cc.CONSTRAINT_NAME "
                  "AND tc.CONSTRAINT_TYPE = 'CHECK' "
                  "WHERE cc.CONSTRAINT_SCHEMA = DATABASE();")
    return "\n".join([
        "SELECT 'table', JSON_OBJECT('name', TABLE_NAME) FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE IN (%s);" % types,
        "SELECT 'column', JSON_OBJECT('table', TABLE_NAME, 'name', COLUMN_NAME, "
        "'data_type', DATA_TYPE, 'column_type', COLUMN_TYPE, 'nullable', IS_NULLABLE, "
        "'default', COLUMN_DEFAULT, 'length', CHARACTER_MAXIMUM_LENGTH, "
        "'precision', NUMERIC_PRECISION, 'scale', NUMERIC_SCALE, "
        "'datetime_precision', DATETIME_PRECISION, 'extra', EXTRA, "
        "'collation', COLLATION_NAME, 'generation', GENERATION_EXPRESSION) "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE();",
        "SELECT 'index', JSON_OBJECT('table', TABLE_NAME, 'name', INDEX_NAME, "
        "'non_unique', NON_UNIQUE, 'seq', SEQ_IN_INDEX, 'column', COLUMN_NAME, "
        "'sub_part', SUB_PART, 'type', INDEX_TYPE) FROM information_schema.STATISTICS "
        "WHERE TABLE_SCHEMA = DATABASE();",
        "SELECT 'fk', JSON_OBJECT('table', k.TABLE_NAME, 'name', k.CONSTRAINT_NAME, "
        "'column', k.COLUMN_NAME, 'seq', k.ORDINAL_POSITION, "
        "'ref_table', k.REFERENCED_TABLE_NAME, 'ref_column', k.REFERENCED_COLUMN_NAME, "
        "'on_delete', r.DELETE_RULE, 'on_update', r.UPDATE_RULE) "
        "FROM information_schema.KEY_COLUMN_USAGE k "
        "JOIN information_schema.REFERENTIAL_CONSTRAINTS r "
        "ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.TABLE_NAME = k.TABLE_NAME "
        "AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME "
        "WHERE k.TABLE_SCHEMA = DATABASE() AND k.REFERENCED_TABLE_NAME IS NOT NULL;",
        checks,
    ]) + "\n"


def schema_from_output(out):
    """The schema from the client's output of ``catalog_sql``."""
    rows = {}
    for line in out.splitlines():
        if line.strip():
            kind, payload = line.split("\t", 1)
            rows.setdefault(kind, []).append(json.loads(payload))
    return schema_from_rows(rows)


def contents_sql(schema, content=True):
    """Row counts and order-independent content hashes (only the migration rows when
    ``content`` is false), all from one consistent snapshot."""
    queries = ["SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ;",
               "START TRANSACTION WITH CONSISTENT SNAPSHOT;"]
    for table in (sorted(schema) if content else ()):
        parts = ["IFNULL(CONCAT(LENGTH({0}), ':', {0}), 'N')".format(quote_identifier(c))
                 for c in sorted(schema[table]["columns"])]
        queries.append(
            "SELECT 'content', JSON_OBJECT('table', %s, 'rows', COUNT(*), "
            "'h1', CAST(COALESCE(SUM(CAST(CONV(SUBSTRING(h, 1, 16), 16, 10) AS UNSIGNED)), 0)"
            " AS CHAR), "
            "'h2', CAST(COALESCE(SUM(CAST(CONV(SUBSTRING(h, 17, 16), 16, 10) AS UNSIGNED)), 0)"
            " AS CHAR)) FROM (SELECT MD5(CONCAT_WS('|', %s)) AS h FROM %s) AS s;"
            % (quote_literal(table), ", ".join(parts), quote_identifier(table)))
    if MIGRATIONS_TABLE in schema:
        queries.append("SELECT 'migration', JSON_ARRAY(app, name) FROM %s;"
                       % quote_identifier(MIGRATIONS_TABLE))
    queries.append("COMMIT;")
    return "\n".join(queries) + "\n"


def tables_sql():
    """The base tables of the database, one ``table<TAB>json`` line each."""
    types = ", ".join(quote_literal(t) for t in _TABLE_TYPES)
    return ("SELECT 'table', JSON_OBJECT('name', TABLE_NAME) FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE IN (%s);\n" % types)


def row_counts_sql(tables):
    """COUNT(*) per table (information_schema's TABLE_ROWS is only an estimate on InnoDB), all
    from one consistent snapshot."""
    queries = ["SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ;",
               "START TRANSACTION WITH CONSISTENT SNAPSHOT;"]
    for table in sorted(tables):
        queries.append("SELECT 'rows', JSON_OBJECT('table', %s, 'rows', COUNT(*)) FROM %s;"
                       % (quote_literal(table), quote_identifier(table)))
    queries.append("COMMIT;")
    return "\n".join(queries) + "\n"


def items_from_output(out, kind):
    """The JSON payloads of the ``kind<TAB>json`` lines of the client's output."""
    items = []
    for line in out.splitlines():
        if line.strip():
            found, payload = line.split("\t", 1)
            if found == kind:
                items.append(json.loads(payload))
    return items


def contents_from_output(out, schema):
    """(contents, migrations) from the client's output of ``contents_sql``."""
    contents = {}
    migrations = [] if MIGRATIONS_TABLE in schema else None
    for line in out.splitlines():
        if not line.strip():
            continue
        kind, payload = line.split("\t", 1)
        item = json.loads(payload)
        if kind == "content":
            digest = hashlib.sha256(("%s:%s:%s" % (item["rows"], item["h1"], item["h2"]))
                                    .encode()).hexdigest()
            contents[item["table"]] = {"rows": item["rows"], "hash": digest}
        elif kind == "migration":
            migrations.append(item)
    return contents, migrations


def schema_from_rows(rows):
    schema = {item["name"]: new_table_schema() for item in rows.get("table", [])}
    for col in rows.get("column", []):
        if col["table"] not in schema:
            continue  # a view's column
        data_type = col["data_type"].lower()
        column_type = col["column_type"].lower()
        length = precision = scale = None
        if data_type in ("enum", "set"):
            type_name = column_type
        else:
            type_name = data_type + "".join(" " + flag for flag in ("unsigned", "zerofill")
                                            if flag in column_type.split())
        if data_type in ("char", "varchar", "binary", "varbinary", "bit"):
            length = col["length"] if col["length"] is not None else col["precision"]
        elif data_type in ("decimal", "numeric"):
            precision, scale = col["precision"], col["scale"]
        elif data_type in ("datetime", "timestamp", "time") and col["datetime_precision"]:
            precision = col["datetime_precision"]
        extra = (col.get("extra") or "").lower()
        schema[col["table"]]["columns"][col["name"]] = column_entry(
            type_name, col["nullable"] == "YES", col["default"], length, precision, scale,
            auto_increment="auto_increment" in extra,
            on_update="on update" in extra and extra or None,
            collation=col["collation"], generated=col.get("generation") or None)
    indexes = {}
    for row in rows.get("index", []):
        if row["table"] not in schema:
            continue
        entry = indexes.setdefault((row["table"], row["name"]), {
            "unique": not int(row["non_unique"]), "columns": [], "type": row["type"]})
        column = row["column"]
        if row.get("sub_part"):
            column = "%s(%s)" % (column, row["sub_part"])
        entry["columns"].append((int(row["seq"]), column))
    for (table, name), entry in sorted(indexes.items()):
        columns = [column for _seq, column in sorted(entry["columns"])]
        info = schema[table]
        if name == "PRIMARY":
            info["primary_key"] = columns
            continue
        if entry["unique"]:
            info["unique"].append(sorted(columns))
            info["names"][name] = "unique(%s)" % ",".join(sorted(columns))
        else:
            info["indexes"].append({"columns": columns, "unique": False, "type": entry["type"]})
            info["names"][name] = "index %s(%s)" % (entry["type"], ",".join(columns))
    fks = {}
    for row in rows.get("fk", []):
        fks.setdefault((row["table"], row["name"]), []).append(row)
    for (table, name), parts in sorted(fks.items()):
        parts.sort(key=lambda part: int(part["seq"]))
        entry = {"columns": [p["column"] for p in parts], "ref_table": parts[0]["ref_table"],
                 "ref_columns": [p["ref_column"] for p in parts],
                 "on_delete": parts[0]["on_delete"], "on_update": parts[0]["on_update"]}
        schema[table]["foreign_keys"].append(entry)
        schema[table]["names"][name] = "foreign key(%s)->%s(%s)" % (
            ",".join(entry["columns"]), entry["ref_table"], ",".join(entry["ref_columns"]))
    for row in rows.get("check", []):
        if row["table"] not in schema:
            continue
        expression = normalize_expression(row["clause"])
        schema[row["table"]]["checks"].append(expression)
        schema[row["table"]]["names"][row["name"]] = "check(%s)" % expression
    return schema


# -- the restore's swap: a scratch database loaded with the dump takes the database's place --

SIDE_KINDS = ("restore", "old")
SIDE_TOKEN = re.compile(r"^[0-9a-f]{8}$")
MAX_NAME = 64
# A delimiter no trigger or routine body contains, so their inner semicolons stay theirs.
SWAP_DELIMITER = "$$dbsafe-swap$$"


def side_prefix(database, kind):
    """The start of the name of a restore's side database: ``<database>__dbsafe_<kind>_``,
    the database's name cut short so that the name with its 8-character token fits in 64
    characters (and still starts like the database: grants on ``<database>%`` cover it)."""
    suffix = "__dbsafe_%s_" % kind
    return database[:MAX_NAME - len(suffix) - 8] + suffix


def side_database_name(database, kind, token):
    """The scratch (``restore``) or previous-contents (``old``) database of one restore."""
    if kind not in SIDE_KINDS or not SIDE_TOKEN.match(token):
        raise ValueError("side database %r %r" % (kind, token))
    return side_prefix(database, kind) + token


def leftover_side_databases(database, names):
    """The side databases of ``database`` among ``names`` that an earlier restore left
    behind when it was killed: exactly the prefix and a token, nothing else."""
    found = []
    for name in names:
        for kind in SIDE_KINDS:
            prefix = side_prefix(database, kind)
            if name.startswith(prefix) and SIDE_TOKEN.match(name[len(prefix):]):
                found.append(name)
    return sorted(found)


def objects_sql():
    """JSON lines naming every table, view, trigger, routine and event of DATABASE()."""
    return (
        "SELECT JSON_OBJECT('kind', IF(TABLE_TYPE = 'VIEW', 'VIEW', 'TABLE'), 'name', TABLE_NAME) "
        "FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE();\n"
        "SELECT JSON_OBJECT('kind', 'TRIGGER', 'name', TRIGGER_NAME) "
        "FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE();\n"
        "SELECT JSON_OBJECT('kind', ROUTINE_TYPE, 'name', ROUTINE_NAME) "
        "FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE();\n"
        "SELECT JSON_OBJECT('kind', 'EVENT', 'name', EVENT_NAME) "
        "FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE();\n")


def objects_from_output(out):
    """{kind: sorted names} from the output of ``objects_sql`` (kinds TABLE, VIEW, TRIGGER,
    PROCEDURE, FUNCTION, EVENT; a sequence counts as a table: RENAME TABLE moves it)."""
    objects = dict((kind, []) for kind in ("TABLE", "VIEW", "TRIGGER", "PROCEDURE",
                                           "FUNCTION", "EVENT"))
    for line in (out or "").splitlines():
        if line.strip():
            item = json.loads(line)
            objects.setdefault(item["kind"], []).append(item["name"])
    for names in objects.values():
        names.sort()
    return objects


# SHOW CREATE <kind>: (the column of the statement, the column of its sql_mode or None).
_SHOW_CREATE_COLUMNS = {"VIEW": (1, None), "TRIGGER": (2, 1), "PROCEDURE": (2, 1),
                        "FUNCTION": (2, 1), "EVENT": (3, 1)}


def show_create_sql(kind, name):
    return "SHOW CREATE %s %s;\n" % (kind, quote_identifier(name))


def unescape_batch(field):
    """A field of the client's --batch output (without --raw): \\n, \\t, \\0, \\\\ undone."""
    out = []
    index = 0
    while index < len(field):
        char = field[index]
        if char == "\\" and index + 1 < len(field):
            following = field[index + 1]
            out.append({"n": "\n", "t": "\t", "0": "\0", "\\": "\\"}.get(following, "\\" + following))
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def definition_from_output(kind, line):
    """(CREATE statement, sql_mode or None) from one ``SHOW CREATE kind`` output line."""
    fields = line.rstrip("\n").split("\t")
    statement_column, mode_column = _SHOW_CREATE_COLUMNS[kind]
    statement = unescape_batch(fields[statement_column])
    mode = unescape_batch(fields[mode_column]) if mode_column is not None else None
    return statement, mode


def view_order(definitions):
    """The views' names in an order that creates each after the views it selects from
    (``definitions``: {name: CREATE VIEW text}); a cycle cannot exist, leftovers go last."""
    remaining = dict(definitions)
    ordered = []
    while remaining:
        ready = [name for name, text in sorted(remaining.items())
                 if not any(quote_identifier(other) in text.split(" AS ", 1)[-1]
                            for other in remaining if other != name)]
        if not ready:
            ready = sorted(remaining)
        for name in ready:
            ordered.append(name)
            del remaining[name]
    return ordered


def rename_sql(target, scratch, old, target_tables, scratch_tables):
    """The one RENAME TABLE statement that swaps the scratch database's tables in: every
    table of the target to ``old``, every table of ``scratch`` to the target. MariaDB runs
    the pairs of one RENAME TABLE as one atomic operation: others see the old tables or the
    new ones, and a crash or kill leaves one of the two."""
    pairs = ["%s.%s TO %s.%s" % (quote_identifier(target), quote_identifier(name),
                                 quote_identifier(old), quote_identifier(name))
             for name in target_tables]
    pairs += ["%s.%s TO %s.%s" % (quote_identifier(scratch), quote_identifier(name),
                                  quote_identifier(target), quote_identifier(name))
              for name in scratch_tables]
    if not pairs:
        return ""
    return "RENAME TABLE %s;\n" % ", ".join(pairs)


def _with_mode(statement, mode):
    text = ""
    if mode is not None:
        text += "SET SESSION sql_mode = %s%s\n" % (quote_literal(mode), SWAP_DELIMITER)
    return text + statement.rstrip().rstrip(";") + SWAP_DELIMITER + "\n"


def swap_scripts(target, scratch, old, target_objects, scratch_objects, definitions,
                 lock_wait=None):
    """(before, after): the two client scripts of the swap, run with the target as the
    current database.

    ``before`` drops the triggers (a table with triggers cannot move to another database)
    and renames the tables in one statement. ``after`` puts the restored views, triggers,
    routines and events in place of the target's (views cannot move between databases;
    their text names no database, so it means the target's tables now). ``definitions``:
    {(kind, name): (CREATE text, sql_mode)} of the scratch database's objects. ``lock_wait``:
    the seconds the RENAME may wait for the application's metadata locks (None: the
    session's own setting).
    """
    before = []
    if lock_wait:
        before.append("SET SESSION lock_wait_timeout = %d;\n" % int(lock_wait))
    for name in target_objects["TRIGGER"]:
        before.append("DROP TRIGGER IF EXISTS %s.%s;\n" % (quote_identifier(target),
                                                           quote_identifier(name)))
    for name in scratch_objects["TRIGGER"]:
        before.append("DROP TRIGGER IF EXISTS %s.%s;\n" % (quote_identifier(scratch),
                                                           quote_identifier(name)))
    before.append(rename_sql(target, scratch, old, target_objects["TABLE"],
                             scratch_objects["TABLE"]))
    after = []
    for kind in ("EVENT", "PROCEDURE", "FUNCTION"):
        for name in target_objects[kind]:
            after.append("DROP %s IF EXISTS %s%s\n" % (kind, quote_identifier(name),
                                                       SWAP_DELIMITER))
    views = dict((name, definitions[("VIEW", name)][0]) for name in scratch_objects["VIEW"])
    for name in target_objects["VIEW"]:
        if name not in views:
            after.append("DROP VIEW IF EXISTS %s%s\n" % (quote_identifier(name), SWAP_DELIMITER))
    for name in view_order(views):
        statement = views[name]
        # CREATE OR REPLACE: a view of the same name stays until its successor is in place.
        if statement.upper().startswith("CREATE "):
            statement = "CREATE OR REPLACE " + statement[len("CREATE "):]
        after.append(_with_mode(statement, None))
    for kind in ("TRIGGER", "PROCEDURE", "FUNCTION", "EVENT"):
        for name in scratch_objects[kind]:
            statement, mode = definitions[(kind, name)]
            after.append(_with_mode(statement, mode))
    if not after:
        return "".join(before), ""
    return ("".join(before),
            "DELIMITER %s\n%s" % (SWAP_DELIMITER, "".join(after)))
