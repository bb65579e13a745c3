# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The trace a guarded migrate leaves while it holds the lock, and the safe takeover of a
lock whose holder died.

The locks die with their holder (PostgreSQL advisory lock and MariaDB GET_LOCK with the
session, SQLite's flock with the process), so a killed run never blocks the next one - but it
may have died half-way through a migration. The guard therefore writes a marker into its
backup directory (``.dbsafe-run-<label>.json``: holder, phase, backup, snapshot before) while
it holds the lock, and removes it when the run ends with the database in a known state. The
next run that takes the lock and finds a marker knows its writer died holding the lock:

- phase ``backup``: nothing was migrated yet; warn and go on;
- phase ``migrating``: compare the database with the snapshot the dead run took before
  migrating. Equal (a transactional engine rolled it back): warn and go on. Different only
  in ways the dead run's own plan explains (its tables' schema, their content, its
  ``django_migrations`` rows): restore its verified backup, prove the database equals that
  snapshot, warn, then go on (plan again from there). Anything else - rows added or changed
  in a table the dead run did not alter, e.g. because the application ran again meanwhile -
  is refused: restoring would lose those writes, so a person decides. Never migrate blindly
  over a possibly half-done state, never restore over somebody else's data;
- the writer, or the project's interpreter it started (``workers``), still runs on this host
  (it lost its lock, e.g. its session was killed, or its module was killed an instant ago and
  the interpreter is still on its way out): wait for it to end, up to the lock timeout, then
  refuse - never a second migrate beside one still running.

SQLite's lock file keeps the JSON of a holder that died (a clean release empties it); the
engine reports it as ``taken_over_from`` and it is warned about here too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import json
import os
import socket
import time

from ansible_collections.dbsafe.django.plugins.module_utils import processes

from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    BackupError,
    DbsafeError,
    PreflightRefused,
    RestoreFailed,
)
from ansible_collections.dbsafe.django.plugins.module_utils.snapshots import (
    diff_snapshots,
    split_harmless,
    summarize,
)

# Differences a migration makes to a table's definition (everything but its data).
_DATA_KINDS = ("rows", "content", "migrations")

PREFIX = ".dbsafe-run-"


def marker_path(directory, label):
    return os.path.join(directory, "%s%s.json" % (PREFIX, label))


def describe(holder):
    holder = holder or {}
    return "host %s, pid %s, since %s" % (holder.get("host", "?"), holder.get("pid", "?"),
                                          holder.get("since", "?"))


def holder_alive(holder, hostname=None, pid_exists=None):
    """True when ``holder`` is a process that still runs on this host. Other hosts: False
    (we hold the lock, so their session is gone; we cannot look at their processes)."""
    hostname = hostname or socket.gethostname()
    pid_exists = pid_exists or processes.pid_exists
    if not holder or holder.get("host") != hostname:
        return False
    pid = holder.get("pid")
    return isinstance(pid, int) and pid != os.getpid() and pid_exists(pid)


def live_workers(record, hostname=None, still_running=None):
    """The processes the run ``record`` started (the project's interpreter) that still run on
    this host; [] for another host's run (we cannot look at its processes)."""
    hostname = hostname or socket.gethostname()
    still_running = still_running or processes.still_running
    if (record.get("holder") or {}).get("host") != hostname:
        return []
    return [worker for worker in record.get("workers") or [] if still_running(worker)]


def still_working(record, hostname=None, pid_exists=None, still_running=None):
    """The pids of the run ``record`` (its module, its interpreter) still running here."""
    pids = [worker["pid"] for worker in live_workers(record, hostname, still_running)]
    holder = record.get("holder")
    if holder_alive(holder, hostname, pid_exists):
        pids.insert(0, holder["pid"])
    return pids


def wait_until_stopped(record, seconds, warn, working=None, clock=time.monotonic,
                       sleep=time.sleep):
    """Wait up to ``seconds`` for the run ``record`` to stop working; returns the pids still
    working then ([]: nothing runs any more). ``working(record)``: still_working."""
    working = working or still_working
    deadline = clock() + max(0, seconds)
    pids = working(record)
    if pids:
        listed = ", ".join(str(pid) for pid in pids)
        warn("the run %s still runs (pid %s) though it no longer holds the migration lock; "
             "waiting up to %d s for it to end" % (describe(record.get("holder")), listed, seconds))
    while pids and clock() < deadline:
        sleep(0.2)
        pids = working(record)
    return pids


def takeover_decision(record, alive):
    """What to do with the marker ``record`` a dead (or not) run left. Pure.

    Returns ``(action, message)``; action is ``continue``, ``restore`` or ``refuse``.
    """
    who = describe(record.get("holder"))
    if alive:
        return "refuse", (
            "refused: the run %s still runs (pid %s) but no longer holds the migration lock "
            "(its database session was lost, or its module died and the project's interpreter "
            "it started goes on); a second migrate beside it could corrupt the database. Nothing "
            "was changed; stop that process, then run again"
            % (who, ", ".join(str(pid) for pid in alive) if isinstance(alive, list) else "?"))
    phase = record.get("phase")
    if phase == "backup":
        return "continue", (
            "lock left by %s (process gone), taken over: it died while taking its backup, "
            "before migrating; nothing was migrated" % who)
    backup = record.get("backup") or {}
    if phase == "migrating" and record.get("online"):
        # The application served (and wrote) during that run and still does: restoring under it
        # would lose its writes. Only "nothing remained" goes on (take_over checks that first).
        return "online", (
            "refused: the online run %s died while migrating, with the application serving; what "
            "it applied is still in the database and its backup %s is NOT restored automatically "
            "(the application's writes since would be lost). Nothing was changed. Either finish "
            "forward - check the state (django_showmigrations, django_schema_drift), remove the "
            "marker %s and deploy again - or stop the application and restore that backup "
            "(dbsafe.django.db_backup state=restore src=%s)"
            % (who, backup.get("path") or "(none)", record.get("path"), backup.get("path") or "-"))
    if phase == "migrating" and backup.get("path") and record.get("snapshot"):
        return "restore", (
            "lock left by %s (process gone), taken over: it died while migrating; its backup "
            "%s was restored and verified equal to the database before that run"
            % (who, backup["path"]))
    return "refuse", (
        "refused: the run %s died in phase %r and left %s without a backup to go back to; the "
        "database may be half-migrated. Check it (django_showmigrations, django_schema_drift), "
        "then remove that file" % (who, phase, record.get("path")))


def _online_run_left(marker, record, engine, message, warn):
    """A dead online run: go on only when nothing of it remained, else refuse (never restore
    under the serving application)."""
    try:
        changed = unexplained_changes(record, engine.snapshot())[0] if record.get("snapshot") else True
    except DbsafeError:
        changed = True
    if changed:
        raise PreflightRefused(message, marker=record["path"], database_changed=False, online=True)
    marker.clear()
    message = ("lock left by %s (process gone), taken over: the online run died while migrating; "
               "nothing of it remained" % describe(record.get("holder")))
    warn(message)
    return message


class RunMarker:
    """The marker file of one database's guarded migrates in a backup directory."""

    def __init__(self, directory, label):
        self.path = marker_path(directory, label)

    def read(self):
        try:
            with open(self.path) as handle:
                record = json.load(handle)
        except (IOError, OSError):
            return None
        except ValueError:
            record = {"phase": "unreadable"}
        record["path"] = self.path
        return record

    def write(self, **record):
        partial = self.path + ".partial"
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(record, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(partial, self.path)
        except (IOError, OSError) as error:  # e.g. the backup disk is full: nothing migrated
            raise BackupError("cannot write the run marker %s: %s; nothing was migrated"
                              % (self.path, error.strerror or error))

    def clear(self):
        for path in (self.path, self.path + ".partial"):
            if os.path.exists(path):
                os.unlink(path)

    @contextlib.contextmanager
    def tracking(self, holder, workers=None):
        """Marks the run from backup to verified end; the marker stays only when the run did
        not end in a known state (a failed restore, or something that is no DbsafeError).
        ``workers``: processes.identity() of the children that may change the database (the
        project's interpreter), so a next run can tell they still run."""
        self._holder = holder
        self._workers = list(workers or [])
        self.write(phase="backup", holder=holder, workers=self._workers)
        try:
            yield self
        except RestoreFailed:
            raise
        except DbsafeError:
            self.clear()
            raise
        self.clear()

    def migrating(self, snapshot, backup, plan=None, online=False):
        """Migrate starts: ``snapshot`` is the database before it, ``backup`` its backup;
        ``online``: the application serves meanwhile (a dead run is never restored over it)."""
        self.write(phase="migrating", holder=self._holder, workers=self._workers, snapshot=snapshot,
                   backup=backup and {"path": backup["path"], "sha256": backup["sha256"]},
                   plan=list(plan or []), online=bool(online))


def unexplained_changes(record, current):
    """The differences between the dead run's snapshot before migrating and ``current`` that
    its own plan cannot explain. Pure.

    Explained: any change to a table's definition (the plan's schema operations), content
    changes in a table whose definition changed (e.g. an added column with a default), and
    ``django_migrations`` rows of the plan's migrations. Unexplained, so a restore could lose
    somebody's writes: row counts that moved, content that changed in a table the run did not
    alter (a data migration does that too - then a person decides), migrations rows outside
    the plan. A table the dead run altered is compared by row count only.
    """
    real = split_harmless(diff_snapshots(record.get("snapshot") or {}, current))[0]
    plan = set(name.lstrip("-") for name in record.get("plan") or [])  # "-": backwards
    altered = set(item["table"] for item in real if item["kind"] not in _DATA_KINDS)
    unexplained = []
    for item in real:
        if item["kind"] == "migrations":
            rows = (item["expected"] or []) + (item["live"] or [])
            if any("%s.%s" % (row[0], row[1]) not in plan for row in rows):
                unexplained.append(item)
        elif item["kind"] == "rows" or (item["kind"] == "content" and item["table"] not in altered):
            unexplained.append(item)
    return real, unexplained


def restore_and_prove(store, path, engine, before, timed=None, restorer=None):
    """Restore the backup ``path`` with ``store`` into ``engine``'s database, then compare the
    database with ``before`` (its snapshot before the run); returns the differences, [] when
    it is proven equal. A failed restore raises its DbsafeError. ``timed(name, function,
    *args)`` runs (and times) the two steps. ``restorer``: the engine of a privileged restore
    login to restore through; the proof reads as ``engine``'s user, as ``before`` was read."""
    timed = timed or (lambda name, function, *args: function(*args))
    # An interruption (Ctrl-C, SIGTERM, a second one) does not abandon a restore half-way.
    with processes.interruptions.in_mode("finish"):
        timed("restore", store.restore, path, restorer or engine)
        return diff_snapshots(before, timed("snapshot_after_restore", engine.snapshot))


def take_over(marker, holder, engine, store, warn, wait=0, working=None, restorer=None):
    """Called with the lock held, before anything else: deal with what a dead run left.

    ``store`` is the BackupStore to restore with; ``warn(message)``; ``wait``: seconds to wait
    for that run's processes to end (the lock timeout); ``working``: see wait_until_stopped;
    ``restorer``: see restore_and_prove.
    """
    previous = (holder or {}).get("taken_over_from")
    if previous and not (marker and marker.read()):
        warn("lock left by %s (process gone), taken over" % describe(previous))
    record = marker.read() if marker else None
    if record is None:
        return None
    action, message = takeover_decision(record, wait_until_stopped(record, wait, warn, working))
    if action == "refuse":
        raise PreflightRefused(message, marker=record["path"], database_changed=False)
    if action == "online":
        return _online_run_left(marker, record, engine, message, warn)
    if action == "restore":
        path = record["backup"]["path"]
        try:
            current = engine.snapshot()
        except DbsafeError as error:
            raise PreflightRefused(
                "refused: the run %s died while migrating and the database cannot be read to "
                "see what it left: %s; the marker %s is kept"
                % (describe(record.get("holder")), error.msg, record["path"]),
                marker=record["path"], database_changed=False)
        changed, unexplained = unexplained_changes(record, current)
        if unexplained:
            raise PreflightRefused(
                "refused: the run %s died while migrating, and the database has changed since "
                "in ways its migrations do not explain (%s). Restoring its backup %s would lose "
                "those changes (did the application run again?). Check the database (e.g. "
                "dbsafe.django.django_schema_drift): if it is fine as it is, delete the marker %s "
                "and run again; if that backup is what you want, restore it first "
                "(dbsafe.django.db_backup state=restore src=%s)"
                % (describe(record.get("holder")), "; ".join(summarize(unexplained, limit=3)),
                   path, record["path"], path),
                marker=record["path"], unexplained=unexplained[:20], database_changed=False)
        if not changed:
            marker.clear()
            message = ("lock left by %s (process gone), taken over: it died while migrating; "
                       "nothing of it remained (the database equals its state before that run)"
                       % describe(record.get("holder")))
            warn(message)
            return message
        try:
            differences = restore_and_prove(store, path, engine, record["snapshot"], restorer=restorer)
        except DbsafeError as error:
            raise RestoreFailed(
                "the run %s died while migrating; restoring its backup %s failed: %s. The "
                "database is in an unknown state; the marker %s is kept"
                % (describe(record.get("holder")), path, error.msg, record["path"]),
                restored=False, marker=record["path"])
        if differences:
            raise RestoreFailed(
                "the run %s died while migrating; its backup %s was restored but the database "
                "does NOT equal its state before that run (%d difference(s), e.g. %s); the "
                "marker %s is kept" % (describe(record.get("holder")), path, len(differences),
                                       differences[0], record["path"]),
                restored=True, proven=False, marker=record["path"])
    marker.clear()
    warn(message)
    return message
