# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How a module reaches a Django project: its interpreter, settings, environment and prefix.

Every call into the project goes through ``DjangoProject.call``: one launch of the project's
interpreter running ``introspect.py`` (sent on stdin with the request, so neither the code nor
the environment's secrets appear in argv) and one JSON answer back.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import json
import os
import pkgutil
import re

from ansible_collections.dbsafe.django.plugins.module_utils import introspect
from ansible_collections.dbsafe.django.plugins.module_utils.connection import Connection
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    CommandError,
    ProjectError,
)
from ansible_collections.dbsafe.django.plugins.module_utils.runner import exit_status

# The options every module that works on a project takes (documented in the doc fragment
# dbsafe.django.project).
PROJECT_ARGUMENT_SPEC = dict(
    project_path=dict(type="str", required=True),
    python=dict(type="str"),
    virtualenv=dict(type="str"),
    settings=dict(type="str"),
    database=dict(type="str", default="default"),
    environment=dict(type="dict", default={}),
    command_prefix=dict(type="list", elements="str", default=[]),
    db_command_prefix=dict(type="list", elements="str", default=[]),
    boot_timeout=dict(type="int", default=300),
)
PROJECT_MUTUALLY_EXCLUSIVE = [("python", "virtualenv")]

# Environment keys whose values are secrets: masked in every output of the module.
SECRET_KEY_PATTERN = re.compile(r"PASS|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)

# Read the request line, then run the rest of stdin as introspect.py. Keeps argv short and free
# of secrets, and works through `docker compose exec -T` as well as locally.
# In a session (see DjangoProject.session) stdin stays open for the next requests, so the
# request says how many characters of source follow.
LOADER = (
    "import json,sys;"
    "r=json.loads(sys.stdin.readline());"
    "n=r.get('source_chars');"
    "g={'__name__':'__dbsafe__','REQUEST':r};"
    "exec(compile(sys.stdin.read(n) if n else sys.stdin.read(),'dbsafe_introspect.py','exec'),g)"
)


def _introspect_source():
    data = pkgutil.get_data(
        "ansible_collections.dbsafe.django.plugins.module_utils", "introspect.py"
    )
    if data is None:  # a loader without get_data: fall back to the file beside us
        with open(introspect.__file__, "rb") as handle:
            data = handle.read()
    return data.decode("utf-8")


class DjangoProject:
    def __init__(self, runner, project_path, python=None, virtualenv=None, settings=None,
                 environment=None, command_prefix=None, mask=None, boot_timeout=300):
        self.runner = runner
        self.project_path = project_path
        self.settings = settings
        self.environment = dict((str(k), str(v)) for k, v in (environment or {}).items())
        self.command_prefix = list(command_prefix or [])
        # Seconds booting the project may take (introspect's BootWatchdog); 0: no limit.
        self.boot_timeout = boot_timeout
        self.interpreter = self._interpreter(python, virtualenv)
        # ``mask`` (e.g. module.no_log_values.add) hides secrets from every module output.
        self._mask = mask or (lambda value: None)
        for key, value in self.environment.items():
            if value and SECRET_KEY_PATTERN.search(key):
                self._mask(value)
        self.launches = 0

    @classmethod
    def from_module(cls, module, runner):
        params = module.params
        return cls(
            runner,
            params["project_path"],
            python=params.get("python"),
            virtualenv=params.get("virtualenv"),
            settings=params.get("settings"),
            environment=params.get("environment"),
            command_prefix=params.get("command_prefix"),
            mask=module.no_log_values.add,
            boot_timeout=params.get("boot_timeout", 300),
        )

    def _interpreter(self, python, virtualenv):
        if python:
            return python
        if virtualenv:
            return os.path.join(virtualenv, "bin", "python")
        return "python3"

    def check_local(self):
        """Fail early and clearly on paths we can see (not inside a command_prefix container)."""
        if self.command_prefix:
            return
        if not os.path.isdir(self.project_path):
            raise ProjectError("project_path %s does not exist or is not a directory"
                               % self.project_path)
        # Without manage.py the project boots the fallback way, which needs the settings.
        if not os.path.isfile(os.path.join(self.project_path, "manage.py")) and not (
                self.settings or self.environment.get("DJANGO_SETTINGS_MODULE")):
            raise ProjectError("no manage.py in project_path %s (and no settings given): point "
                               "project_path at the directory of manage.py, or set settings"
                               % self.project_path)
        if os.sep in self.interpreter and not os.access(self.interpreter, os.X_OK):
            raise ProjectError(
                "interpreter %s not found or not executable (set python: or virtualenv:)"
                % self.interpreter
            )

    def _request(self, request):
        request = dict(request)
        request.update(
            project_path=self.project_path,
            settings=self.settings,
            environment=self.environment,
            boot_timeout=self.boot_timeout,
        )
        return request

    def _argv(self):
        return self.command_prefix + [self.interpreter, "-c", LOADER]

    def call(self, request):
        """One launch of the project's interpreter; returns introspect's ``result`` dict."""
        self.check_local()
        data = json.dumps(self._request(request)) + "\n" + _introspect_source()
        self.launches += 1
        try:
            result = self.runner.run(self._argv(), data=data, check=False, cwd=self._cwd())
        except CommandError as error:
            raise ProjectError(
                "cannot start the project's interpreter %s: %s" % (self.interpreter, error.msg)
            )
        return self._answer(result)

    @contextlib.contextmanager
    def session(self):
        """ONE launch of the project's interpreter for several requests, in order: the guarded
        migrate asks for the facts, takes its lock and backup, then asks it to migrate (and
        for the facts again if the state moved while it waited). Django boots once. Between
        requests the process has closed its database connections and waits on stdin; it ends
        when the session is closed (or killed if it does not). Yields a ProjectSession."""
        self.check_local()
        try:
            process = self.runner.session(self._argv(), cwd=self._cwd())
        except CommandError as error:
            raise ProjectError(
                "cannot start the project's interpreter %s: %s" % (self.interpreter, error.msg)
            )
        self.launches += 1
        try:
            yield ProjectSession(self, process)
        finally:
            process.close()

    def _answer(self, result):
        """introspect's ``result`` from a CommandResult, or a ProjectError saying why not."""
        answer = _parse_answer(result.stdout)
        if answer is None:
            said = _tail(result.stderr or result.stdout)
            raise ProjectError(
                "the project's interpreter %s %s without an answer%s"
                % (self.interpreter, exit_status(result.rc), (": " + said) if said else " (it printed nothing)"),
                rc=result.rc,
            )
        if not answer["ok"]:
            message = answer["message"]
            details = answer.get("details", {})
            if answer["kind"] == "database_unreachable":
                where = Connection.from_django(details["database"]).describe()
                message = "cannot connect to %s: %s" % (where, message)
            raise ProjectError(
                message,
                kind=answer["kind"],
                traceback=answer.get("traceback"),
                **details
            )
        database = answer["result"].get("database") or {}
        if database.get("PASSWORD"):
            self._mask(database["PASSWORD"])
        return answer["result"]

    def _cwd(self):
        if not self.command_prefix and os.path.isdir(self.project_path):
            return self.project_path
        return None

    def facts(self, database="default", apps=None, target=None, sql=False, pending=True,
              checks=True, track_checksums=True):
        return self.call(facts_request(database, apps, target, sql, pending, checks,
                                       track_checksums))

    def migrate(self, database="default", target=None, fake=False, fake_initial=False,
                skip_checks=False, track_checksums=True, allow_edited=False, db_timeouts=None):
        """Run migrate in the project and gather the facts after it, in one launch.

        Returns the introspect result with ``migrate`` ({steps, error, lock_waits, output}) and
        ``facts`` (None with ``facts_error`` when they could not be read afterwards).
        """
        return self.call(migrate_request(database, target, fake, fake_initial, skip_checks,
                                         track_checksums, allow_edited, db_timeouts))

    def migrate_to_set(self, applied, database="default", overrides=None):
        """Migrate ANOTHER, empty database to exactly the applied set ``applied``, in one launch.

        ``applied`` is a list of "app.name" (another database's django_migrations rows);
        ``overrides`` ({"NAME": ..., "HOST": ..., ...}) is merged into the alias's settings
        before anything connects, which is how the other database is reached (for SQLite NAME
        is the file). Returns the introspect result with ``migrate_to_set``
        ({plan, applied_rows}); ``database`` describes the other database.
        """
        request = {"action": "migrate_to_set", "database": database,
                   "applied": list(applied), "database_overrides": dict(overrides or {}),
                   "pending": False}
        return self.call(request)

    @staticmethod
    def connection(result):
        """The Connection of the database the result was gathered for (password included)."""
        return Connection.from_django(result["database"])


class ProjectSession:
    """The requests of one DjangoProject.session: ``facts`` and ``migrate`` answer like
    DjangoProject's, without a new launch."""

    def __init__(self, project, process):
        self.project = project
        self.process = process
        self.asked = 0

    def call(self, request):
        request = dict(self.project._request(request), session=True)
        if self.asked == 0:  # the first request brings introspect.py along
            source = _introspect_source()
            request["source_chars"] = len(source)
            data = json.dumps(request) + "\n" + source
        else:
            data = json.dumps(request) + "\n"
        self.asked += 1
        return self.project._answer(self.process.ask(data, introspect.RESULT_MARKER))

    def finish(self):
        """The last request was answered: the interpreter may exit while the module goes on."""
        self.process.end_input()

    def warm(self):
        """Load Django's framework now, the project later: the next request's boot is then
        a fraction of a cold one (see introspect.warm). Must be the session's first request."""
        return self.call({"action": "warm"})

    def facts(self, database="default", apps=None, target=None, sql=False, pending=True,
              checks=True, track_checksums=True):
        return self.call(facts_request(database, apps, target, sql, pending, checks,
                                       track_checksums))

    def migrate(self, database="default", target=None, fake=False, fake_initial=False,
                skip_checks=False, track_checksums=True, allow_edited=False, db_timeouts=None,
                targets=None):
        return self.call(migrate_request(database, target, fake, fake_initial, skip_checks,
                                         track_checksums, allow_edited, db_timeouts, targets))

    def undo(self, completed, partial=None, database="default"):
        """After a failed online migrate: Django's reverse operations undo ``partial`` (the
        failed migration's kept operations, {migration, count}) and then ``completed`` (the
        migrations the run applied), newest first. The answer's ``undo`` has ``undone``,
        ``error`` (None when it succeeded) and ``applied_rows``."""
        return self.call({"action": "undo", "database": database, "pending": False,
                          "completed": list(completed), "partial": partial})

    def command(self, name, args=(), database="default"):
        """``flush`` or ``loaddata`` in the project; the answer's ``command`` has ``error``
        (None when it succeeded) and ``output``."""
        return self.call({"action": "command", "command": name, "args": list(args),
                          "database": database, "pending": False})


def facts_request(database="default", apps=None, target=None, sql=False, pending=True,
                  checks=True, track_checksums=True):
    """``checks``: run the system checks manage.py migrate runs (their messages in the facts);
    ``track_checksums``: compare the applied migrations with their recorded checksums (false:
    our table is not read)."""
    request = {"action": "facts", "database": database, "apps": apps or [],
               "sql": sql, "pending": pending, "checks": checks,
               "track_checksums": track_checksums}
    if target:
        request["target"] = target
    return request


def migrate_request(database="default", target=None, fake=False, fake_initial=False,
                    skip_checks=False, track_checksums=True, allow_edited=False, db_timeouts=None,
                    targets=None):
    """``skip_checks``: like manage.py migrate --skip-checks (Django's checks gate otherwise);
    ``track_checksums``: record the applied migrations' checksums afterwards (false: our table
    is neither read nor written); ``allow_edited``: record edited ones' new checksums too.
    ``db_timeouts``: {lock_wait, retries, statement} of the migrating connection (see
    introspect.migrate); None: the server's own. ``targets``: several {app, migration}, migrated
    one after the other (a stage of an online deploy), instead of ``target``."""
    request = {"action": "migrate", "database": database, "fake": fake,
               "fake_initial": fake_initial, "pending": True, "skip_checks": skip_checks,
               "track_checksums": track_checksums, "allow_edited": allow_edited}
    if db_timeouts:
        request["db_timeouts"] = db_timeouts
    if target:
        request["target"] = target
    if targets:
        request["targets"] = list(targets)
    return request


def _parse_answer(stdout):
    for line in reversed((stdout or "").splitlines()):
        if line.startswith(introspect.RESULT_MARKER):
            return json.loads(line[len(introspect.RESULT_MARKER):])
    return None


def _tail(text, limit=1500):
    text = (text or "").strip()
    return text if len(text) <= limit else "..." + text[-limit:]
