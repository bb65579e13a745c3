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
    ClientSession,
    Engine,
    find_tool,
    holder_identity,
    copy_keeping_tail,
    lock_timeout_message,
    open_source,
    parse_version,
    version_tuple,
)
from ansible_collections.dbsafe.django.plugins.module_utils.engines.blockers import (
    blocked_restore_message,
)
from ansible_collections.dbsafe.django.plugins.module_utils.engines.postgresql_archive import (
    DUMP_FORMATS,
    PlainScript,
)
from ansible_collections.dbsafe.django.plugins.module_utils.engines.postgresql_privileges import (
    ACCESS_SQL,
    access_from_output,
    restore_problems,
    write_problems,
)
from ansible_collections.dbsafe.django.plugins.module_utils.engines.postgresql_sql import (
    BLOCKERS_SQL,
    FLUSH_SQL,
    TERMINATE_BLOCKERS_SQL,
    describe_pg_holder,
    holder_query,
    row_counts_from_output,
    row_counts_session,
    snapshot_from_output,
    snapshot_session,
)
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    CommandError,
    first_error_line,
    killed_by_signal,
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
    client_package = CLIENT_PACKAGE

    def __init__(self, connection, runner):
        super(PostgresqlEngine, self).__init__(connection, runner)
        # None: ask psql's version; tests force True/False.
        self.filter_restrict = None
        # Seconds a restore waits for a table lock another session holds before it gives up
        # and names that session (None: no limit); terminate_blockers: end such sessions
        # first (the application is meant to be stopped).
        self.restore_lock_wait = None
        self.terminate_blockers = False
        # A privileged restore login sets the owners the dump recorded (the application's
        # user); as the application's user itself they cannot be set: the objects become its.
        self.keep_owners = False

    # -- environment and tools ------------------------------------------------------------

    def env(self, database=None, application_name=None):
        conn = self.connection
        env = {"PGDATABASE": database or conn.name,
               "PGCONNECT_TIMEOUT": str(conn.connect_timeout())}
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

    def restore_env(self):
        """env() for the restore's sessions: lock_timeout bounds its wait behind others."""
        env = self.env()
        if self.restore_lock_wait:
            env["PGOPTIONS"] = ("%s -c lock_timeout=%ds" % (
                env.get("PGOPTIONS", ""), int(self.restore_lock_wait))).strip()
        return env

    def blocking_sessions(self):
        """The other sessions holding a table lock in this database (see BLOCKERS_SQL)."""
        return json.loads(self.psql(BLOCKERS_SQL, action="listing the sessions that hold "
                                    "locks").strip() or "[]")

    def _before_restore(self):
        if self.terminate_blockers:
            self.psql(TERMINATE_BLOCKERS_SQL, action="ending the sessions that hold locks")

    def _restore_error(self, error):
        """The restore's failure; when it waited too long for a lock, who holds it."""
        failed = self.error(error, "restore")
        if "lock timeout" not in (error.details.get("stderr") or error.msg or ""):
            return failed
        return EngineError(blocked_restore_message(self.describe(), self.restore_lock_wait,
                                                   self.described_blockers()),
                           stderr=failed.details.get("stderr"))

    def psql_argv(self, *extra):
        # -X: no ~/.psqlrc; -w: never prompt for a password (fail instead of hanging).
        return self.tool_argv("psql", "-X", "-q", "-w", "-A", "-t", "-v", "ON_ERROR_STOP=1", *extra)

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
        killed = killed_by_signal(error)
        if killed:  # the cause, whatever the tool printed last
            reported = first_error_line(text, errors_only=True)
            first = killed + (" (it reported: %s)" % reported if reported else "")
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
                "cannot connect to %s: %s. Check that the server is running and %s."
                % (where, first, self.reach_advice()), stderr=text)
        if "server version mismatch" in lowered:
            return EngineError(
                "%s failed: %s. The client tools are older than the server: %s matching the "
                "server's major version." % (action, first, CLIENT_PACKAGE), stderr=text)
        return EngineError("%s on %s failed: %s" % (action, where, first or error.msg),
                           stderr=text)

    def tool_versions(self):
        versions = {}
        for name in ("pg_dump", "pg_restore", "psql"):
            versions[name] = parse_version(self.version_output(name))
        versions["server"] = self.psql("SHOW server_version;", action="reading the server "
                                       "version").strip().split(" ")[0]
        return versions

    def ping(self):
        self.psql("SELECT 1;", action="connecting")

    def server_identity(self):
        # The cluster's system identifier, set by initdb (a physical copy keeps it: such a
        # copy shares one with its origin, the database name and address then tell them apart).
        try:
            out = self.psql("SELECT system_identifier FROM pg_control_system();",
                            action="reading the server's system identifier").strip()
        except EngineError:
            if not self.database_exists(self.connection.name):
                raise
            return None  # pg_control_system() revoked from this user
        return "postgresql:%s" % out if out else None

    def access_problems(self, restore=True):
        access = access_from_output(self.psql(ACCESS_SQL, action="reading the user's privileges"))
        problems = write_problems(access, self.describe())
        if restore:
            problems += restore_problems(access, self.describe())
        return problems

    def restrict_filter_needed(self):
        if self.filter_restrict is not None:
            return self.filter_restrict
        return not psql_understands_restrict(self.version_output("psql"))

    # -- dump and restore -----------------------------------------------------------------

    def dump(self, out, fmt=None, jobs=1):
        """pg_dump to ``out``; for the directory format ``out`` is a directory path to create."""
        fmt = self.check_format(fmt)
        if fmt == "directory":
            self.needs_host_tools("the directory format (pg_dump writes it to a path)")
        argv = self.tool_argv("pg_dump", "-w", "--format=%s" % fmt)
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
        transaction (a directory too: pg_restore turns it into one script): if any statement
        fails nothing changes. Parallel jobs cannot share a transaction, so they empty the
        database first and a failure leaves it partial.
        """
        fmt = self.check_format(fmt)
        jobs = max(1, int(jobs or 1))
        path = _path_of(src)
        if fmt == "directory":
            self.needs_host_tools("the directory format (pg_restore reads it from a path)")
        if fmt == "directory" and path is None:
            raise EngineError("the %s format restores from a path, not a stream" % fmt)
        if jobs > 1 and fmt in ("directory", "custom") and path:
            # pg_restore --jobs reads the archive by its path, which a prefix cannot see.
            self.needs_host_tools("a parallel restore (jobs=%d)" % jobs, "restore with jobs=1")
            return self._parallel_restore(path, fmt, jobs)
        producers = []
        if fmt == "directory":
            # pg_restore reads the directory itself; its stdin is not used.
            producers.append(self.tool_argv("pg_restore", "--clean", "--if-exists", *self._owner_options(),
                                            "--exit-on-error", "--format=directory", "--file=-", path))
            src = os.devnull
        elif fmt == "custom":
            producers.append(self.tool_argv("pg_restore", "--clean", "--if-exists", *self._owner_options(),
                                            "--exit-on-error", "--file=-"))
        if self.restrict_filter_needed():
            producers.append([find_tool(["sed"], "sed is needed to restore with this psql"),
                              "-E", RESTRICT_FILTER])
        self._before_restore()
        with open_source(src) as source:
            self._restore_in_one_transaction(producers, source)

    def _owner_options(self):
        return [] if self.keep_owners else ["--no-owner"]

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
                    stdin=psql_input, stdout=devnull, env=self.restore_env())
        except CommandError as error:
            consumer_error = self._restore_error(error)
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
        argv = self.tool_argv("pg_restore", "-w", "--clean", "--if-exists", *self._owner_options(),
                              "--exit-on-error", "--format=%s" % fmt, "--jobs=%d" % jobs,
                              "--dbname=dbname=%s" % conninfo_value(self.connection.name), path)
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
        out = self.psql(snapshot_session(content), action="reading the schema")
        snapshot = snapshot_from_output(out)
        if snapshot is None:
            raise EngineError("reading the schema of %s returned nothing" % self.describe())
        return snapshot

    def row_counts(self):
        out = self.psql(row_counts_session(), action="counting the rows")
        return row_counts_from_output(out)

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
                    other = describe_pg_holder(session.query(holder_query(key)))
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


def _relay_script(script, write_fd, producer, close_script):
    """Copy the script to psql, then COMMIT only if it is complete (see the caller)."""
    try:
        with os.fdopen(write_fd, "wb") as out:
            tail = copy_keeping_tail(script, out, TAIL)
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
    """The first line naming an error, never a NOTICE such as "drop cascades to 2 other objects"."""
    return first_error_line(text)


def _path_of(src):
    """The file path behind ``src``: a path itself, or a regular file object's name."""
    if isinstance(src, (str, bytes, os.PathLike)):
        return os.fspath(src)
    name = getattr(src, "name", None)
    if isinstance(name, str) and os.path.isfile(name) and src.seekable() and src.tell() == 0:
        return name
    return None
