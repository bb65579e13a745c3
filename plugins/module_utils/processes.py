# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The low half of the process layer: starting a child, knowing which children run, draining
their stderr, and running work in the background. Only ``runner.py`` starts processes, through
``start`` here (or ``module.run_command``, whose child it hands to ``track``).

Every child of this module process is in ``_LIVE`` while it runs, so an interrupted module
(the drift check's signal handlers) can stop exactly the commands it started.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import io
import signal
import subprocess
import threading
import time

from ansible_collections.dbsafe.django.plugins.module_utils.errors import CommandError

# How long a stopped child gets to end on SIGTERM before SIGKILL.
CHILD_GRACE = 5.0

_LIVE = set()
_LIVE_LOCK = threading.Lock()


def start(argv, env, **popen):
    """``subprocess.Popen(argv)`` (a list, never a shell) with ``env``, no inherited fds;
    tracked until ``untrack``. A child that cannot start is a CommandError."""
    argv = [str(arg) for arg in argv]
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
