# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The process layer: the one place external commands start.

Every command is a list (never a shell string), runs with ``LC_ALL=C`` so tools' messages are
parseable, and secrets travel in the environment or on stdin, never in argv. ``run`` goes
through ``module.run_command``. The rest start their children through ``processes.start``:
``pipeline`` because a dump must stream straight into compression and a file (``run_command``
buffers all output in memory, which a multi-gigabyte dump cannot afford), ``session`` and
``spawn`` because ``run_command`` waits for the end of a process that must stay alive.
Every child is tracked while it runs (``processes.terminate_children``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import inspect
import os
import subprocess

from ansible_collections.dbsafe.django.plugins.module_utils import processes
from ansible_collections.dbsafe.django.plugins.module_utils.errors import CommandError

# The signals a killed tool usually died of, named in messages ("killed by SIGKILL").
_SIGNAL_NAMES = {1: "SIGHUP", 2: "SIGINT", 6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV",
                 13: "SIGPIPE", 15: "SIGTERM"}


def exit_status(rc):
    """'exited with 3', or for a negative rc 'was killed by signal 9 (SIGKILL)'."""
    if rc is not None and rc < 0:
        return "was killed by signal %d (%s)" % (-rc, _SIGNAL_NAMES.get(-rc, "signal"))
    return "exited with %s" % rc


BASE_ENV = {"LC_ALL": "C", "LANG": "C"}


class CommandResult:
    def __init__(self, argv, rc, stdout, stderr):
        self.argv = argv
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr

    @property
    def ok(self):
        return self.rc == 0


class Runner:
    """Runs commands for one module call.

    ``run_command`` has the signature of ``AnsibleModule.run_command``; pass
    ``module.run_command``. ``env`` is added to every command's environment (on top of
    ``LC_ALL=C``). ``db_command_prefix``: see there.
    """

    def __init__(self, run_command, env=None, db_command_prefix=None):
        self._run_command = run_command
        # The words the database tools run behind (the option db_command_prefix): every
        # engine made with this runner reads it (engines/base.py Engine.tool_argv).
        self.db_command_prefix = [str(word) for word in db_command_prefix or []]
        # AnsibleModule.run_command hands over its child, so an interrupted module can stop
        # it; a stand-in without that argument (tests) runs its commands untracked.
        self._hands_over_child = _has_parameter(run_command, "before_communicate_callback")
        self.env = dict(BASE_ENV)
        self.env.update(env or {})

    def _environ(self, env=None):
        """The environment of a child started here rather than by ``run_command``."""
        environ = dict(os.environ)
        environ.update(self.env)
        environ.update(env or {})
        return environ

    def run(self, argv, env=None, data=None, check=True, cwd=None, binary_data=False):
        """Run ``argv`` to completion and return a CommandResult.

        With ``check`` a non-zero exit raises CommandError carrying stderr.
        """
        argv = [str(a) for a in argv]
        environ = dict(self.env)
        environ.update(env or {})
        started = []

        def track(proc):
            processes.track(proc)
            started.append(proc)

        extra = {"before_communicate_callback": track} if self._hands_over_child else {}

        try:
            rc, out, err = self._run_command(
                argv,
                environ_update=environ,
                data=data,
                binary_data=binary_data,
                cwd=cwd,
                check_rc=False,
                **extra
            )
        except (OSError, ValueError) as error:
            raise CommandError("cannot run %s: %s" % (argv[0], error), argv=argv)
        # Only once it returned: a child left behind by an interruption (a signal raised
        # inside run_command) stays tracked, for processes.terminate_children.
        for proc in started:
            processes.untrack(proc)
        result = CommandResult(argv, rc, out, err)
        if check and rc != 0:
            raise CommandError(
                _failure(argv, rc, _tail(err or out)),
                argv=argv, rc=rc, stderr=_tail(err, 4000),
                status="%s %s" % (os.path.basename(argv[0]), exit_status(rc)),
            )
        return result

    def session(self, argv, cwd=None):
        """Start ``argv`` as a Session (see there) with this runner's environment."""
        return Session(argv, self._environ(), cwd=cwd)

    def spawn(self, argv, env=None):
        """Start a long-lived interactive client (the engines' lock holders): binary pipes
        on stdin, stdout and stderr; the caller drains stderr and ends the process."""
        return processes.start(argv, self._environ(env), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def pipeline(self, stages, stdin=None, stdout=None, env=None):
        """Stream data through ``stages`` (a list of argv lists), like ``a | b | c``.

        ``stdin``/``stdout`` are binary file objects (or None for no input / captured output).
        Every stage's exit status is checked, not only the last (a dump tool dying mid-way
        must never look like success because gzip exited 0). Returns the captured stdout
        when ``stdout`` is None.
        """
        environ = self._environ(env)
        procs = []
        previous = stdin
        try:
            for index, argv in enumerate(stages):
                last = index == len(stages) - 1
                proc = processes.start(
                    argv, environ,
                    stdin=previous if previous is not None else subprocess.DEVNULL,
                    stdout=(stdout if (last and stdout is not None) else subprocess.PIPE),
                    stderr=subprocess.PIPE)
                if procs:
                    # Let the previous stage get SIGPIPE if this one exits early.
                    procs[-1][1].stdout.close()
                # stderr is drained concurrently or a chatty tool can block the pipeline.
                procs.append(([str(a) for a in argv], proc,
                              processes.StderrCollector(proc.stderr)))
                previous = proc.stdout
            captured = None
            if stdout is None:
                captured = procs[-1][1].stdout.read()
            for argv, proc, errors in procs:
                proc.wait()
            for argv, proc, errors in procs:
                if proc.returncode != 0:
                    err = errors.join().text()
                    raise CommandError(
                        _failure(argv, proc.returncode, _tail(err)),
                        argv=argv, rc=proc.returncode, stderr=_tail(err, 4000),
                        status="%s %s" % (os.path.basename(argv[0]),
                                          exit_status(proc.returncode)),
                    )
            return captured
        finally:
            for argv, proc, errors in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                processes.untrack(proc)
                errors.join()

    def stream(self, argv, read_fd, write_fd):
        """``argv`` from the fd ``read_fd`` (None: no input) to the fd ``write_fd``, both
        closed afterwards: a compressor, or a reader of an archive fed through a pipe."""
        with os.fdopen(write_fd, "wb") as target:
            if read_fd is None:
                self.pipeline([argv], stdout=target)
                return
            with os.fdopen(read_fd, "rb") as source:
                self.pipeline([argv], stdin=source, stdout=target)

    def read_through(self, argv, read_fd=None):
        """``argv`` [< the fd ``read_fd``] > /dev/null: a check that only needs its status."""
        self.stream(argv, read_fd, os.open(os.devnull, os.O_WRONLY))


class Session:
    """A process that answers several requests on stdin/stdout, one after another.

    ``run_command`` waits for the process to end, and the guarded migrate must keep ONE
    launch of the project's interpreter alive across its steps (facts, then lock and backup
    in the module, then migrate), because booting Django is the expensive part. Requests and
    answers are text lines; stderr is drained in the background (a chatty project must not
    block), and the process is killed if it is still there when the session is closed.
    """

    def __init__(self, argv, env, cwd=None):
        self.argv = [str(a) for a in argv]
        self.proc = processes.start(
            self.argv, env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=cwd, encoding="utf-8", errors="replace", bufsize=1)
        self._stderr = processes.StderrCollector(self.proc.stderr, limit=200)

    def ask(self, data, answer_prefix):
        """Send ``data``; read stdout up to the first line starting with ``answer_prefix``.

        Returns a CommandResult whose ``stdout`` is everything read for this request and whose
        ``rc`` is None while the process still runs (it ended without an answer otherwise).
        """
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (IOError, OSError, ValueError):
            pass  # it died: what it printed (or did not) says why
        lines = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                self._stderr.join(5)
                break
            lines.append(line)
            if line.startswith(answer_prefix):
                break
        return CommandResult(self.argv, self.proc.poll(), "".join(lines), self._stderr.text())

    def end_input(self):
        """No more requests: the process starts to finish, and the caller goes on meanwhile
        (the service window starts the application while the interpreter exits)."""
        try:
            self.proc.stdin.close()
        except (IOError, OSError, ValueError):
            pass

    def close(self, timeout=60):
        """End of input: the process finishes; killed if it does not within ``timeout``."""
        self.end_input()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        processes.untrack(self.proc)
        self._stderr.join(5)
        self.proc.stdout.close()
        return self.proc.returncode


def _has_parameter(function, name):
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _failure(argv, rc, tail):
    """'zstd was killed by signal 9 (SIGKILL)[: what it printed last]'."""
    status = "%s %s" % (os.path.basename(argv[0]), exit_status(rc))
    return "%s: %s" % (status, tail) if tail else status


def _tail(text, limit=600):
    text = (text or "").strip()
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text if len(text) <= limit else "..." + text[-limit:]
