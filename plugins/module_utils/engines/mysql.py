# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""MySQL and MariaDB through the mariadb / mariadb-dump clients (or mysql / mysqldump).

Credentials go into a private option file given as the first option; it lives in a 0700
temporary directory only while the client starts (behind db_command_prefix: a 0600 file made
where the tools run, for the module call: engines/prefix_files.py). ``--defaults-file`` (not
``--defaults-extra-file``) so that a ``~/.my.cnf`` of whoever runs the module (often root,
through become) can never replace the project's user or password.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import hashlib
import json
import os
import re
import secrets
import threading
import time

from ansible_collections.dbsafe.django.plugins.module_utils.engines import mysql_privileges, mysql_sessions
from ansible_collections.dbsafe.django.plugins.module_utils.engines.base import (
    DEFAULT_LOCK_NAME,
    ClientSession,
    DumpFormat,
    Engine,
    PrivateDir,
    copy_keeping_tail,
    find_tool,
    holder_identity,
    lock_timeout_message,
    make_snapshot,
    open_source,
    write_private_file,
)
from ansible_collections.dbsafe.django.plugins.module_utils.engines.prefix_files import prefix_files
from ansible_collections.dbsafe.django.plugins.module_utils.engines.blockers import (
    blocked_restore_message,
    describe_blockers,
)
from ansible_collections.dbsafe.django.plugins.module_utils.engines.mysql_snapshot import (
    catalog_sql,
    contents_from_output,
    contents_sql,
    definition_from_output,
    items_from_output,
    leftover_side_databases,
    objects_from_output,
    objects_sql,
    quote_identifier,
    quote_literal,
    row_counts_sql,
    schema_from_output,
    show_create_sql,
    side_database_name,
    swap_scripts,
    tables_sql,
)
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    CommandError,
    first_error_line,
    killed_by_signal,
    EngineError,
    LockTimeout,
)
from ansible_collections.dbsafe.django.plugins.module_utils.processes import Background

CLIENT_PACKAGE = "install the MariaDB or MySQL client (Debian/Ubuntu: mariadb-client)"
CLIENT_NAMES = ("mariadb", "mysql")
DUMP_NAMES = ("mariadb-dump", "mysqldump")
MAX_PACKET = "--max-allowed-packet=1G"
# MariaDB clients understand mariadb-dump's first line "/*M!999999\- enable the sandbox mode */"
# since these releases; older ones and MySQL's client stop on it.
_SANDBOX_SINCE = {(10, 5): 25, (10, 6): 18, (10, 11): 8, (11, 0): 6, (11, 1): 5, (11, 2): 4,
                  (11, 4): 2}
SANDBOX_FILTER = r"1{/^\/\*M!999999/d;}"
# The holder keeps running short queries that name it, so others can read who holds the lock
# in the processlist; short, because a server notices a vanished client only between queries.
HOLDER_SLEEP = 0.5
# Seconds the swap's RENAME TABLE waits for metadata locks the application holds.
SWAP_LOCK_WAIT = 120


def option_value(value):
    """A value for a MySQL option file, double-quoted with its escapes."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"%s"' % text


def client_understands_sandbox(version_text):
    """True when this client accepts mariadb-dump's sandbox-mode first line."""
    match = re.search(r"Distrib (\d+)\.(\d+)\.(\d+)-MariaDB", version_text or "")
    if not match:
        return False
    major, minor, patch = (int(part) for part in match.groups())
    if (major, minor) in _SANDBOX_SINCE:
        return patch >= _SANDBOX_SINCE[(major, minor)]
    return (major, minor) > (11, 4)


def lock_name(database, name):
    """The server-wide GET_LOCK name for ``name`` in ``database`` (at most 64 characters)."""
    full = "dbsafe:%s:%s" % (database, name)
    if len(full) <= 64:
        return full
    return "dbsafe:" + hashlib.sha256(full.encode("utf-8")).hexdigest()[:57]


class MysqlDump(DumpFormat):
    """mariadb-dump's (mysqldump's) SQL script."""

    name = "sql"
    extension = "sql"
    # The tool's last line: a dump cut short lacks it, also when the tool (or a wrapper)
    # claimed success.
    trailer = b"-- Dump completed"


class MysqlEngine(Engine):
    name = "mysql"
    dump_formats = (MysqlDump(),)
    client_package = CLIENT_PACKAGE

    def __init__(self, connection, runner):
        super(MysqlEngine, self).__init__(connection, runner)
        self._server = None
        # None: ask the client's version; tests force True/False.
        self.filter_sandbox = None
        # "swap": load into a scratch database and swap it in; "in_place": the dump runs in
        # the database itself; "auto": swap, in place when the user may not create the scratch
        # database (the guard's restore after a failed migrate must not depend on that
        # privilege). db_backup sets its restore_method option (see restore).
        self.restore_method = "auto"
        self.last_restore_method = None
        # Seconds a restore waits for metadata locks other sessions hold before it gives up
        # and names them (None: SWAP_LOCK_WAIT for the swap, the server's setting otherwise);
        # terminate_blockers: end such sessions first (the application is meant to be stopped).
        self.restore_lock_wait = None
        self.terminate_blockers = False
        # The connection ids of this engine's own sessions (the run lock's): never a blocker.
        self.own_connections = set()
        self.blockers_seen = None
        if str(connection.name or "").startswith("-"):
            raise EngineError("refusing the MySQL database name %r (it starts with '-')"
                              % connection.name)

    # -- tools and option files -----------------------------------------------------------

    def option_file_text(self):
        conn = self.connection
        lines = []
        if conn.options.get("read_default_file"):
            lines.append("!include %s" % conn.options["read_default_file"])
        lines.append("[client]")
        settings = [("user", conn.user), ("password", conn.password), ("host", conn.host),
                    ("port", conn.port),
                    ("socket", conn.options.get("unix_socket") or conn.options.get("socket"))]
        ssl = conn.options.get("ssl") or {}
        if isinstance(ssl, dict):
            settings += [("ssl-ca", ssl.get("ca")), ("ssl-cert", ssl.get("cert")),
                         ("ssl-key", ssl.get("key"))]
        for key, value in settings:
            if value not in (None, ""):
                lines.append("%s=%s" % (key, option_value(value)))
        lines.append("default-character-set=utf8mb4")
        # The client's own group: mariadb-dump refuses the option (it has none; dump pings
        # through the client first).
        lines += ["[mysql]", "connect-timeout=%d" % conn.connect_timeout()]
        if self.restore_lock_wait:
            # The guard's restore waits a bounded time for metadata locks other sessions hold.
            lines.append('init-command="SET SESSION lock_wait_timeout=%d"'
                         % int(self.restore_lock_wait))
        return "\n".join(lines) + "\n"

    @contextlib.contextmanager
    def option_file(self):
        """A 0600 option file in a private directory, removed afterwards (also on failure).
        Behind db_command_prefix it is made where the tools run (prefix_files), once per
        module call."""
        if self.prefix:
            yield prefix_files(self.runner).path_for(self.option_file_text())
            return
        with PrivateDir(prefix="dbsafe-my-") as directory:
            yield write_private_file(os.path.join(directory, "client.cnf"),
                                     self.option_file_text())

    def client_argv(self, option_file, database=True, *extra):
        argv = self.tool_argv(CLIENT_NAMES, "--defaults-file=%s" % option_file, "--batch",
                              "--skip-column-names", "--raw", *extra)
        if database:
            argv.append(self.connection.name)
        return argv

    def sql(self, text, database=True, action="query"):
        """Run ``text`` (stdin) through the client; returns stdout."""
        with self.option_file() as option_file:
            try:
                return self.runner.run(self.client_argv(option_file, database),
                                       data=text).stdout
            except CommandError as error:
                raise self.error(error, action)

    def error(self, error, action):
        text = (error.details.get("stderr") or error.msg or "").strip()
        conn = self.connection
        where = "mysql database %r at %s:%s" % (conn.name, conn.host or "localhost",
                                                conn.port or 3306)
        first = _first_line(text)
        killed = killed_by_signal(error)
        if killed:  # the cause, whatever the tool printed last
            reported = first_error_line(text, errors_only=True)
            first = killed + (" (it reported: %s)" % reported if reported else "")
        if re.search(r"\b1045\b", text) or "(using password:" in text:
            return EngineError(
                "authentication failed for user %r on %s: check the password (%s)"
                % (conn.user, where, first), stderr=text)
        if re.search(r"\b1049\b", text) or "Unknown database" in text:
            return EngineError("cannot connect to %s: the database does not exist (%s)"
                               % (where, first), stderr=text)
        if re.search(r"\b(2002|2003|2005|2013)\b", text) or "Can't connect" in text:
            return EngineError(
                "cannot connect to %s: %s. Check that the server is running and %s."
                % (where, first, self.reach_advice()), stderr=text)
        return EngineError("%s on %s failed: %s" % (action, where, first or error.msg),
                           stderr=text)

    def server(self):
        """(version string, is MariaDB)."""
        if self._server is None:
            version = self.sql("SELECT VERSION();", action="reading the server version").strip()
            self._server = (version, "mariadb" in version.lower())
        return self._server

    def tool_versions(self):
        versions = {}
        for names in (DUMP_NAMES, CLIENT_NAMES):
            out = self.version_output(names)
            match = re.search(r"Distrib (\S+?),? ", out) or re.search(r"Ver (\S+)", out)
            versions[os.path.basename(self.tool(names))] = match.group(1) if match else out.strip()
        versions["server"] = self.server()[0]
        return versions

    def ping(self):
        self.sql("SELECT 1;", action="connecting")

    def server_identity(self):
        # MySQL's server_uuid (kept in the data directory); MariaDB has none: its server_uid
        # is a hash the server computes from its host and port at start (server_id defaults
        # to 1 everywhere, so it tells nothing). Without either: hostname and port.
        out = self.sql("SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES "
                       "WHERE VARIABLE_NAME IN ('SERVER_UUID', 'SERVER_UID', 'HOSTNAME', 'PORT');",
                       database=False, action="reading the server's identity")
        found = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
        found = dict((key.lower(), value.strip()) for key, value in found.items())
        for variable in ("server_uuid", "server_uid"):
            if found.get(variable):
                return "mysql:%s:%s" % (variable, found[variable])
        if found.get("hostname"):
            return "mysql:hostname:%s:%s" % (found["hostname"], found.get("port", ""))
        return None

    def access_problems(self, restore=True):
        access = mysql_privileges.access_from_output(
            self.sql(mysql_privileges.ACCESS_SQL, action="reading the user's privileges"))
        problems = mysql_privileges.write_problems(access, self.describe())
        if restore:
            problems += mysql_privileges.restore_problems(access, self.describe())
        return problems

    def sandbox_filter_needed(self):
        if self.filter_sandbox is not None:
            return self.filter_sandbox
        return not client_understands_sandbox(self.version_output(CLIENT_NAMES))

    # -- dump and restore -----------------------------------------------------------------

    def dump(self, out, fmt=None, jobs=1):
        """One database, no CREATE DATABASE / USE: it restores into any database name."""
        self.check_format(fmt)
        # mariadb-dump has no connect timeout: a server that accepts and never answers is
        # found by the client's (option file) first.
        self.ping()
        with self.option_file() as option_file:
            argv = self.tool_argv(DUMP_NAMES, "--defaults-file=%s" % option_file,
                                  "--single-transaction", "--routines", "--triggers", "--events",
                                  "--hex-blob", "--default-character-set=utf8mb4", "--no-tablespaces",
                                  MAX_PACKET, self.connection.name)
            try:
                self.runner.pipeline([argv], stdout=out)
            except CommandError as error:
                raise self.error(error, "mariadb-dump")

    def restore(self, src, fmt=None, jobs=1):
        """Replace the database's contents with the dump ``src`` (see _restore); with
        ``terminate_blockers`` the sessions that would block it are ended first, and when it
        gave up waiting for their locks the message names them."""
        self.check_format(fmt)
        if self.terminate_blockers:
            self.end_blocking_sessions()
        try:
            return self._restore(src)
        except EngineError as error:
            if not mysql_sessions.lock_wait_timed_out(
                    "%s %s" % (error.msg, error.details.get("stderr") or "")):
                raise
            raise self._blocked_restore_error(error)

    def blocking_sessions(self):
        """The other sessions that may hold the restore up: those with an open transaction
        (needs the PROCESS privilege), else this user's other sessions on this database
        (``blockers_seen`` says which: "all" or "own")."""
        self.blockers_seen = "all"
        try:
            return mysql_sessions.sessions_from_output(self.sql(
                mysql_sessions.transactions_sql(self.own_connections),
                action="listing the sessions with open transactions"))
        except EngineError as error:
            if not mysql_sessions.process_privilege_missing(
                    "%s %s" % (error.msg, error.details.get("stderr") or "")):
                raise
        self.blockers_seen = "own"
        return mysql_sessions.sessions_from_output(self.sql(
            mysql_sessions.connected_sql(self.own_connections),
            action="listing the sessions connected to the database"))

    def end_blocking_sessions(self):
        """KILL CONNECTION for each blocking session; refused ones are an error that names
        them (before the restore changed anything)."""
        refused = []
        for session in self.blocking_sessions():
            try:
                self.sql(mysql_sessions.kill_sql(session["connection"]), database=False,
                         action="ending connection %s" % session["connection"])
            except EngineError as error:
                text = "%s %s" % (error.msg, error.details.get("stderr") or "")
                if mysql_sessions.already_gone(text):
                    continue
                if not mysql_sessions.kill_refused(text):
                    raise
                refused.append(session)
        if refused:
            raise EngineError(mysql_sessions.kill_refused_message(
                self.describe(), self.connection.user, describe_blockers(refused)))

    def describe_sessions(self, sessions):
        """Also says when only the user's own sessions could be seen."""
        return mysql_sessions.describe_seen(describe_blockers(sessions), len(sessions),
                                            self.blockers_seen == "own")

    def _blocked_restore_error(self, error):
        waited = self.restore_lock_wait or SWAP_LOCK_WAIT
        return EngineError("%s. What failed: %s" % (
            blocked_restore_message(self.describe(), waited, self.described_blockers()), error.msg),
            stderr=error.details.get("stderr"))

    def _restore(self, src):
        """Replace the database's contents with the dump ``src``, all or nothing.

        MySQL cannot undo DDL, so the dump never runs in the database itself: it is loaded
        into a scratch database on the same server (``<database>__dbsafe_restore_<token>``,
        which needs the CREATE privilege there), checked to have arrived to its last line,
        and swapped in with one RENAME TABLE statement (``swap``). A failure or a kill before
        the swap leaves the database as it was; the swap itself is atomic. Views, triggers,
        routines and events cannot move between databases: they are recreated from the
        scratch database's definitions right after the swap, in the same client script (a
        kill in that moment leaves the restored tables with some of them missing).
        ``restore_method = "in_place"``: the earlier way, empty the database and run the dump
        in it (no CREATE privilege needed; a failure leaves it partly restored). "auto" swaps
        unless the server refuses the scratch database for lack of privileges, and then
        restores in place; ``last_restore_method`` says which ran.
        """
        if self.restore_method not in ("swap", "in_place", "auto"):
            raise EngineError("unknown restore_method %r (swap, in_place or auto)"
                              % self.restore_method)
        self.last_restore_method = "in_place" if self.restore_method == "in_place" else "swap"
        if self.restore_method == "in_place":
            return self._restore_in_place(src)
        token = secrets.token_hex(4)
        scratch = side_database_name(self.connection.name, "restore", token)
        old = side_database_name(self.connection.name, "old", token)
        self._drop_leftover_sides()
        made = []
        try:
            for name in (scratch, old):
                self._create_side(name)
                made.append(name)
            self._load(src, scratch)
            scratch_engine = self.for_database(scratch)
            scratch_objects = scratch_engine.objects()
            definitions = scratch_engine.definitions(scratch_objects)
            target_objects = self.objects()
            target_triggers = self.definitions(dict(target_objects, VIEW=[], PROCEDURE=[],
                                                    FUNCTION=[], EVENT=[]))
        except BaseException as error:
            self._drop_sides(made)
            if (isinstance(error, EngineError) and not made and self.restore_method == "auto"
                    and error.details.get("privilege")):
                self.last_restore_method = "in_place"
                return self._restore_in_place(src)
            if isinstance(error, EngineError):
                raise EngineError("%s. Nothing was swapped in: %s was not changed." % (
                    error.msg.rstrip("."), self.describe()), stderr=error.details.get("stderr"))
            raise
        self._swap(scratch, old, target_objects, scratch_objects, definitions, target_triggers)
        self._drop_sides([scratch, old])

    def _restore_in_place(self, src):
        """Empty the database, then run the dump through the client, stopping at the first
        error. MySQL cannot undo DDL, so a failure leaves the database partly restored."""
        self.flush()
        with self.option_file() as option_file:
            try:
                with open_source(src) as source, open(os.devnull, "wb") as devnull:
                    self.runner.pipeline(self._load_stages(option_file, self.connection.name),
                                         stdin=source, stdout=devnull)
            except CommandError as error:
                failed = self.error(error, "restore")
                raise EngineError(
                    "%s. The restore stopped at this first error; MySQL cannot undo DDL, so "
                    "the database is now partly restored (restore_method in_place): fix the cause "
                    "and restore again." % failed.msg.rstrip("."),
                    stderr=failed.details.get("stderr"))

    def _load_stages(self, option_file, database):
        stages = []
        if self.sandbox_filter_needed():
            stages.append([find_tool(["sed"], "sed is needed to restore with this client"),
                           "-e", SANDBOX_FILTER])
        argv = self.client_argv(option_file, False, MAX_PACKET)
        stages.append(argv + [database])
        return stages

    def _load(self, src, database):
        """The dump into ``database``; refused unless it arrived up to its last line (a
        decompressor killed half-way ends the stream early without an error of the client)."""
        relay_read, relay_write = os.pipe()
        with self.option_file() as option_file, open_source(src) as source:
            relay = Background(_relay_dump, source, relay_write)
            try:
                with os.fdopen(relay_read, "rb") as dump, open(os.devnull, "wb") as devnull:
                    self.runner.pipeline(self._load_stages(option_file, database),
                                         stdin=dump, stdout=devnull)
            except CommandError as error:
                raise self.error(error, "loading the dump into the scratch database %s" % database)
            finally:
                relay.join()
        if relay.error is not None:
            if isinstance(relay.error, EngineError):
                raise relay.error
            raise EngineError("reading the dump failed: %s" % relay.error)
        if not relay.result:
            raise EngineError("the dump is incomplete: it does not end with the line %r that "
                              "mariadb-dump writes when it has finished (the stream was cut "
                              "short)" % MysqlDump.trailer.decode("ascii"))

    def _create_side(self, name):
        try:
            self.create_database(name)
        except EngineError as error:
            raise EngineError(
                "cannot create the scratch database %s that the restore loads the dump into "
                "before swapping it in (%s): grant the user %r CREATE and DROP on `%s%%`.* (the "
                "database's name followed by anything), or restore with restore_method "
                "in_place (not all-or-nothing)" % (name, error.msg.rstrip("."),
                                                   self.connection.user, self.connection.name),
                stderr=error.details.get("stderr"), privilege=_is_privilege_error(error))

    def _drop_sides(self, names):
        for name in names:
            try:
                self.drop_database(name)
            except EngineError:
                pass  # a leftover: the next restore of this database drops it

    def _drop_leftover_sides(self):
        """Side databases a killed restore of this database left (the caller holds the run
        lock, so no other restore of it is running)."""
        out = self.sql("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE "
                       "SCHEMA_NAME LIKE %s;" % quote_literal(
                           _like_prefix(self.connection.name[:20]) + "%"),
                       database=False, action="listing scratch databases")
        for name in leftover_side_databases(self.connection.name, out.splitlines()):
            self.drop_database(name)

    def objects(self):
        """{kind: names} of this database's tables, views, triggers, routines and events."""
        return objects_from_output(self.sql(objects_sql(), action="listing the objects"))

    def definitions(self, objects):
        """{(kind, name): (CREATE text, sql_mode)} of the views, triggers, routines and events
        in ``objects``; read without --raw, so that a definition stays on its line."""
        wanted = [(kind, name) for kind in ("VIEW", "TRIGGER", "PROCEDURE", "FUNCTION", "EVENT")
                  for name in objects.get(kind, [])]
        if not wanted:
            return {}
        script = "".join(show_create_sql(kind, name) for kind, name in wanted)
        with self.option_file() as option_file:
            argv = self.tool_argv(CLIENT_NAMES, "--defaults-file=%s" % option_file, "--batch",
                                  "--skip-column-names", self.connection.name)
            try:
                out = self.runner.run(argv, data=script).stdout
            except CommandError as error:
                raise self.error(error, "reading the definitions of views, triggers and routines")
        lines = [line for line in out.split("\n") if line]
        if len(lines) != len(wanted):
            raise EngineError("reading the definitions of %d views, triggers and routines of %s "
                              "gave %d lines" % (len(wanted), self.describe(), len(lines)))
        return dict((item, definition_from_output(item[0], line))
                    for item, line in zip(wanted, lines))

    def _swap(self, scratch, old, target_objects, scratch_objects, definitions, target_triggers):
        # The RENAME waits for the application's open transactions on the tables; bounded
        # (the guard sets its own bound through the client's option file).
        lock_wait = None if self.restore_lock_wait else SWAP_LOCK_WAIT
        before, after = swap_scripts(self.connection.name, scratch, old, target_objects,
                                     scratch_objects, definitions, lock_wait)
        try:
            self.sql(before, action="swapping the restored tables in")
        except EngineError as error:
            if self.for_database(old).objects()["TABLE"]:
                raise self._after_swap_error(error, old)
            # The RENAME did not happen: the tables are the old ones; put back the triggers
            # dropped before it.
            _unused, put_back = swap_scripts(
                self.connection.name, scratch, old, dict(target_objects, TABLE=[], VIEW=[],
                                                         PROCEDURE=[], FUNCTION=[], EVENT=[]),
                dict(target_objects, TABLE=[], VIEW=[], PROCEDURE=[], FUNCTION=[], EVENT=[]),
                target_triggers)
            triggers = ""
            if put_back:
                try:
                    self.sql(put_back, action="recreating the triggers")
                except EngineError as trigger_error:
                    triggers = " except its triggers %s, which could not be recreated (%s)" % (
                        ", ".join(target_objects["TRIGGER"]), trigger_error.msg)
            self._drop_sides([scratch, old])
            raise EngineError(
                "%s. The swap did not happen: %s holds its previous tables and data%s."
                % (error.msg.rstrip("."), self.describe(), triggers),
                stderr=error.details.get("stderr"))
        if after:
            try:
                self.sql(after, action="recreating views, triggers, routines and events")
            except EngineError as error:
                raise self._after_swap_error(error, old)

    def _after_swap_error(self, error, old):
        return EngineError(
            "%s. The restored tables and data ARE in %s (swapped in), but its views, triggers, "
            "routines or events may be incomplete; its previous tables are kept in the "
            "database %s: compare, fix and restore again, then drop %s."
            % (error.msg.rstrip("."), self.describe(), old, old),
            stderr=error.details.get("stderr"))

    def flush(self):
        listing = self.sql(
            "SELECT JSON_OBJECT('kind', 'table', 'name', TABLE_NAME, 'type', TABLE_TYPE) "
            "FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE();\n"
            "SELECT JSON_OBJECT('kind', ROUTINE_TYPE, 'name', ROUTINE_NAME) "
            "FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE();\n"
            "SELECT JSON_OBJECT('kind', 'EVENT', 'name', EVENT_NAME) "
            "FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE();\n",
            action="listing the tables")
        statements = ["SET FOREIGN_KEY_CHECKS = 0;"]
        tables, views, others = [], [], []
        for line in listing.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if item["kind"] == "table" and item["type"] == "VIEW":
                views.append(quote_identifier(item["name"]))
            elif item["kind"] == "table" and item["type"] == "SEQUENCE":
                others.append("DROP SEQUENCE IF EXISTS %s;" % quote_identifier(item["name"]))
            elif item["kind"] == "table":
                tables.append(quote_identifier(item["name"]))
            else:
                others.append("DROP %s IF EXISTS %s;" % (item["kind"],
                                                         quote_identifier(item["name"])))
        if views:
            statements.append("DROP VIEW IF EXISTS %s;" % ", ".join(views))
        if tables:
            statements.append("DROP TABLE IF EXISTS %s;" % ", ".join(tables))
        statements += others
        if len(statements) > 1:
            self.sql("\n".join(statements) + "\n", action="emptying the database")

    # -- databases ------------------------------------------------------------------------

    def database_exists(self, name):
        out = self.sql("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = "
                       "%s;" % quote_literal(name), database=False,
                       action="looking up database %r" % name)
        return out.strip() == "1"

    def create_database(self, name):
        """An empty database with this engine's database's character set and collation."""
        out = self.sql("SELECT JSON_OBJECT('charset', DEFAULT_CHARACTER_SET_NAME, 'collation', "
                       "DEFAULT_COLLATION_NAME) FROM information_schema.SCHEMATA WHERE "
                       "SCHEMA_NAME = %s;" % quote_literal(self.connection.name),
                       database=False, action="reading the character set").strip()
        sql = "CREATE DATABASE %s" % quote_identifier(name)
        if out:
            settings = json.loads(out)
            sql += " CHARACTER SET %s COLLATE %s" % (
                quote_identifier(settings["charset"]), quote_identifier(settings["collation"]))
        self.sql(sql + ";", database=False, action="creating database %r" % name)

    def drop_database(self, name):
        self.sql("DROP DATABASE IF EXISTS %s;" % quote_identifier(name), database=False,
                 action="dropping database %r" % name)

    # -- snapshot -------------------------------------------------------------------------

    def snapshot(self, content=True):
        schema = schema_from_output(self.sql(catalog_sql(self.server()[1]),
                                             action="reading the schema"))
        out = self.sql(contents_sql(schema, content), action="reading the table contents")
        contents, migrations = contents_from_output(out, schema)
        return make_snapshot(schema, contents, migrations)

    def row_counts(self):
        tables = [item["name"] for item in items_from_output(
            self.sql(tables_sql(), action="listing the tables"), "table")]
        out = self.sql(row_counts_sql(tables), action="counting the rows")
        return dict((item["table"], item["rows"]) for item in items_from_output(out, "rows"))

    # -- lock -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name=DEFAULT_LOCK_NAME, timeout=60):
        """GET_LOCK in a client process that stays connected; the server releases it when the
        connection goes away, also when the process is killed."""
        server_name = quote_literal(lock_name(self.connection.name, name))
        holder = holder_identity(name)
        session = _ClientSession(self)
        own = None
        try:
            own = session.query("SELECT CONNECTION_ID();")
            self.own_connections.add(int(own))
            answer = session.query("SELECT GET_LOCK(%s, %s);" % (server_name,
                                                                 max(0, float(timeout))))
            if answer != "1":
                other = self._lock_holder(session, server_name)
                raise LockTimeout(lock_timeout_message(self.connection, name, timeout, other),
                                  holder=other, lock=name)
            session.keep_naming(_holder_sql(holder))
            try:
                yield holder
            finally:
                session.stop_naming()
                session.query("SELECT RELEASE_LOCK(%s);" % server_name, check=False)
        finally:
            session.close()
            if own:
                self.own_connections.discard(int(own))

    def _lock_holder(self, session, server_name):
        connection_id = session.query("SELECT IS_USED_LOCK(%s);" % server_name)
        if not connection_id or not connection_id.isdigit():
            return None
        row = None
        for _attempt in range(20):  # the holder is between two naming queries now and then
            line = session.query(
                "SELECT JSON_OBJECT('info', INFO, 'client', HOST, 'user', USER) "
                "FROM information_schema.PROCESSLIST WHERE ID = %s;" % connection_id)
            row = json.loads(line) if line else None
            if not row or "dbsafe-holder" in (row.get("info") or ""):
                break
            time.sleep(0.05)
        holder = {"connection": int(connection_id)}
        if row:
            holder.update(client=row.get("client"), user=row.get("user"))
            match = re.search(r"dbsafe-holder host=(\S*) pid=(\d+) since=(\S+?)'",
                              row.get("info") or "")
            if match:
                holder.update(host=match.group(1), pid=int(match.group(2)),
                              since=match.group(3))
        return holder


def _holder_sql(holder):
    host = re.sub(r"[^A-Za-z0-9._-]", "_", holder["host"])
    return "SELECT 'dbsafe-holder host=%s pid=%d since=%s', SLEEP(%s);" % (
        host, holder["pid"], holder["since"], HOLDER_SLEEP)


class _ClientSession(ClientSession):
    """A mariadb client kept open: one query in, one line out; can keep naming its holder."""

    tool = "mariadb"
    close_wait = HOLDER_SLEEP + 10

    def __init__(self, engine):
        super(_ClientSession, self).__init__(engine)
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._naming = None
        with engine.option_file() as option_file:
            self.start(engine.client_argv(option_file, True, "--unbuffered"))
            # The option file may go once the client has connected.
            self.query("SELECT 1;")

    def exchange(self, sql):
        # The naming thread and the lock's own queries share the one client.
        with self._guard:
            return super(_ClientSession, self).exchange(sql)

    def keep_naming(self, sql):
        def loop():
            while not self._stop.is_set():
                if self.query(sql, check=False) is None:
                    return
        self._naming = Background(loop)

    def stop_naming(self):
        self._stop.set()
        if self._naming is not None:
            self._naming.join(HOLDER_SLEEP + 10)

    def close(self):
        self._stop.set()
        super(_ClientSession, self).close()


def _first_line(text):
    """The first line naming an error, never a warning."""
    return first_error_line(text)


def _relay_dump(source, write_fd):
    """Copy the dump to the client; True when it ended with mariadb-dump's last line."""
    try:
        with os.fdopen(write_fd, "wb") as out:
            tail = copy_keeping_tail(source, out, MysqlDump.tail_bytes)
    except BrokenPipeError:
        return False  # the client stopped at an error: it is reported
    return MysqlDump.trailer in tail


def _is_privilege_error(error):
    text = "%s %s" % (error.msg, error.details.get("stderr") or "")
    return bool(re.search(r"\b(1044|1142|1227)\b|access denied", text, re.IGNORECASE))


def _like_prefix(text):
    """``text`` for a LIKE pattern that matches it literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
