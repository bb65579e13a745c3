# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL through psql, pg_dump and pg_restore.

The connection travels in libpq's environment variables (PGHOST, PGPASSWORD...), never in
argv: the password stays out of ``ps``, and a database name containing ``=`` cannot be taken
for a connection string.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import hashlib
import json
import os
import time

from ansible_collections.dbsafe.django.plugins.module_utils.engines.base import (
    DEFAULT_LOCK_NAME,
    MIGRATIONS_TABLE,
    ClientSession,
    Engine,
    column_entry,
    find_tool,
    holder_identity,
    lock_timeout_message,
    make_snapshot,
    new_table_schema,
    normalize_expression,
    parse_version,
    split_type,
    version_tuple,
)
from ansible_collections.dbsafe.django.plugins.module_utils.engines.postgresql_archive import (
    DUMP_FORMATS,
    PlainScript,
)
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    CommandError,
    EngineError,
    LockTimeout,
)
from ansible_collections.dbsafe.django.plugins.module_utils.processes import Background

CLIENT_PACKAGE = "install the PostgreSQL client tools (Debian/Ubuntu: postgresql-client)"
MAINTENANCE_DATABASE = "postgres"

# Django OPTIONS that libpq also reads from the environment.
_OPTION_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "options": "PGOPTIONS",
}

# psql learnt \restrict / \unrestrict (written by pg_dump since these releases) in these minors.
_RESTRICT_SINCE = {13: 22, 14: 19, 15: 14, 16: 10, 17: 6}
# Drops the \restrict lines for an older psql; the key is alphanumeric.
RESTRICT_FILTER = r"/^\\(un)?restrict [A-Za-z0-9]+$/d"

TAIL = 8192
CHUNK = 1024 * 1024

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

# Empties the database before a restore, so tables made after the backup do not survive it.
# Extension members and sequences owned by a column go with their owner.
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
                  n.nspname, c.relname)
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND NOT c.relispartition
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                       AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))
     ORDER BY c.relkind DESC
  LOOP
    EXECUTE statement;
  END LOOP;
  FOR statement IN
    SELECT format('DROP ROUTINE IF EXISTS %s CASCADE', p.oid::regprocedure)
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE p.prokind IN ('f', 'p')
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                       AND d.objid = p.oid AND d.deptype = 'e')
  LOOP
    EXECUTE statement;
  END LOOP;
  FOR statement IN
    SELECT format('DROP TYPE IF EXISTS %s CASCADE', t.oid::regtype)
      FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
     WHERE t.typtype IN ('e', 'd', 'r', 'c')
       AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                       AND d.objid = t.oid AND d.deptype = 'e')
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


def conninfo_value(value):
    """A libpq connection-string value, always quoted."""
    return "'%s'" % str(value).replace("\\", "\\\\").replace("'", "\\'")


def lock_key(name):
    """A stable signed 64-bit advisory lock key for ``name`` (advisory keys are per database)."""
    digest = hashlib.sha256(("dbsafe:%s" % name).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def psql_understands_restrict(version_text):
    """True when this psql accepts the \\restrict lines newer pg_dumps write."""
    version = version_tuple(version_text)
    if not version:
        return False
    major = version[0]
    if major >= 18:
        return True
    minor = version[1] if len(version) > 1 else 0
    return major in _RESTRICT_SINCE and minor >= _RESTRICT_SINCE[major]


class PostgresqlEngine(Engine):
    name = "postgresql"
    dump_formats = DUMP_FORMATS

    def __init__(self, connection, runner):
        super(PostgresqlEngine, self).__init__(connection, runner)
        # None: ask psql's version; tests force True/False.
        self.filter_restrict = None

    # -- environment and tools ------------------------------------------------------------

    def env(self, database=None, application_name=None):
        conn = self.connection
        env = {"PGDATABASE": database or conn.name, "PGCONNECT_TIMEOUT": "10"}
        if conn.host:
            env["PGHOST"] = conn.host
        if conn.port:
            env["PGPORT"] = str(conn.port)
        if conn.user:
            env["PGUSER"] = conn.user
        if conn.password:
            env["PGPASSWORD"] = conn.password
        for option, variable in _OPTION_ENV.items():
            if conn.options.get(option) not in (None, ""):
                env[variable] = str(conn.options[option])
        env["PGAPPNAME"] = application_name or "dbsafe.django"
        return env

    def tool(self, name):
        return find_tool([name], CLIENT_PACKAGE)

    def psql_argv(self, *extra):
        # -X: no ~/.psqlrc; -w: never prompt for a password (fail instead of hanging).
        return [self.tool("psql"), "-X", "-q", "-w", "-A", "-t", "-v", "ON_ERROR_STOP=1"] + \
            list(extra)

    def psql(self, sql, database=None, variables=None, action="query"):
        """Run ``sql`` (stdin) through psql; returns its stdout."""
        argv = self.psql_argv()
        for key, value in sorted((variables or {}).items()):
            argv += ["-v", "%s=%s" % (key, value)]
        try:
            return self.runner.run(argv, env=self.env(database), data=sql).stdout
        except CommandError as error:
            raise self.error(error, action, database)

    def error(self, error, action, database=None):
        """Turn a failed command into an EngineError that says what to do."""
        text = (error.details.get("stderr") or error.msg or "").strip()
        conn = self.connection
        where = "postgresql database %r at %s:%s" % (
            database or conn.name, conn.host or "localhost", conn.port or 5432)
        first = _first_error_line(text)
        lowered = text.lower()
        if "password authentication failed" in lowered or "no password supplied" in lowered:
            return EngineError(
                "authentication failed for user %r on %s: check the password (and pg_hba.conf)"
                % (conn.user, where), stderr=text)
        if "does not exist" in lowered and "database" in lowered and "fatal" in lowered:
            return EngineError("cannot connect to %s: %s. Check the database name."
                               % (where, first), stderr=text)
        if ("could not connect" in lowered or "connection refused" in lowered
                or "could not translate host name" in lowered or "timeout expired" in lowered
                or ("connection to server" in lowered and "failed" in lowered)):
            return EngineError(
                "cannot connect to %s: %s. Check that the server is running and reachable "
                "from this host." % (where, first), stderr=text)
        if "server version mismatch" in lowered:
            return EngineError(
                "%s failed: %s. The client tools are older than the server: %s matching the "
                "server's major version." % (action, first, CLIENT_PACKAGE), stderr=text)
        return EngineError("%s on %s failed: %s" % (action, where, first or error.msg),
                           stderr=text)

    def tool_versions(self):
        versions = {}
        for name in ("pg_dump", "pg_restore", "psql"):
            versions[name] = parse_version(self.version_output(self.tool(name)))
        versions["server"] = self.psql("SHOW server_version;", action="reading the server "
                                       "version").strip().split(" ")[0]
        return versions

    def ping(self):
        self.psql("SELECT 1;", action="connecting")

    def restrict_filter_needed(self):
        if self.filter_restrict is not None:
            return self.filter_restrict
        return not psql_understands_restrict(self.version_output(self.tool("psql")))

    # -- dump and restore -----------------------------------------------------------------

    def dump(self, out, fmt=None, jobs=1):
        """pg_dump to ``out``; for the directory format ``out`` is a directory path to create."""
        fmt = self.check_format(fmt)
        argv = [self.tool("pg_dump"), "-w", "--format=%s" % fmt]
        try:
            if fmt == "directory":
                argv += ["--jobs=%d" % max(1, int(jobs)), "--file=%s" % os.fspath(out)]
                self.runner.run(argv, env=self.env())
            else:
                self.runner.pipeline([argv], stdout=out, env=self.env())
        except CommandError as error:
            raise self.error(error, "pg_dump")

    def restore(self, src, fmt=None, jobs=1):
        """Replace the database's contents with the dump ``src``.

        ``src`` is a binary stream (or a file path); for the directory format a directory
        path. With one job the whole restore, including emptying the database first, is one
        transaction: if any statement fails nothing changes. Parallel jobs cannot share a
        transaction, so they empty the database first and a failure leaves it partial.
        """
        fmt = self.check_format(fmt)
        jobs = max(1, int(jobs or 1))
        path = _path_of(src)
        if fmt == "directory" or (fmt == "custom" and jobs > 1 and path):
            if path is None:
                raise EngineError("the %s format restores from a path, not a stream" % fmt)
            return self._parallel_restore(path, fmt, jobs)
        producers = []
        if fmt == "custom":
            producers.append([self.tool("pg_restore"), "--clean", "--if-exists", "--no-owner",
                              "--exit-on-error", "--file=-"])
        if self.restrict_filter_needed():
            producers.append([find_tool(["sed"], "sed is needed to restore with this psql"),
                              "-E", RESTRICT_FILTER])
        with _open_source(src) as source:
            self._restore_in_one_transaction(producers, source)

    def restore_is_all_or_nothing(self, fmt, jobs=1):
        # One stream: one transaction, COMMIT only after the whole script arrived (above).
        return not self.is_directory_format(fmt) and max(1, int(jobs or 1)) == 1

    def _restore_in_one_transaction(self, producers, source):
        """Stream the SQL script into psql inside BEGIN ... COMMIT.

        COMMIT is sent only once the whole script has arrived intact: the producers
        (pg_restore, the filter) exited 0 and the script ends with pg_dump's completion line.
        Otherwise psql reaches the end of its input inside the transaction and the server
        rolls everything back, including the emptying at the start.
        """
        relay_read, relay_write = os.pipe()
        producer = None
        if producers:
            script_read, script_write = os.pipe()
            producer = Background(self._produce, producers, source, script_write)
            script = os.fdopen(script_read, "rb")
        else:
            script = source
        relay = Background(_relay_script, script, relay_write, producer,
                           script is not source)
        consumer_error = None
        try:
            with os.fdopen(relay_read, "rb") as psql_input, open(os.devnull, "wb") as devnull:
                self.runner.pipeline(
                    [self.psql_argv("-c", "BEGIN", "-c", FLUSH_SQL, "-f", "-")],
                    stdin=psql_input, stdout=devnull, env=self.env())
        except CommandError as error:
            consumer_error = self.error(error, "restore")
        relay.join()
        if producer is not None:
            producer.join()
        for error in (consumer_error, producer and producer.error, relay.error):
            if error is None:
                continue
            if not isinstance(error, EngineError):
                error = self.error(error, "restore") if isinstance(error, CommandError) \
                    else EngineError("restore of %s failed: %s" % (self.describe(), error))
            raise EngineError(
                "%s. The restore ran in one transaction, so the database was not changed."
                % error.msg.rstrip("."), stderr=error.details.get("stderr"))

    def _produce(self, stages, source, write_fd):
        with os.fdopen(write_fd, "wb") as out:
            self.runner.pipeline(stages, stdin=source, stdout=out, env=self.env())

    def _parallel_restore(self, path, fmt, jobs):
        self.flush()
        argv = [self.tool("pg_restore"), "-w", "--clean", "--if-exists", "--no-owner",
                "--exit-on-error", "--format=%s" % fmt, "--jobs=%d" % jobs,
                "--dbname=dbname=%s" % conninfo_value(self.connection.name), path]
        try:
            self.runner.run(argv, env=self.env())
        except CommandError as error:
            failed = self.error(error, "restore")
            raise EngineError(
                "%s. A parallel restore is not one transaction: the database is now partly "
                "restored; restore again (with jobs=1 to make it atomic)." % failed.msg.rstrip("."),
                stderr=failed.details.get("stderr"))

    def flush(self):
        self.psql(FLUSH_SQL, action="emptying the database")

    # -- databases ------------------------------------------------------------------------

    def database_exists(self, name):
        out = self.psql("SELECT count(*) FROM pg_database WHERE datname = :'name';",
                        database=MAINTENANCE_DATABASE, variables={"name": name},
                        action="looking up database %r" % name)
        return out.strip() == "1"

    def create_database(self, name):
        """An empty database with the encoding and locale of this engine's database."""
        settings = self.psql(
            "SELECT json_build_object('encoding', pg_encoding_to_char(encoding), "
            "'collate', datcollate, 'ctype', datctype) FROM pg_database "
            "WHERE datname = :'source';",
            database=MAINTENANCE_DATABASE, variables={"source": self.connection.name},
            action="reading the encoding of %r" % self.connection.name).strip()
        sql = "CREATE DATABASE :\"name\""
        variables = {"name": name}
        if settings:
            settings = json.loads(settings)
            sql += " TEMPLATE template0 ENCODING :'encoding' LC_COLLATE :'collate' " \
                   "LC_CTYPE :'ctype'"
            variables.update(settings)
        self.psql(sql + ";", database=MAINTENANCE_DATABASE, variables=variables,
                  action="creating database %r" % name)

    def drop_database(self, name, force=False):
        sql = "DROP DATABASE IF EXISTS :\"name\"%s;" % (" WITH (FORCE)" if force else "")
        self.psql(sql, database=MAINTENANCE_DATABASE, variables={"name": name},
                  action="dropping database %r" % name)

    # -- snapshot -------------------------------------------------------------------------

    def snapshot(self, content=True):
        session = _SNAPSHOT_SESSION + _CATALOG_QUERY % {"relations": _RELATIONS}
        if content:
            session += _CONTENT_QUERIES % {"relations": _RELATIONS}
        session += _MIGRATIONS_QUERY % {"migrations": MIGRATIONS_TABLE} + "COMMIT;\n"
        out = self.psql(session, action="reading the schema")
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
            raise EngineError("reading the schema of %s returned nothing" % self.describe())
        return make_snapshot(_schema_from_catalog(catalog), contents, migrations)

    # -- lock -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name=DEFAULT_LOCK_NAME, timeout=60):
        """A session advisory lock held by a psql process that stays connected.

        Its application_name says who holds it; if the process dies the server drops the
        session and the lock with it.
        """
        key = lock_key(name)
        holder = holder_identity(name)
        application_name = ("dbsafe:%s:%s:%s" % (holder["host"][:24], holder["pid"],
                                                 holder["since"]))[:63]
        session = _PsqlSession(self, application_name)
        try:
            deadline = time.monotonic() + max(0, timeout)
            while session.query("SELECT pg_try_advisory_lock(%d);" % key) != "t":
                if time.monotonic() >= deadline:
                    other = _describe_pg_holder(session.query(_HOLDER_QUERY % (
                        (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)))
                    raise LockTimeout(lock_timeout_message(self.connection, name, timeout,
                                                           other), holder=other, lock=name)
                time.sleep(0.2)
            try:
                yield holder
            finally:
                session.query("SELECT pg_advisory_unlock(%d);" % key, check=False)
        finally:
            session.close()


class _PsqlSession(ClientSession):
    """A psql process kept open: one query in, one line out."""

    tool = "psql"

    def __init__(self, engine, application_name):
        super(_PsqlSession, self).__init__(engine)
        self.start(engine.psql_argv(), env=engine.env(application_name=application_name))

    def text(self, line):
        return line.decode("utf-8").strip()


def _describe_pg_holder(text):
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


def _schema_from_catalog(catalog):
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


def _relay_script(script, write_fd, producer, close_script):
    """Copy the script to psql, then COMMIT only if it is complete (see the caller)."""
    tail = b""
    try:
        with os.fdopen(write_fd, "wb") as out:
            while True:
                chunk = script.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                tail = (tail + chunk)[-TAIL:]
            if producer is not None:
                producer.join()
                if producer.error is not None:
                    return  # the producer's error is reported; no COMMIT
            if PlainScript.trailer not in tail:
                raise EngineError(
                    "the dump is incomplete: it does not end with pg_dump's %r line"
                    % PlainScript.trailer.decode())
            out.write(b"\nCOMMIT;\n")
    except BrokenPipeError:
        pass  # psql stopped at an error: it is reported
    finally:
        if close_script:
            script.close()


def _first_error_line(text):
    for line in (text or "").splitlines():
        if "ERROR" in line or "FATAL" in line or "error" in line:
            return line.strip()
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[0] if lines else ""


def _path_of(src):
    """The file path behind ``src``: a path itself, or a regular file object's name."""
    if isinstance(src, (str, bytes, os.PathLike)):
        return os.fspath(src)
    name = getattr(src, "name", None)
    if isinstance(name, str) and os.path.isfile(name) and src.seekable() and src.tell() == 0:
        return name
    return None


@contextlib.contextmanager
def _open_source(src):
    """``src`` as a binary file object: opened here when it is a path."""
    if isinstance(src, (str, bytes, os.PathLike)):
        with open(src, "rb") as handle:
            yield handle
    else:
        yield src
