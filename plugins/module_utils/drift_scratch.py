# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The drift check's scratch database: its name, its server, its creation and its drop.

It is dropped in every case: after success, after a failure, and when the module is interrupted
(SIGTERM, SIGINT, SIGHUP: the handlers stop the project's interpreter, drop the database, then
the module exits with a failure that says so). Only SIGKILL can leave it behind; its name starts
with the live database's name and contains ``_drift_``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import secrets
import signal
import tempfile
import time

from ansible_collections.dbsafe.django.plugins.module_utils import processes
from ansible_collections.dbsafe.django.plugins.module_utils.connection import Connection
from ansible_collections.dbsafe.django.plugins.module_utils.engines.registry import engine_for
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    DbsafeError,
    EngineError,
)

SCRATCH_MARK = "_drift_"
# Identifier limits: PostgreSQL 63 bytes (names are ASCII here), MySQL/MariaDB 64 characters.
NAME_LIMITS = {"postgresql": 63, "mysql": 64}
INTERRUPT_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")
# How long a drop retries while the server still sees the interpreter's sessions.
DROP_PATIENCE = 15.0

_PERMISSION = re.compile(
    r"permission denied|access denied|must be (?:superuser|owner)|\b1044\b|\b42501\b",
    re.IGNORECASE)


class Interrupted(BaseException):
    """A termination signal arrived; BaseException so that nothing on the way swallows it
    (``run_command`` turns any Exception into fail_json)."""

    def __init__(self, signum):
        BaseException.__init__(self, signum)
        self.signum = signum
        try:
            self.name = signal.Signals(signum).name
        except ValueError:
            self.name = "signal %s" % signum


def new_token():
    return secrets.token_hex(4)


def scratch_name(live_name, token, limit, prefix=None):
    """``<live>_drift_<token>`` (or ``<prefix><token>``) within ``limit`` characters.

    The live name is shortened, never the token: a name that starts with the live name is easy
    to recognise, and privileges granted on ``<live>%`` (MySQL) cover it.
    """
    if prefix:
        return prefix[:max(0, limit - len(token))] + token
    suffix = SCRATCH_MARK + token
    return live_name[:max(0, limit - len(suffix))] + suffix


def sqlite_scratch_path(live_path, token, prefix=None, writable=os.access):
    """The scratch file: ``<prefix><token>.sqlite3``, else beside the live file (where a project
    in a container sees it too), else in the temporary directory."""
    if prefix:
        return os.path.abspath("%s%s.sqlite3" % (prefix, token))
    directory = os.path.dirname(os.path.abspath(live_path))
    if writable(directory, os.W_OK | os.X_OK):
        return os.path.abspath(live_path) + SCRATCH_MARK + token
    return os.path.join(tempfile.gettempdir(), "dbsafe%s%s.sqlite3" % (SCRATCH_MARK, token))


def scratch_server(live, options):
    """The connection (named like the live database) to the server the scratch goes to.

    Every option falls back to the live database's; the password only while the user is the
    live one (another user's password is never guessed).
    """
    options = options or {}
    user = options.get("user") or live.user
    if options.get("password") is not None:
        password = options["password"]
    elif user == live.user:
        password = live.password
    else:
        password = None
    return Connection(live.engine, live.name, host=options.get("host") or live.host,
                      port=options.get("port") or live.port, user=user, password=password,
                      options=live.options, alias=live.alias)


def django_overrides(live, scratch):
    """What to merge into the alias's Django settings to reach the scratch database."""
    overrides = {"NAME": scratch.name}
    if scratch.engine == "sqlite":
        return overrides
    for key, mine, theirs in (("HOST", scratch.host, live.host), ("PORT", scratch.port, live.port),
                              ("USER", scratch.user, live.user),
                              ("PASSWORD", scratch.password, live.password)):
        if mine != theirs:
            overrides[key] = "" if mine is None else str(mine)
    return overrides


def is_permission_error(text):
    return bool(_PERMISSION.search(text or ""))


# -- the scratch database -----------------------------------------------------------------------

class ScratchDatabase:
    """Created on enter, dropped on exit, also when a termination signal arrives meanwhile.

    While it exists, SIGTERM/SIGINT/SIGHUP raise ``Interrupted`` (once); while it is being
    dropped they are only noted, and ``Interrupted`` is raised after the drop.
    """

    def __init__(self, live, runner, options=None, token=None):
        self.live = live
        self.runner = runner
        self.options = dict(options or {})
        token = token or new_token()
        server = scratch_server(live, self.options)
        self.token = token
        if live.engine == "sqlite":
            name = sqlite_scratch_path(live.name, token, self.options.get("name_prefix"))
        else:
            name = scratch_name(live.name, token, NAME_LIMITS[live.engine],
                                self.options.get("name_prefix"))
        self.admin = engine_for(server, runner)
        self.engine = self.admin.for_database(name)
        self.connection = self.engine.connection
        self.name = name
        self.may_exist = False
        self.dropped = False
        self.drop_error = None
        self.interrupted = None
        self._previous = {}
        self._deferring = False

    # -- signals ------------------------------------------------------------------------

    def _on_signal(self, signum, frame):
        if self.interrupted is not None:
            return
        self.interrupted = Interrupted(signum)
        if not self._deferring:
            raise self.interrupted

    def _install(self):
        for name in INTERRUPT_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            try:
                self._previous[signum] = signal.signal(signum, self._on_signal)
            except (ValueError, OSError):  # not the main thread: no handlers, best effort
                pass

    def _restore(self):
        for signum, previous in self._previous.items():
            try:
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            except (ValueError, OSError):
                pass
        self._previous = {}

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self):
        try:
            self._install()
            self._create()
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self._deferring = True  # a signal from here on no longer raises
        finally:
            self._cleanup()
        if exc is None and self.interrupted is not None:
            raise self.interrupted
        return False

    def _cleanup(self):
        self._deferring = True
        try:
            if self.interrupted is not None:
                processes.terminate_children()
            if self.may_exist:
                self._drop()
        finally:
            self._restore()

    def _create(self):
        if self.live.engine == "sqlite":
            directory = os.path.dirname(self.name) or "."
            try:
                fd = os.open(self.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as error:
                raise DbsafeError(
                    "cannot create the scratch sqlite file %s: %s (set scratch_database."
                    "name_prefix to a path prefix in a writable directory, not %s)"
                    % (self.name, error.strerror, directory))
            self.may_exist = True
            os.close(fd)
            return
        if self.admin.database_exists(self.name):
            raise DbsafeError("the scratch database name %r is already taken on %s; run again"
                              % (self.name, self.admin.describe()))
        self.may_exist = True
        try:
            self.admin.create_database(self.name)
        except EngineError as error:
            self.may_exist = self._exists_quietly()
            raise self._create_error(error)

    def _exists_quietly(self):
        try:
            return self.admin.database_exists(self.name)
        except EngineError:
            return True  # cannot tell: try the drop

    def _create_error(self, error):
        text = "%s %s" % (error.msg, error.details.get("stderr") or "")
        server = self.admin.connection
        if not is_permission_error(text):
            return EngineError("cannot create the scratch database %r: %s"
                               % (self.name, error.msg), stderr=error.details.get("stderr"))
        if server.engine == "postgresql":
            need = "ALTER ROLE %s CREATEDB" % (server.user or "<user>")
        else:
            need = "GRANT ALL ON `%s%%`.* TO the user" % self.name[:-len(self.token)]
        return EngineError(
            "user %r may not create a database on %s: the drift check builds the migrations "
            "into a scratch database there (and drops it). Let the user create databases (%s), "
            "or set scratch_database (host, port, user, password, name_prefix) to a server "
            "and user that may. The server said: %s"
            % (server.user, _server(server), need, error.msg),
            stderr=error.details.get("stderr"))

    def _drop(self):
        try:
            if self.live.engine == "postgresql":
                _drop_postgres(self.admin, self.name)
            else:
                self.admin.drop_database(self.name)
        except Exception as error:  # reported, never hiding what happened before
            self.drop_error = getattr(error, "msg", None) or str(error)
            return
        self.may_exist = False
        self.dropped = True

    def overrides(self):
        return django_overrides(self.live, self.connection)

    def public(self):
        info = self.connection.public()
        info.update(dropped=self.dropped, created=self.dropped or self.may_exist)
        if self.drop_error:
            info["drop_error"] = self.drop_error
        return info

    def fate(self):
        """What happened to the scratch database, for messages."""
        if self.drop_error:
            return ("the scratch database %s could NOT be dropped (%s): drop it by hand"
                    % (self._label(), self.drop_error))
        if self.dropped:
            return "the scratch database %s was dropped" % self._label()
        return "no scratch database was left behind"

    def _label(self):
        if self.connection.engine == "sqlite":
            return self.name
        return "%r on %s" % (self.name, _server(self.connection))


def _server(connection):
    return "%s server %s:%s" % (connection.engine, connection.host or "localhost",
                                connection.port or "default port")


def _drop_postgres(engine, name):
    """DROP DATABASE ... WITH (FORCE) (PostgreSQL 13+: ends what is left of our own sessions
    in the scratch database); older servers retry a plain drop until those sessions end."""
    force = True
    deadline = time.monotonic() + DROP_PATIENCE
    while True:
        try:
            engine.drop_database(name, force=force)
            return
        except EngineError as error:
            text = "%s %s" % (error.msg, error.details.get("stderr") or "")
            if force and "syntax error" in text:
                force = False
                continue
            if "being accessed by other users" in text and time.monotonic() < deadline:
                time.sleep(0.3)
                continue
            raise
