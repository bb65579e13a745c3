# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service window: stop, switch the code, (migrate,) start - and put code and service back
when anything fails. The one implementation for one host (``django_migrate_guarded``'s
``downtime`` option runs the whole window around the migration in one task) and for fleets
(``django_service`` takes the other app hosts down and up again around it).

The commands get the project's environment (secrets included) as their process environment,
set here: never on a command line, never through an Ansible task ``environment:``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.dbsafe.django.plugins.module_utils.project import SECRET_KEY_PATTERN
from ansible_collections.dbsafe.django.plugins.module_utils.release_venv import point_link
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    CommandError,
    DbsafeError,
    RestoreFailed,
    ServiceError,
)

# The commands, in the order they may run. Each is an argv list; empty means "nothing to do".
STEPS = ("stop", "code", "code_back", "start", "reload")

# The options that describe an application's service window: the argument spec of
# django_service and the suboptions of django_migrate_guarded's ``downtime``.
SERVICE_OPTIONS = dict(
    services=dict(type="list", elements="str", default=[]),
    stop=dict(type="list", elements="str", default=[]),
    start=dict(type="list", elements="str", default=[]),
    status=dict(type="list", elements="str", default=[]),
    code=dict(type="list", elements="str", default=[]),
    # A graceful reload: the application serves the new code without going down (gunicorn's
    # HUP, systemctl reload); the rolling restart of an online deploy uses it.
    reload=dict(type="list", elements="str", default=[]),
    code_back=dict(type="list", elements="str", default=[]),
    code_after_migrate=dict(type="bool", default=False),
    environment=dict(type="dict", default={}),
    # A virtualenv per release (module_utils/release_venv.py): the code step points the
    # symlink at the release's venv, code_back points it back (empty: removes it).
    release_link=dict(type="path"),
    release_venv=dict(type="path"),
    release_venv_back=dict(type="path"),
)


def service_commands(params):
    """{step: argv} from the options: systemd units (``services``) become systemctl calls,
    otherwise the ``stop``/``start``/``status`` commands are used as given."""
    units = list(params.get("services") or [])
    commands = dict((step, list(params.get(step) or [])) for step in STEPS + ("status",))
    if units:
        commands.update(stop=["systemctl", "stop"] + units, start=["systemctl", "start"] + units,
                        status=["systemctl", "is-active", "--quiet"] + units)
    return commands


class ServiceWindow:
    """Runs a window's commands and records what happened (``report``)."""

    def __init__(self, runner, commands, environment=None, mask=None, code_after_migrate=False,
                 release=None):
        self.runner = runner
        # {"code": venv, "code_back": venv or None} for the symlink ``release["link"]``; none
        # when the release's venv is the one in use already.
        self.release = None
        if release and release.get("link") and release.get("venv") and release.get("venv") != release.get("back"):
            self.release = {"link": release["link"], "code": release["venv"], "code_back": release.get("back") or None}
        self.commands = dict((step, list(commands.get(step) or []))
                             for step in STEPS + ("status",))
        # A rollback: the older code no longer has the migrations to unapply, so it comes
        # after the migration, and a failure leaves the code as it was.
        self.code_after_migrate = bool(code_after_migrate)
        self.environment = dict((str(k), str(v)) for k, v in (environment or {}).items())
        for key, value in self.environment.items():
            if mask and value and SECRET_KEY_PATTERN.search(key):
                mask(value)
        self.report = {"stopped_at": None, "started_at": None, "seconds": None,
                       "left_stopped": False, "steps": []}

    @classmethod
    def from_params(cls, runner, params, mask=None):
        return cls(runner, service_commands(params), params.get("environment"), mask=mask,
                   code_after_migrate=params.get("code_after_migrate"),
                   release=dict(link=params.get("release_link"), venv=params.get("release_venv"),
                                back=params.get("release_venv_back")))

    def describe(self):
        """What the window would run, for check mode: {step: argv}."""
        steps = dict((step, argv) for step, argv in self.commands.items() if argv)
        if self.release:
            steps["release_link"] = self.release
        return steps

    # -- the window around a migration (one host) -------------------------------------------

    def around(self, work):
        """stop -> code -> work() -> start (a rollback: stop -> work() -> code -> start);
        code_back + start when anything fails."""
        self.down()
        try:
            result = work()
        except RestoreFailed as error:
            error.details["downtime"] = self._close()
            self.report["left_stopped"] = True  # on purpose: a fleet's other hosts stay down too
            error.msg += (" The application was LEFT STOPPED: the database is not in a known "
                          "state, no code may run on it.")
            raise
        except DbsafeError as error:
            raise self.recover(error, code_changed=not self.code_after_migrate)
        try:
            self.up()
        except ServiceError as error:
            error.msg = "the migration succeeded and was verified, but " + error.msg
            raise
        result["downtime"] = self.report
        if self.report["steps"]:  # a command ran: the host changed even with nothing to migrate
            result["changed"] = True
        return result

    # -- a rolling restart (an online deploy: the database is migrated already) -------------

    def roll(self, back=False):
        """Code switch, then the graceful reload - the application never goes down - or, without
        a reload command, stop and start (down only for its own restart). On a failure the
        previous code is put back and reloaded (or started) before the error is raised.
        ``back``: the same with the previous code (a host whose rollout failed its health check)."""
        code = "code_back" if back else "code"
        if not self.commands["reload"]:
            self.down(code)
            return self.up()
        try:
            self._step(code)
            self._step("reload")
        except ServiceError as error:
            # Putting the previous code back: nothing to put back when that failed.
            raise self.recover(error, code_changed=not back, start="reload")
        self.report["reloaded_at"] = time.time()
        return self.report

    # -- the halves, also on their own (the other hosts of a fleet) -------------------------

    def down(self, code="code"):
        """Stop, then (unless the code comes after the migration) switch the code - ``code``,
        or ``code_back`` to put the previous code back. A failure starts the application again
        (with the old code) before it is raised."""
        self.report["stopped_at"] = time.time()
        try:
            self._step("stop")
        except ServiceError as error:
            # Half-stopped is worse than running: start again, then say what happened.
            raise self.recover(error, code_changed=False)
        if not self.code_after_migrate:
            try:
                self._step(code)
            except ServiceError as error:
                raise self.recover(error, code_changed=code == "code")
        return self.report

    def up(self, code_step=None):
        """Run ``code_step`` (default: the code when it comes after the migration; "code_back"
        puts the previous code back after a failed deploy), then start. A start that fails is
        raised with what was done."""
        if code_step is None and self.code_after_migrate:
            code_step = "code"
        try:
            if code_step:
                self._step(code_step)
            self._step("start")
        except ServiceError as error:
            error.msg = "the application did not start again: %s" % error.msg
            error.details["downtime"] = self._close()
            raise error
        return self._close(started=True)

    def is_running(self):
        """The status command's answer (rc 0: running); None without a status command."""
        if not self.commands["status"]:
            return None
        try:
            result = self.runner.run(self.commands["status"], env=self.environment, check=False)
        except CommandError:
            return False
        return result.rc == 0

    def recover(self, error, code_changed, start="start"):
        """Put the code back and start again (``start``: or ``reload`` a running application);
        returns ``error`` with what was done added."""
        notes = []
        for step in (("code_back", start) if code_changed else (start,)):
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
        ran = self._command(step)
        if self.release and step in ("code", "code_back"):
            ran = self._switch_release(step) or ran
        return ran

    def _switch_release(self, step):
        """Point the release symlink at this step's venv (code: the new one, code_back: the
        previous one), after the step's command."""
        link, target = self.release["link"], self.release[step]
        entry = {"step": step, "argv": [], "link": link, "target": target, "rc": None}
        self.report["steps"].append(entry)
        try:
            point_link(link, target)
        except (OSError, DbsafeError) as error:
            entry["rc"] = 1
            raise ServiceError("the %s step could not point %s at %s: %s"
                               % (step, link, target or "nothing", getattr(error, "msg", None) or error),
                               step=step)
        entry["rc"] = 0
        entry["seconds"] = 0.0
        return True

    def _command(self, step):
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
        if self.report["stopped_at"] is not None:
            self.report["seconds"] = round(now - self.report["stopped_at"], 3)
        return self.report
