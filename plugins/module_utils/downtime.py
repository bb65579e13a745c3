# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service window of a guarded migrate that stops and starts the application itself.

Stop, switch the code, migrate, start: in one module run, so the application is down for the
work and not for the start-up of four Ansible tasks. On any failure the code goes back and the
application starts again (the guarded migrate has restored the database by then), except when
the restore itself failed: the old code must not run on a database in an unknown state.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.dbsafe.django.plugins.module_utils.project import SECRET_KEY_PATTERN
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    CommandError,
    DbsafeError,
    RestoreFailed,
    ServiceError,
)

# The commands, in the order they may run. Each is an argv list; empty means "nothing to do".
STEPS = ("stop", "code", "code_back", "start")


class ServiceWindow:
    """Runs the ``downtime`` option's commands around ``work`` and records what happened."""

    def __init__(self, runner, commands, environment=None, mask=None):
        self.runner = runner
        self.commands = dict((step, list(commands.get(step) or [])) for step in STEPS)
        self.environment = dict((str(k), str(v)) for k, v in (environment or {}).items())
        for key, value in self.environment.items():
            if mask and value and SECRET_KEY_PATTERN.search(key):
                mask(value)
        self.report = {"stopped_at": None, "started_at": None, "seconds": None, "steps": []}

    def describe(self):
        """What the window would run, for check mode: {step: argv}."""
        return dict((step, argv) for step, argv in self.commands.items() if argv)

    def around(self, work):
        """stop -> code -> work() -> start; code_back + start when anything fails."""
        self.report["stopped_at"] = time.time()
        try:
            self._step("stop")
        except ServiceError as error:
            # Half-stopped is worse than running: start again, then say what happened.
            raise self._recover(error, code_changed=False)
        try:
            self._step("code")
            result = work()
        except RestoreFailed as error:
            error.details["downtime"] = self._close()
            error.msg += (" The application was LEFT STOPPED and the new code in place: the "
                          "database is not in a known state.")
            raise
        except DbsafeError as error:
            raise self._recover(error, code_changed=True)
        try:
            self._step("start")
        except ServiceError as error:
            error.msg = ("the migration succeeded and was verified, but the application did not "
                         "start again: %s" % error.msg)
            error.details["downtime"] = self._close()
            raise error
        result["downtime"] = self._close(started=True)
        if self.report["steps"]:  # a command ran: the host changed even with nothing to migrate
            result["changed"] = True
        return result

    def _recover(self, error, code_changed):
        """Put the code back and start again; returns ``error`` with what was done added."""
        notes = []
        for step in (("code_back", "start") if code_changed else ("start",)):
            try:
                if self._step(step):
                    notes.append("%s done" % step.replace("_", " "))
            except ServiceError as step_error:
                notes.append("%s FAILED: %s" % (step.replace("_", " "), step_error.msg))
        started = "start done" in notes
        error.details["downtime"] = self._close(started=started)
        if notes:
            error.msg += " Service: %s." % "; ".join(notes)
        return error

    def _step(self, step):
        argv = self.commands[step]
        if not argv:
            return False
        started = time.time()
        entry = {"step": step, "argv": argv, "rc": None}
        self.report["steps"].append(entry)
        try:
            result = self.runner.run(argv, env=self.environment, check=False)
        except CommandError as error:
            raise ServiceError("the %s command could not run: %s" % (step, error.msg),
                               step=step)
        finally:
            entry["seconds"] = round(time.time() - started, 3)
        entry["rc"] = result.rc
        if result.rc != 0:
            raise ServiceError(
                "the %s command %s failed (rc %s): %s"
                % (step, " ".join(argv), result.rc,
                   (result.stderr or result.stdout or "").strip()[-600:]),
                step=step, rc=result.rc)
        return True

    def _close(self, started=False):
        now = time.time()
        if started:
            self.report["started_at"] = now
        self.report["seconds"] = round(now - self.report["stopped_at"], 3)
        return self.report
