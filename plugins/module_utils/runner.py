# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place external commands run.

Every command is a list (never a shell string), runs with ``LC_ALL=C`` so tools' messages are
parseable, and secrets travel in the environment or on stdin, never in argv. ``run`` goes
through ``module.run_command``. ``pipeline`` exists because a dump must stream straight into
compression and a file: ``run_command`` buffers all output in memory, which a multi-gigabyte
dump cannot afford.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import os
import subprocess
import threading

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
    ``module.run_command``. ``prefix`` (e.g. ``['docker', 'compose', 'exec', '-T', 'web']``)
    is put before commands that must run where the project lives.
    """

    def __init__(self, run_command, env=None):
        self._run_command = run_command
        self.env = dict(BASE_ENV)
        self.env.update(env or {})

    def run(self, argv, env=None, data=None, check=True, cwd=None, binary_data=False):
        """Run ``argv`` to completion and return a CommandResult.

        With ``check`` a non-zero exit raises CommandError carrying stderr.
        """
        argv = [str(a) for a in argv]
        environ = dict(self.env)
        environ.update(env or {})
        try:
            rc, out, err = self._run_command(
                argv,
                environ_update=environ,
                data=data,
                binary_data=binary_data,
                cwd=cwd,
                check_rc=False,
            )
        except (OSError, ValueError) as error:
            raise CommandError("cannot run %s: %s" % (argv[0], error), argv=argv)
        result = CommandResult(argv, rc, out, err)
        if check and rc != 0:
            raise CommandError(
                "%s %s: %s" % (os.path.basename(argv[0]), exit_status(rc), _tail(err or out)),
                argv=argv, rc=rc, stderr=_tail(err, 4000),
            )
        return result

    def session(self, argv, cwd=None):
        """Start ``argv`` as a Session (see there) with this runner's environment."""
        environ = dict(os.environ)
        environ.update(self.env)
        return Session(argv, environ, cwd=cwd)

    def pipeline(self, stages, stdin=None, stdout=None, env=None):
        """Stream data through ``stages`` (a list of argv lists), like ``a | b | c``.

        ``stdin``/``stdout`` are binary file objects (or None for no input / captured output).
        Every stage's exit status is checked, not only the last (a dump tool dying mid-way
        must never look like success because gzip exited 0). Returns the captured stdout
        when ``stdout`` is None.
        """
        environ = dict(os.environ)
        environ.update(self.env)
        environ.update(env or {})
        procs = []
        errors = []
        previous = stdin
        try:
            for index, argv in enumerate(stages):
                argv = [str(a) for a in argv]
                last = index == len(stages) - 1
                try:
                    proc = subprocess.Popen(
                        argv,
                        stdin=previous if previous is not None else subprocess.DEVNULL,
                        stdout=(stdout if (last and stdout is not None) else subprocess.PIPE),
                        stderr=subprocess.PIPE,
                        env=environ,
                        close_fds=True,
                    )
                except OSError as error:
                    raise CommandError("cannot run %s: %s" % (argv[0], error), argv=argv)
                if procs:
                    # Let the previous stage get SIGPIPE if this one exits early.
                    procs[-1][1].stdout.close()
                procs.append((argv, proc))
                previous = proc.stdout
            # stderr must be drained concurrently or a chatty tool can block the pipeline.
            stderr_data = {}
            threads = []
            for argv, proc in procs:
                thread = threading.Thread(target=_drain, args=(proc.stderr, stderr_data, id(proc)))
                thread.daemon = True
                thread.start()
                threads.append(thread)
            captured = None
            if stdout is None:
                captured = procs[-1][1].stdout.read()
            for argv, proc in procs:
                proc.wait()
            for thread in threads:
                thread.join()
            for argv, proc in procs:
                err = stderr_data.get(id(proc), b"").decode("utf-8", "replace")
                if proc.returncode != 0:
                    errors.append((argv, proc.returncode, err))
            if errors:
                argv, rc, err = errors[0]
                raise CommandError(
                    "%s %s: %s" % (os.path.basename(argv[0]), exit_status(rc), _tail(err)),
                    argv=argv, rc=rc, stderr=_tail(err, 4000),
                )
            return captured
        finally:
            for argv, proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


class Session:
    """A process that answers several requests on stdin/stdout, one after another.

    The one exception to "every command through ``run_command``" besides ``pipeline``:
    ``run_command`` waits for the process to end, and the guarded migrate must keep ONE
    launch of the project's interpreter alive across its steps (facts, then lock and backup
    in the module, then migrate), because booting Django is the expensive part. Requests and
    answers are text lines; stderr is drained in the background (a chatty project must not
    block), and the process is killed if it is still there when the session is closed.
    """

    def __init__(self, argv, env, cwd=None):
        self.argv = [str(a) for a in argv]
        self._stderr = collections.deque(maxlen=200)  # the tail is enough for a message
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=env, cwd=cwd, close_fds=True,
                encoding="utf-8", errors="replace", bufsize=1,
            )
        except OSError as error:
            raise CommandError("cannot run %s: %s" % (self.argv[0], error), argv=self.argv)
        self._thread = threading.Thread(target=_collect, args=(self.proc.stderr, self._stderr))
        self._thread.daemon = True
        self._thread.start()

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
                self._thread.join(5)
                break
            lines.append(line)
            if line.startswith(answer_prefix):
                break
        return CommandResult(self.argv, self.proc.poll(), "".join(lines), "".join(self._stderr))

    def close(self, timeout=60):
        """End of input: the process finishes; killed if it does not within ``timeout``."""
        try:
            self.proc.stdin.close()
        except (IOError, OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(5)
        self.proc.stdout.close()
        return self.proc.returncode


def _collect(stream, sink):
    for line in iter(stream.readline, ""):
        sink.append(line)
    stream.close()


def _drain(stream, sink, key):
    sink[key] = stream.read()
    stream.close()


def _tail(text, limit=600):
    text = (text or "").strip()
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text if len(text) <= limit else "..." + text[-limit:]
