# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The low half of the process layer: starting a child, knowing which children run, draining
their stderr, and running work in the background. Only ``runner.py`` starts processes, through
``start`` here (or ``module.run_command``, whose child it hands to ``track``).

Every child of this module process is in ``_LIVE`` while it runs, so an interrupted module
(the drift check's signal handlers) can stop exactly the commands it started.

No child outlives the module: each starts in its own session (a terminal's Ctrl-C, or the
SIGINT Ansible's worker sends its process group, reaches the module only, which decides what
to stop and when) with a parent-death signal (Linux ``PR_SET_PDEATHSIG``: SIGKILL when the
module ends, even by SIGKILL). ``Interruptions`` turns SIGINT, SIGTERM, SIGHUP and the end of
the task's caller (Ansible's task timeout) into an orderly stop.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import contextlib
import io
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time

from ansible_collections.dbsafe.django.plugins.module_utils.errors import CommandError, DbsafeError

# How long a stopped child gets to end on SIGTERM before SIGKILL.
CHILD_GRACE = 5.0

_LIVE = set()
_LIVE_LOCK = threading.Lock()


def start(argv, env, **popen):
    """``subprocess.Popen(argv)`` (a list, never a shell) with ``env``, no inherited fds, in its
    own session and killed when this process ends (``lifeline``); tracked until ``untrack``.
    A child that cannot start is a CommandError.

    PR_SET_PDEATHSIG fires when the *thread* that started the child ends: every caller here
    waits for its child in the thread that started it (or starts it from the main thread)."""
    argv = [str(arg) for arg in argv]
    popen.setdefault("start_new_session", True)
    popen.setdefault("preexec_fn", lifeline())
    try:
        # Pipelines and long-lived clients need Popen (run_command waits for the end).
        proc = subprocess.Popen(argv, env=env, close_fds=True, **popen)  # pylint: disable=ansible-bad-function
    except OSError as error:
        raise CommandError("cannot run %s: %s" % (argv[0], error), argv=argv)
    track(proc)
    return proc


def track(proc):
    """Count ``proc`` (a Popen) among the running children."""
    with _LIVE_LOCK:
        _LIVE.add(proc)


def untrack(proc):
    with _LIVE_LOCK:
        _LIVE.discard(proc)


def running():
    """The tracked children that have not ended (the ended ones are forgotten)."""
    with _LIVE_LOCK:
        for proc in [proc for proc in _LIVE if proc.poll() is not None]:
            _LIVE.discard(proc)
        return sorted(_LIVE, key=lambda proc: proc.pid)


def terminate_children(grace=CHILD_GRACE):
    """Stop every child still running: SIGTERM, then SIGKILL after ``grace`` seconds. An
    interrupted ``run_command`` leaves its child running (e.g. the project's interpreter,
    holding a session on the drift check's scratch database)."""
    procs = running()
    for proc in procs:
        _signal(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while procs and time.monotonic() < deadline:
        procs = [proc for proc in procs if proc.poll() is None]
        if procs:
            time.sleep(0.05)
    for proc in procs:
        _signal(proc, signal.SIGKILL)
        proc.wait()
    for proc in running():
        untrack(proc)


def kill_group(proc):
    """SIGKILL ``proc`` and its process group (a ``command_prefix`` wrapper and what it runs);
    the caller waits for it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:  # ended meanwhile, or not a group leader (started elsewhere)
        _signal(proc, signal.SIGKILL)


# -- the child's lifeline: the parent-death signal ------------------------------------------

_PR_SET_PDEATHSIG = 1
_PRCTL = []  # [the libc prctl function, or None where there is none]


def _prctl():
    if not _PRCTL:
        function = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes
                function = ctypes.CDLL(None, use_errno=True).prctl
            except (ImportError, OSError, AttributeError):  # no ctypes or no prctl: no lifeline
                function = None
        _PRCTL.append(function)
    return _PRCTL[0]


def lifeline():
    """A ``preexec_fn`` that arms SIGKILL for the child when this process ends (Linux), or None
    where the platform has no parent-death signal. Loaded before the fork: the child only
    calls it."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def arm():
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the module died between the fork and the prctl
            os._exit(1)
    return arm


# -- a process's identity: its pid and its start time (a reused pid is another process) ------

def identity(pid):
    """{"pid", "started"} of a running process of this host (started: clock ticks since boot,
    from /proc; None where there is no /proc)."""
    return {"pid": pid, "started": _start_ticks(pid)}


def _start_ticks(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            # "pid (comm) state ppid ...": comm may hold spaces and ")"; starttime is field 22.
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (IOError, OSError, IndexError, ValueError):
        return None


def still_running(process):
    """True while the process ``identity()`` described runs (not a zombie, not a new process
    with the same pid)."""
    pid = (process or {}).get("pid")
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid() or not pid_exists(pid):
        return False
    started = process.get("started")
    now = _start_ticks(pid)
    return started is None or now is None or started == now


def pid_exists(pid):
    """True while a process ``pid`` runs on this host (anyone's)."""
    try:
        os.kill(pid, 0)
    except OSError as error:
        if error.errno != 1:  # EPERM: it exists, it is someone else's
            return False
    # Killed, not reaped yet (a zombie, e.g. under a container's init): it runs no more.
    return not _is_zombie(pid)


def _is_zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (IOError, OSError, IndexError):
        return False


def _signal(proc, signum):
    try:
        proc.send_signal(signum)
    except OSError:  # ended meanwhile
        pass


class StderrCollector:
    """Drains a child's stderr (text or binary) in a thread, so a chatty child never blocks
    on a full pipe. ``limit``: keep only the last lines (the tail is enough for a message)."""

    def __init__(self, stream, limit=None):
        self._lines = collections.deque(maxlen=limit)
        self._binary = not isinstance(stream, io.TextIOBase)
        self._thread = threading.Thread(target=self._drain, args=(stream,))
        self._thread.daemon = True
        self._thread.start()

    def _drain(self, stream):
        for line in stream:
            self._lines.append(line)
        stream.close()

    def join(self, wait=None):
        self._thread.join(wait)
        return self

    def text(self):
        """What was read so far, as text."""
        lines = list(self._lines)
        if self._binary:
            return b"".join(lines).decode("utf-8", "replace")
        return "".join(lines)


class Background:
    """Runs ``target(*args)`` in a thread, keeping its result or exception for ``join``."""

    def __init__(self, target, *args):
        self.result = None
        self.error = None
        self._thread = threading.Thread(target=self._run, args=(target, args))
        self._thread.daemon = True
        self._thread.start()

    def _run(self, target, args):
        try:
            self.result = target(*args)
        except BaseException as error:  # noqa: B902 - handed to the joining thread
            self.error = error

    def join(self, timeout=None):
        self._thread.join(timeout)
        return self


# -- interruptions: SIGINT, SIGTERM, SIGHUP, the task's caller gone ----------------------------

SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}
CALLER_GONE = ("its caller went away (nobody reads the module's output any more: Ansible's "
               "task timeout expired, or the controller stopped)")


class Interrupted(DbsafeError):
    """The module was told to stop: a signal, or its caller went away."""


class Interruptions:
    """What asked this module to stop, and what it does about it at once.

    ``mode`` says what the work is doing when an interruption arrives:

    - ``raise``: nothing was changed (before the lock, or waiting for it): the first
      interruption runs the ``stopping`` callbacks (the interpreter need not finish its
      answer) and raises Interrupted where the main thread is, like Ctrl-C would;
    - ``stop``: the work may change the database: the ``stopping`` callbacks run (the guard
      kills the project's interpreter, so a migrate in flight ends and is restored) and the work
      calls ``check`` between its steps;
    - ``finish``: a restore runs: the interruption is only recorded, the restore goes on.

    Until ``install`` (other modules, tests) the signals keep their usual handlers.
    """

    def __init__(self):
        self.causes = []
        self.during_finish = []  # the interruptions that arrived while a restore ran
        self.mode = "raise"
        self._stoppers = []
        self._caller_gone = []

    def install(self, watch_caller=True):
        """Handle SIGINT, SIGTERM, SIGHUP; with ``watch_caller`` also the end of whoever reads
        this process's stdout (Ansible does not signal a module whose task timed out)."""
        for signum in SIGNAL_NAMES:
            signal.signal(signum, self._on_signal)
        if watch_caller:
            watch_reader(1, self._caller_went_away)

    def _caller_went_away(self):
        # From the watching thread: the main thread handles it, as it would a signal.
        self._caller_gone.append(True)
        os.kill(os.getpid(), signal.SIGHUP)

    def _on_signal(self, signum, frame):
        if signum == signal.SIGHUP and self._caller_gone and CALLER_GONE not in self.causes:
            self.interrupt(CALLER_GONE)
        else:
            self.interrupt(SIGNAL_NAMES.get(signum, "signal %d" % signum))

    def interrupt(self, cause):
        """Called in the main thread (a signal handler's place)."""
        self.causes.append(cause)
        if self.mode == "finish":
            self.during_finish.append(cause)
            return
        if len(self.causes) > 1:  # already stopping
            return
        for stop in list(self._stoppers):
            stop()
        if self.mode == "raise":
            raise Interrupted("%s; the database was not changed" % self.describe(),
                              interrupted=list(self.causes), database_changed=False)

    def describe(self):
        """'interrupted by SIGTERM' / 'interrupted: its caller went away (...)'."""
        first = self.causes[0] if self.causes else None
        if first is None:
            return ""
        return ("interrupted: %s" % first) if first == CALLER_GONE else "interrupted by %s" % first

    def restore_note(self):
        """What a message adds when interruptions arrived during a restore ('' when none)."""
        if not self.during_finish:
            return ""
        counted = []
        for cause in self.during_finish:
            if cause not in [name for name, _count in counted]:
                counted.append((cause, self.during_finish.count(cause)))
        return (" (%s arrived during the restore: the restore was not abandoned, it went on to "
                "its end)" % ", ".join(name if count == 1 else "%s (%d times)" % (name, count)
                                       for name, count in counted))

    def annotate(self, error, stopped):
        """An interrupted run's failure says so first (``stopped``: what the module stopped),
        then its own message (restored and proven, refused, failed...) and the restore's note."""
        if not self.causes or isinstance(error, Interrupted):
            return
        error.msg = "%s (%s): %s%s" % (self.describe(), stopped, error.msg, self.restore_note())
        error.args = (error.msg,)
        error.details["interrupted"] = list(self.causes)

    def check(self, state):
        """Raise Interrupted if a stop was asked; ``state``: the database's state now."""
        if self.causes:
            raise Interrupted("%s; %s" % (self.describe(), state),
                              interrupted=list(self.causes))

    @contextlib.contextmanager
    def in_mode(self, mode):
        previous, self.mode = self.mode, mode
        try:
            yield self
        finally:
            self.mode = previous

    @contextlib.contextmanager
    def stopping(self, stop):
        """``stop()`` runs on the first interruption in mode ``stop`` while this block runs;
        at once if one already came."""
        self._stoppers.append(stop)
        try:
            if self.causes and self.mode == "stop":
                stop()
            yield
        finally:
            self._stoppers.remove(stop)


# The module's one set of interruptions (installed by the modules that handle them).
interruptions = Interruptions()


def watch_reader(fd, gone):
    """Call ``gone()`` (from a daemon thread) once nobody reads ``fd`` any more: a pipe or a
    socket whose reading end closed. Nothing for a file or a terminal, or without poll()."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return None
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)) or not hasattr(select, "poll"):
        return None

    def watch():
        poller = select.poll()
        # No POLLOUT asked: poll() returns only when the reader is gone (POLLERR on a pipe's
        # writing end, POLLHUP on a socket).
        poller.register(fd, select.POLLERR | select.POLLHUP)
        while True:
            try:
                events = poller.poll()
            except (OSError, ValueError):
                return
            for _fd, event in events:
                if event & select.POLLNVAL:  # fd closed by this process: it is ending
                    return
                if event & (select.POLLERR | select.POLLHUP):
                    gone()
                    return

    thread = threading.Thread(target=watch, name="dbsafe-caller-watch")
    thread.daemon = True
    thread.start()
    return thread
