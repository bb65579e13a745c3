# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SQL text the PostgreSQL engine sends and the reading of what comes back.

The catalog and content queries of a snapshot, the flush, the lock-holder query, and the
conversion of their JSON answers into the engines' common shapes. No process starts here:
``engines/postgresql.py`` runs the text through psql.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json

from ansible_collections.dbsafe.django.plugins.module_utils.engines.base import (
    MIGRATIONS_TABLE,
    column_entry,
    make_snapshot,
    new_table_schema,
    normalize_expression,
    split_type,
)

_ON_DELETE = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL",
              "d": "SET DEFAULT"}
_IDENTITY = {"a": "always", "d": "by default"}

# The user tables of the database: not system, not extension-owned, partitions only through
# their parent.
_RELATIONS = """
  SELECT c.oid, n.nspname, c.relname,
         CASE WHEN n.nspname = 'public' THEN c.relname::text
              ELSE n.nspname || '.' || c.relname END AS tname
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
     AND n.nspname NOT IN ('pg_catalog', 'information_schema')
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
     AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                     AND d.objid = c.oid AND d.deptype = 'e')
"""

_CATALOG_QUERY = """
WITH rels AS (%(relations)s)
SELECT json_build_object(
 'kind', 'catalog',
 'tables', (SELECT coalesce(json_agg(tname), '[]') FROM rels),
 'columns', (SELECT coalesce(json_agg(json_build_object(
      'table', r.tname, 'name', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
      'nullable', NOT a.attnotnull, 'default', pg_get_expr(d.adbin, d.adrelid),
      'identity', a.attidentity, 'generated', a.attgenerated,
      'collation', CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
                        THEN co.collname END)), '[]')
    FROM rels r
    JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_collation co ON co.oid = a.attcollation
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum),
 'constraints', (SELECT coalesce(json_agg(json_build_object(
      'table', r.tname, 'name', con.conname, 'type', con.contype,
      'columns', (SELECT json_agg(att.attname ORDER BY k.ord)
                    FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
                    JOIN pg_attribute att ON att.attrelid = con.conrelid
                                         AND att.attnum = k.attnum),
      'ref_table', (SELECT CASE WHEN fn.nspname = 'public' THEN fc.relname::text
                                ELSE fn.nspname || '.' || fc.relname END
                      FROM pg_class fc JOIN pg_namespace fn ON fn.oid = fc.relnamespace
                     WHERE fc.oid = con.confrelid),
      'ref_columns', (SELECT json_agg(att.attname ORDER BY k.ord)
                        FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
                        JOIN pg_attribute att ON att.attrelid = con.confrelid
                                             AND att.attnum = k.attnum),
      'on_delete', con.confdeltype, 'on_update', con.confupdtype,
      'deferrable', con.condeferrable, 'deferred', con.condeferred,
      'definition', pg_get_constraintdef(con.oid, true))), '[]')
    FROM rels r JOIN pg_constraint con ON con.conrelid = r.oid),
 'indexes', (SELECT coalesce(json_agg(json_build_object(
      'table', r.tname, 'name', ic.relname, 'unique', i.indisunique,
      'columns', (SELECT json_agg(pg_get_indexdef(i.indexrelid, k, true) ORDER BY k)
                    FROM generate_series(1, i.indnkeyatts) AS k),
      'definition', replace(pg_get_indexdef(i.indexrelid),
                            ' INDEX ' || quote_ident(ic.relname) || ' ON ', ' INDEX ON '),
      'where', pg_get_expr(i.indpred, i.indrelid, true))), '[]')
    FROM rels r JOIN pg_index i ON i.indrelid = r.oid JOIN pg_class ic ON ic.oid = i.indexrelid
   WHERE NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid
                     AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u', 'x')))
);
"""

# One query per table, generated and run by psql's \\gexec inside the same transaction. The
# row text uses the columns in name order, so column order never changes the hash; the two
# 64-bit halves of the rows' md5 are summed, which does not depend on row order.
_CONTENT_QUERIES = """
WITH rels AS (%(relations)s)
SELECT format(
  'SELECT json_build_object(''kind'', ''table'', ''table'', %%L, ''rows'', count(*), '
  '''h1'', coalesce(sum((''x'' || substr(h, 1, 16))::bit(64)::bigint::numeric), 0)::text, '
  '''h2'', coalesce(sum((''x'' || substr(h, 17, 16))::bit(64)::bigint::numeric), 0)::text) '
  'FROM (SELECT md5(ROW(%%s)::text) AS h FROM %%I.%%I AS t) AS s',
  r.tname,
  coalesce((SELECT string_agg(format('t.%%I', a.attname), ', ' ORDER BY a.attname)
              FROM pg_attribute a
             WHERE a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped), ''),
  r.nspname, r.relname)
FROM rels r ORDER BY r.tname
\\gexec
"""

_MIGRATIONS_QUERY = """
SELECT 'SELECT json_build_object(''kind'', ''migrations'', ''rows'', '
       'coalesce(json_agg(json_build_array(app, name)), ''[]'')) FROM public.%(migrations)s'
 WHERE to_regclass('public.%(migrations)s') IS NOT NULL
\\gexec
"""

_SNAPSHOT_SESSION = """
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
SET LOCAL TimeZone = 'UTC';
SET LOCAL DateStyle = 'ISO, YMD';
SET LOCAL IntervalStyle = 'postgres';
SET LOCAL extra_float_digits = 3;
SET LOCAL bytea_output = 'hex';
"""

# The user objects pg_dump writes, outside the system schemas and not members of an extension
# (those come back with their extension): the flush drops them, the restorability check
# (postgresql_privileges.ACCESS_SQL) reads their owners. One text of each for both.
_USER_SCHEMA = r"""n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'"""
# Relations; sequences owned by a column ('a'/'i' dependencies) go with their table.
USER_RELATIONS = r"""
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
       AND """ + _USER_SCHEMA + r"""
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                       AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))"""
USER_ROUTINES = r"""
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE p.prokind IN ('f', 'p')
       AND """ + _USER_SCHEMA + r"""
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                       AND d.objid = p.oid AND d.deptype = 'e')"""
# Enums, domains, ranges and free-standing composite types (a table's row type goes with it).
USER_TYPES = r"""
      FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
     WHERE t.typtype IN ('e', 'd', 'r', 'c')
       AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
       AND """ + _USER_SCHEMA + r"""
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                       AND d.objid = t.oid AND d.deptype = 'e')"""

# Empties the database before a restore, so tables made after the backup do not survive it.
# Extension members and sequences owned by a column go with their owner; partitions with
# their parent.
FLUSH_SQL = """
DO $dbsafe$
DECLARE
  statement text;
BEGIN
  FOR statement IN
    SELECT format('DROP %s IF EXISTS %I.%I CASCADE',
                  CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                 WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
                                 ELSE 'TABLE' END,
                  n.nspname, c.relname)""" + USER_RELATIONS + """
       AND NOT c.relispartition
     ORDER BY c.relkind DESC
  LOOP
    EXECUTE statement;
  END LOOP;
  FOR statement IN
    SELECT format('DROP ROUTINE IF EXISTS %s CASCADE', p.oid::regprocedure)""" + USER_ROUTINES + """
  LOOP
    EXECUTE statement;
  END LOOP;
  FOR statement IN
    SELECT format('DROP TYPE IF EXISTS %s CASCADE', t.oid::regtype)""" + USER_TYPES + """
  LOOP
    EXECUTE statement;
  END LOOP;
END
$dbsafe$;
"""

_HOLDER_QUERY = """
SELECT coalesce(json_agg(json_build_object(
         'application_name', a.application_name, 'connection', a.pid,
         'client', host(a.client_addr), 'user', a.usename,
         'backend_start', to_char(a.backend_start AT TIME ZONE 'UTC',
                                  'YYYY-MM-DD"T"HH24:MI:SS"Z"'))), '[]')
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.classid = '%d'::oid AND l.objid = '%d'::oid;
"""


def snapshot_session(content=True):
    """The psql script of one snapshot: catalog, contents when asked, applied migrations."""
    session = _SNAPSHOT_SESSION + _CATALOG_QUERY % {"relations": _RELATIONS}
    if content:
        session += _CONTENT_QUERIES % {"relations": _RELATIONS}
    return session + _MIGRATIONS_QUERY % {"migrations": MIGRATIONS_TABLE} + "COMMIT;\n"


# Only count(*) per table, in one read-only transaction: what a row count after a migrate
# needs, without reading and hashing every row like _CONTENT_QUERIES.
_COUNT_QUERIES = """
WITH rels AS (%(relations)s)
SELECT format('SELECT json_build_object(''table'', %%L, ''rows'', count(*)) FROM %%I.%%I',
              r.tname, r.nspname, r.relname)
FROM rels r ORDER BY r.tname
\\gexec
"""


def row_counts_session():
    """The psql script that prints one ``{"table", "rows"}`` line per user table."""
    return (_SNAPSHOT_SESSION + _COUNT_QUERIES % {"relations": _RELATIONS} + "COMMIT;\n")


def row_counts_from_output(out):
    counts = {}
    for line in out.splitlines():
        if line.strip():
            item = json.loads(line)
            counts[item["table"]] = item["rows"]
    return counts


def holder_query(key):
    """Who holds the advisory lock ``key`` (its two 32-bit halves, as pg_locks shows them)."""
    return _HOLDER_QUERY % ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)


def snapshot_from_output(out):
    """The snapshot from psql's output of ``snapshot_session``; None without a catalog line."""
    catalog, contents, migrations = None, {}, None
    for line in out.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        if item["kind"] == "catalog":
            catalog = item
        elif item["kind"] == "table":
            digest = hashlib.sha256(("%s:%s:%s" % (item["rows"], item["h1"], item["h2"]))
                                    .encode()).hexdigest()
            contents[item["table"]] = {"rows": item["rows"], "hash": digest}
        elif item["kind"] == "migrations":
            migrations = item["rows"]
    if catalog is None:
        return None
    return make_snapshot(schema_from_catalog(catalog), contents, migrations)


def describe_pg_holder(text):
    try:
        rows = json.loads(text or "[]")
    except ValueError:
        rows = []
    if not rows:
        return None
    row = rows[0]
    holder = {"connection": row.get("connection"), "user": row.get("user"),
              "client": row.get("client"), "since": row.get("backend_start")}
    parts = (row.get("application_name") or "").split(":", 3)
    if len(parts) == 4 and parts[0] == "dbsafe":
        holder.update(host=parts[1], pid=int(parts[2]) if parts[2].isdigit() else parts[2],
                      since=parts[3])
    elif row.get("application_name"):
        holder["application"] = row["application_name"]
    return holder


def schema_from_catalog(catalog):
    schema = {name: new_table_schema() for name in catalog["tables"]}
    for col in catalog["columns"]:
        base, args = split_type(col["type"])
        length = precision = scale = None
        if args and base in ("numeric", "decimal"):
            precision, scale = args[0], (args[1] if len(args) > 1 else None)
        elif args and (base.startswith("time") or base.startswith("interval")):
            precision = args[0]
        elif args:
            length = args[0]
        schema[col["table"]]["columns"][col["name"]] = column_entry(
            base, col["nullable"], col["default"], length, precision, scale,
            identity=_IDENTITY.get(col["identity"]),
            generated="stored" if col["generated"] == "s" else None,
            collation=col["collation"])
    for con in catalog["constraints"]:
        table = schema[con["table"]]
        columns = con["columns"] or []
        kind = con["type"]
        if kind == "p":
            table["primary_key"] = columns
            what = "primary key(%s)" % ",".join(columns)
        elif kind == "u":
            table["unique"].append(sorted(columns))
            what = "unique(%s)" % ",".join(sorted(columns))
        elif kind == "f":
            entry = {"columns": columns, "ref_table": con["ref_table"],
                     "ref_columns": con["ref_columns"] or [],
                     "on_delete": _ON_DELETE.get(con["on_delete"], con["on_delete"]),
                     "on_update": _ON_DELETE.get(con["on_update"], con["on_update"]),
                     "deferrable": ("initially deferred" if con["deferred"] else
                                    "deferrable" if con["deferrable"] else None)}
            table["foreign_keys"].append(entry)
            what = "foreign key(%s)->%s(%s)" % (
                ",".join(columns), con["ref_table"], ",".join(entry["ref_columns"]))
        elif kind in ("c", "x"):
            expression = normalize_expression(con["definition"])
            table["checks"].append(expression)
            what = "check(%s)" % expression
        else:
            continue
        table["names"][con["name"]] = what
    for index in catalog["indexes"]:
        table = schema[index["table"]]
        entry = {"columns": index["columns"] or [], "unique": index["unique"],
                 "definition": index["definition"]}
        if index["where"]:
            entry["where"] = normalize_expression(index["where"])
        table["indexes"].append(entry)
        table["names"][index["name"]] = "index %s" % index["definition"]
    return schema


# The other sessions holding a table lock in this database (not ours: dbsafe's application
# names), for the restore that waits behind them: who, since when, what.
_BLOCKERS = """
  FROM pg_stat_activity a
 WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
   AND coalesce(a.application_name, '') NOT LIKE 'dbsafe%'
   AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.granted
               AND l.locktype = 'relation'
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
"""
BLOCKERS_SQL = ("SELECT coalesce(json_agg(json_build_object("
                "'pid', a.pid, 'user', a.usename, 'application', a.application_name, "
                "'query_start', to_char(a.query_start AT TIME ZONE 'UTC', "
                "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), 'state', a.state, "
                "'query', left(split_part(a.query, E'\\n', 1), 120)) ORDER BY a.pid), '[]')"
                + _BLOCKERS + ";\n")
TERMINATE_BLOCKERS_SQL = "SELECT count(pg_terminate_backend(a.pid))" + _BLOCKERS + ";\n"
