# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SQLite through Python's own sqlite3 module: ``connection.name`` is the database file."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import sqlite3
import tempfile
import time

from ansible_collections.dbsafe.django.plugins.module_utils.engines.base import (
    DEFAULT_LOCK_NAME,
    MIGRATIONS_TABLE,
    DumpFormat,
    Engine,
    KeyOrderedRowHasher,
    RowHasher,
    column_entry,
    holder_identity,
    lock_timeout_message,
    make_snapshot,
    new_table_schema,
    normalize_expression,
    split_type,
)
from ansible_collections.dbsafe.django.plugins.module_utils.errors import EngineError, LockTimeout

SQLITE_MAGIC = b"SQLite format 3\x00"


class SqliteDump(DumpFormat):
    """A consistent copy of the database file (the online backup API)."""

    name = "sqlite"
    extension = "sqlite"
    magic = SQLITE_MAGIC


CHUNK = 1024 * 1024
# Larger databases are copied through a temporary file instead of memory.
IN_MEMORY_LIMIT = 256 * 1024 * 1024
BUSY_TIMEOUT = 30


def quote_identifier(name):
    return '"%s"' % name.replace('"', '""')


class SqliteEngine(Engine):
    name = "sqlite"
    dump_formats = (SqliteDump(),)

    def __init__(self, connection, runner):
        super(SqliteEngine, self).__init__(connection, runner)
        if self.prefix:
            # No tool runs: this module opens the file itself, so a prefix cannot move it.
            raise EngineError(
                "db_command_prefix %s cannot apply to the SQLite database %s: SQLite is read and "
                "written by this module's own Python on this host, not by a tool; leave "
                "db_command_prefix empty (the file must be reachable here)"
                % (" ".join(self.prefix), self.connection.name))

    def described_blockers(self):
        # SQLite's locks belong to the file, not to sessions it could name.
        return "another process that has %s open (SQLite does not say which)" % self.path

    @property
    def path(self):
        return self.connection.name

    def tool_versions(self):
        return {"sqlite": sqlite3.sqlite_version}

    # -- connecting -----------------------------------------------------------------------

    def _open(self, readonly=False, path=None):
        path = path or self.path
        try:
            if readonly:
                uri = "file:%s?mode=ro" % _uri_path(path)
                conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT)
            else:
                conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT)
        except sqlite3.Error as error:
            raise EngineError("cannot open sqlite database %s: %s" % (path, error))
        return conn

    def ping(self):
        if not os.path.exists(self.path):
            raise EngineError(
                "sqlite database %s does not exist: check NAME in the Django settings "
                "(run migrate once to create it)" % self.path
            )
        if not os.access(self.path, os.R_OK):
            raise EngineError("sqlite database %s is not readable by this user" % self.path)
        conn = self._open(readonly=True)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as error:
            raise EngineError("%s is not a usable sqlite database: %s" % (self.path, error))
        finally:
            conn.close()

    # -- dump and restore -----------------------------------------------------------------

    def dump(self, out, fmt=None, jobs=1):
        """Write a consistent copy (the online backup API) of the database to ``out``."""
        self.check_format(fmt)
        self.ping()
        source = self._open(readonly=True)
        try:
            size = os.path.getsize(self.path)
            if hasattr(source, "serialize") and size <= IN_MEMORY_LIMIT:
                memory = sqlite3.connect(":memory:")
                try:
                    source.backup(memory)
                    data = memory.serialize()
                finally:
                    memory.close()
                view = memoryview(data)
                for start in range(0, len(view), CHUNK):
                    out.write(view[start:start + CHUNK])
            else:
                self._dump_via_file(source, out)
            out.flush()
        except sqlite3.Error as error:
            raise EngineError("cannot read %s for the dump: %s" % (self.describe(), error))
        finally:
            source.close()

    def _dump_via_file(self, source, out):
        # Old Pythons have no serialize(), and big files should not sit in memory: copy into
        # a private temporary file next to the database, stream it out, remove it.
        fd, temp = tempfile.mkstemp(prefix=".dbsafe-dump-", dir=os.path.dirname(
            os.path.abspath(self.path)))
        os.close(fd)
        try:
            copy = sqlite3.connect(temp)
            try:
                source.backup(copy)
            finally:
                copy.close()
            with open(temp, "rb") as handle:
                shutil.copyfileobj(handle, out, CHUNK)
        finally:
            _remove(temp)

    def restore(self, src, fmt=None, jobs=1):
        """Replace the database's contents with the dump read from ``src``.

        The dump goes into a private file next to the database, is checked, and is then
        copied in with the backup API, which replaces the whole database in one step under
        SQLite's own locking (renaming files would break the app's open connections).
        """
        self.check_format(fmt)
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise EngineError("cannot restore %s: directory %s does not exist"
                              % (self.describe(), directory))
        fd, temp = tempfile.mkstemp(prefix=".dbsafe-restore-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                if isinstance(src, (str, bytes, os.PathLike)):
                    with open(src, "rb") as source:
                        shutil.copyfileobj(source, handle, CHUNK)
                else:
                    shutil.copyfileobj(src, handle, CHUNK)
            with open(temp, "rb") as handle:
                if handle.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                    raise EngineError(
                        "cannot restore %s: the dump is not a SQLite database (wrong header); "
                        "nothing was changed" % self.describe()
                    )
            incoming = sqlite3.connect(temp)
            try:
                check = incoming.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    raise EngineError("cannot restore %s: the dump is damaged (%s); nothing "
                                      "was changed" % (self.describe(), check))
                target = self._open()
                try:
                    incoming.backup(target)
                finally:
                    target.close()
            except sqlite3.Error as error:
                raise EngineError("restore of %s failed: %s" % (self.describe(), error))
            finally:
                incoming.close()
        finally:
            _remove(temp)

    def server_identity(self):
        # The file lives on this machine: two hosts' /srv/app/db.sqlite3 are two databases.
        return "sqlite:%s" % socket.gethostname()

    def identity_name(self):
        # The real path (symlinks resolved), not the inode: a restore replaces the file.
        return os.path.realpath(self.path)

    # -- databases (files) ----------------------------------------------------------------

    def database_exists(self, name):
        return os.path.exists(name)

    def create_database(self, name):
        if os.path.exists(name):
            raise EngineError("cannot create sqlite database %s: it already exists" % name)
        sqlite3.connect(name).close()

    def drop_database(self, name):
        for suffix in ("", "-wal", "-shm", "-journal"):
            _remove(name + suffix)

    def flush(self):
        conn = self._open()
        try:
            conn.isolation_level = None
            conn.execute("PRAGMA foreign_keys = OFF")
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(
                "SELECT type, name FROM sqlite_master WHERE type IN ('view', 'table') "
                "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
            ).fetchall()
            for kind, name in rows:
                conn.execute("DROP %s IF EXISTS %s" % (kind.upper(), quote_identifier(name)))
            conn.execute("COMMIT")
            conn.execute("VACUUM")
        except sqlite3.Error as error:
            raise EngineError("cannot empty %s: %s" % (self.describe(), error))
        finally:
            conn.close()

    # -- snapshot -------------------------------------------------------------------------

    def snapshot(self, content=True):
        self.ping()
        conn = self._open(readonly=True)
        conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
        try:
            conn.execute("BEGIN")  # one read transaction: schema and rows from the same moment
            tables = [row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")]
            schema = {}
            contents = {}
            for table in tables:
                schema[table] = self._table_schema(conn, table)
                if content:
                    contents[table] = _table_contents(conn, table,
                                                      sorted(schema[table]["columns"]),
                                                      _unique_key(schema[table]))
            migrations = None
            if MIGRATIONS_TABLE in tables:
                migrations = conn.execute(
                    "SELECT app, name FROM %s" % quote_identifier(MIGRATIONS_TABLE)).fetchall()
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            raise EngineError("cannot read the schema of %s: %s" % (self.describe(), error))
        finally:
            conn.close()
        return make_snapshot(schema, contents, migrations)

    def row_counts(self):
        self.ping()
        conn = self._open(readonly=True)
        try:
            conn.execute("BEGIN")  # every count from the same moment
            tables = [row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")]
            counts = dict((table, conn.execute(
                "SELECT count(*) FROM %s" % quote_identifier(table)).fetchone()[0])
                for table in tables)
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            raise EngineError("cannot count the rows of %s: %s" % (self.describe(), error))
        finally:
            conn.close()
        return counts

    def _table_schema(self, conn, table):
        info = new_table_schema()
        quoted = quote_identifier(table)
        pk = []
        for _cid, name, declared, notnull, default, pk_index in conn.execute(
                "PRAGMA table_info(%s)" % quoted):
            base, args = split_type(declared)
            length = precision = scale = None
            if args and base in ("decimal", "numeric"):
                precision = args[0]
                scale = args[1] if len(args) > 1 else None
            elif args:
                length = args[0]
            info["columns"][name] = column_entry(base, not notnull, default, length, precision,
                                                 scale)
            if pk_index:
                pk.append((pk_index, name))
        info["primary_key"] = [name for _index, name in sorted(pk)]
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                           (table,)).fetchone()[0] or ""
        info["checks"] = [normalize_expression(expr) for expr in _check_clauses(sql)]
        for _seq, index_name, unique, origin, partial in conn.execute(
                "PRAGMA index_list(%s)" % quoted):
            columns = [row[2] for row in conn.execute(
                "PRAGMA index_info(%s)" % quote_identifier(index_name))]
            if origin == "pk":
                continue
            if origin == "u":
                info["unique"].append(columns)
                continue
            entry = {"columns": columns, "unique": bool(unique)}
            if partial:
                index_sql = conn.execute(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
                    (index_name,)).fetchone()[0] or ""
                entry["where"] = normalize_expression(re.split(r"(?i)\bWHERE\b", index_sql,
                                                               maxsplit=1)[-1])
            info["indexes"].append(entry)
            info["names"][index_name] = "%s(%s)" % ("unique index" if unique else "index",
                                                    ",".join(str(c) for c in columns))
        fks = {}
        for fk_id, seq, ref_table, column, ref_column, _on_update, on_delete, _match in \
                conn.execute("PRAGMA foreign_key_list(%s)" % quoted):
            entry = fks.setdefault(fk_id, {"columns": [], "ref_table": ref_table,
                                           "ref_columns": [], "on_delete": on_delete})
            entry["columns"].append((seq, column))
            entry["ref_columns"].append((seq, ref_column))
        for entry in fks.values():
            entry["columns"] = [c for _s, c in sorted(entry["columns"])]
            entry["ref_columns"] = [c for _s, c in sorted(entry["ref_columns"])]
            info["foreign_keys"].append(entry)
        return info

    # -- lock -----------------------------------------------------------------------------

    def lock_path(self, name=DEFAULT_LOCK_NAME):
        suffix = "" if name == DEFAULT_LOCK_NAME else "." + re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        return self.path + ".dbsafe-lock" + suffix

    @contextlib.contextmanager
    def lock(self, name=DEFAULT_LOCK_NAME, timeout=60):
        """An exclusive flock on ``<db>.dbsafe-lock``; the kernel drops it if we die.

        A clean release removes the file (nothing is left beside the database); a holder that
        died leaves it, with its identity in it. Whoever gets the flock checks that the path
        still names the file it locked, since a releaser may have removed it meanwhile.
        """
        path = self.lock_path(name)
        deadline = time.monotonic() + max(0, timeout)
        while True:
            fd = _open_lock_file(path)
            try:
                if _flock_until(fd, path, self.connection, name, timeout, deadline) and \
                        _still_at(fd, path):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # removed by the previous holder's release: lock the new file
        try:
            own = holder_identity(name)
            # A clean release removes the file: a holder still in it died holding the lock.
            previous = _read_holder(fd)
            holder = dict(own, taken_over_from=previous) if previous else own
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(own).encode(), 0)
            try:
                yield holder
            finally:
                _remove(path)  # while still holding the lock (see above)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _open_lock_file(path):
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise EngineError("cannot open the lock file %s: %s" % (path, error.strerror))


def _flock_until(fd, path, connection, name, timeout, deadline):
    """flock ``fd`` exclusively, retrying until ``deadline``; LockTimeout names the holder."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise EngineError("cannot lock %s: %s" % (path, error.strerror))
        if time.monotonic() >= deadline:
            raise LockTimeout(
                lock_timeout_message(connection, name, timeout, _read_holder(fd)),
                holder=_read_holder(fd), lock=name,
            )
        time.sleep(0.1)


def _still_at(fd, path):
    """True when ``path`` is still the file open as ``fd``."""
    try:
        here = os.stat(path)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def _read_holder(fd):
    try:
        return json.loads(os.pread(fd, 65536, 0).decode("utf-8") or "null")
    except (OSError, ValueError):
        return None


def _unique_key(table_schema):
    """The primary key's columns if they order the rows by content alone, else None.

    A primary key is unique under its collations, so no two rows are equal under BINARY, the
    finest one, which ``_table_contents`` orders by; only NULLs can repeat (SQLite lets a rowid
    table's non-INTEGER key hold several), so a key with a nullable column does not qualify
    and its table is hashed without an order.
    """
    key = table_schema["primary_key"]
    if key and all(not table_schema["columns"][column]["nullable"] for column in key):
        return key
    return None


def _table_contents(conn, table, columns, key=None):
    """Row count and content hash of ``table``, its ``columns`` in name order.

    Neither depends on where the rows sit in the file: with a ``key`` (see ``_unique_key``)
    the rows are read in its order and hashed as one stream, else each row is hashed and the
    hashes are summed (``RowHasher``).

    Text is first read with the C decoder (a Python text_factory costs a call per value); a
    table holding text that is not valid UTF-8 fails that and is read again with the
    connection's own surrogateescape decoder, which gives the same str for valid UTF-8 (so the
    same hash) and keeps invalid bytes distinct.
    """
    select = "SELECT %s FROM %s" % (", ".join(quote_identifier(c) for c in columns) or "1",
                                    quote_identifier(table))
    hasher = RowHasher
    if key:
        select += " ORDER BY %s" % ", ".join(quote_identifier(c) + " COLLATE BINARY"
                                             for c in key)
        hasher = KeyOrderedRowHasher
    tolerant = conn.text_factory
    try:
        conn.text_factory = str
        try:
            return _hash_rows(conn, select, hasher())
        except sqlite3.OperationalError:
            conn.text_factory = tolerant
            return _hash_rows(conn, select, hasher())
    finally:
        conn.text_factory = tolerant


def _hash_rows(conn, select, hasher):
    hasher.add_rows(conn.execute(select))
    return {"rows": hasher.rows, "hash": hasher.hexdigest()}


def _check_clauses(sql):
    """The expressions of the CHECK (...) clauses of a CREATE TABLE statement."""
    clauses = []
    tokens = _strip_literals(sql)
    for match in re.finditer(r"(?i)\bCHECK\s*\(", tokens):
        start = match.end() - 1
        depth = 0
        for position in range(start, len(tokens)):
            if tokens[position] == "(":
                depth += 1
            elif tokens[position] == ")":
                depth -= 1
                if depth == 0:
                    clauses.append(sql[start:position + 1])
                    break
    return clauses


def _strip_literals(sql):
    """``sql`` with the insides of quoted strings and identifiers blanked (same length)."""
    out = []
    quote = None
    for char in sql:
        if quote:
            if char == quote:
                quote = None
                out.append(char)
            else:
                out.append(" ")
        elif char in ("'", '"', "`"):
            quote = char
            out.append(char)
        else:
            out.append(char)
    return "".join(out)


def _uri_path(path):
    return os.path.abspath(path).replace("%", "%25").replace("?", "%3f").replace("#", "%23")


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
