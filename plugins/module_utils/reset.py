# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reset a development database: a verified safety backup, the wipe, migrate, the fixtures -
and the safety backup restored when any step after the wipe fails.

The wipe never drops the database itself: ``data`` is Django's ``flush`` (every row goes, the
schema stays), ``schema`` drops every object inside the database (``Engine.flush``), so no
CREATE DATABASE privilege is needed and the host never ends up without its database. One
launch of the project's interpreter (a session) answers the facts, flushes, migrates and loads
the fixtures; the database's credentials come from the project's settings, never from a
command line.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.dbsafe.django.plugins.module_utils.access_check import restorer_for
from ansible_collections.dbsafe.django.plugins.module_utils.backup_job import (
    backup_label,
    public_manifest,
)
from ansible_collections.dbsafe.django.plugins.module_utils.backups import BackupStore
from ansible_collections.dbsafe.django.plugins.module_utils.engines.registry import engine_for
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    DbsafeError,
    MigrationFailed,
    RestoreFailed,
)
from ansible_collections.dbsafe.django.plugins.module_utils import processes
from ansible_collections.dbsafe.django.plugins.module_utils.processes import interruptions
from ansible_collections.dbsafe.django.plugins.module_utils.timings import Timings

MODES = ("data", "schema")


class ResetFailed(MigrationFailed):
    """A step after the wipe failed; ``details`` say whether the safety backup was restored."""


class Reset:
    """One reset of the project's database (see the module dbsafe.django.django_reset)."""

    def __init__(self, project, runner, params, check_mode=False, warn=None):
        self.project = project
        self.runner = runner
        self.params = params
        self.check_mode = check_mode
        self.warn = warn or (lambda message: None)
        self.timings = Timings()
        self.session = None
        self.result = {"changed": False, "mode": params["mode"], "backup": None,
                       "steps": [], "restored": False, "database": None}

    def run(self):
        started = time.time()
        try:
            return self._run(started)
        except DbsafeError as error:
            interruptions.annotate(error, "the reset stopped the project's interpreter")
            raise

    def _run(self, started):
        # An interruption (SIGINT/SIGTERM/SIGHUP, the caller gone; processes.Interruptions)
        # ends the project's interpreter: the step in flight fails and the safety backup is
        # restored, like any failed step; between steps, ``check`` does the same.
        with interruptions.in_mode("stop"), interruptions.stopping(self._stop_interpreter), \
                self.project.session() as session:
            self.session = session
            before = self.timings.run("introspect", session.facts, database=self.params["database"],
                                      pending=False)
            connection = self.project.connection(before)
            self.result["database"] = connection.public()
            engine = engine_for(connection, self.runner)
            exists = before["database"].get("exists", True)
            if self.check_mode:
                if exists:
                    engine.ping()
                self.result.update(changed=True, would_run=self._plan(exists))
                return self._finish(started, "would reset %s (%s)"
                                    % (engine.describe(), ", ".join(self._plan(exists))))
            with engine.lock(timeout=self.params["lock_timeout"]) as holder:
                self.result["lock"] = {"holder": holder}
                backup = self._safety_backup(engine, before) if exists else None
                interruptions.check("the database was not changed")
                self.result["changed"] = True
                try:
                    self._wipe(session, engine, exists)
                    interruptions.check("wiped")
                    self._migrate(session)
                    interruptions.check("migrated")
                    self._load_fixtures(session)
                except DbsafeError as error:
                    raise self._put_back(engine, backup, error)
        return self._finish(started, "reset %s (%s)" % (engine.describe(), ", ".join(
            step["step"] for step in self.result["steps"])))

    # -- steps ---------------------------------------------------------------------------

    def _plan(self, exists):
        steps = []
        if exists and self.params["backup"]:
            steps.append("safety backup")
        if exists:
            steps.append("flush (every row)" if self.params["mode"] == "data"
                         else "drop every table, view and routine")
        steps.append("migrate")
        if self.params["fixtures"]:
            steps.append("loaddata %s" % " ".join(self.params["fixtures"]))
        return steps

    def _stop_interpreter(self):
        if self.session is not None:
            processes.kill_group(self.session.process.proc)

    def _safety_backup(self, engine, before):
        if not self.params["backup"]:
            self.warn("backup: false - no safety backup is taken; the wiped data cannot be "
                      "brought back")
            return None
        store = BackupStore(self.params["backup_dir"], self.runner)
        manifest = self.timings.run(
            "backup", store.write, backup_label(engine.connection), engine,
            compression=self.params["compression"],
            migrations=[row.split(".", 1) for row in before["facts"]["applied_rows"]])
        self.result["backup"] = public_manifest(manifest)
        return manifest

    def _wipe(self, session, engine, exists):
        if not exists:
            return
        if self.params["mode"] == "data":
            self._command(session, "flush", [])
        else:
            self._step("drop_objects", engine.flush)

    def _migrate(self, session):
        after = self._step("migrate", session.migrate, database=self.params["database"])
        self.result["applied"] = after["migrate"]["steps"]
        error = after["migrate"]["error"]
        if error is not None:
            raise MigrationFailed("migrate failed: %s: %s" % (error["type"], error["message"]),
                                  step="migrate")
        self.result["after"] = {"applied_rows": (after.get("facts") or {}).get("applied_rows")}

    def _load_fixtures(self, session):
        if self.params["fixtures"]:
            self._command(session, "loaddata", self.params["fixtures"])

    def _command(self, session, name, args):
        answer = self._step(name, session.command, name, args, database=self.params["database"])
        error = answer["command"]["error"]
        if error is not None:
            raise MigrationFailed("%s failed: %s: %s" % (name, error["type"], error["message"]),
                                  step=name, output=answer["command"]["output"][-2000:])

    def _put_back(self, engine, backup, error):
        step = error.details.get("step") or (self.result["steps"] or [{}])[-1].get("step")
        what = "the reset failed at %s: %s." % (step, error.msg)
        if backup is None:
            return ResetFailed(
                "%s No safety backup was taken (backup: false): the database is partly reset. "
                "Run the reset again once the cause is fixed." % what,
                failed_step=step, restored=False)
        try:
            store = BackupStore(self.params["backup_dir"], self.runner)
            with interruptions.in_mode("finish"):  # a restore under way goes to its end
                self.timings.run("restore", store.restore, backup["path"], restorer_for(
                    engine, self.params.get("restore_login_user"),
                    self.params.get("restore_login_password")))
        except DbsafeError as restore_error:
            return RestoreFailed(
                "%s Restoring the safety backup ALSO FAILED: %s. The database is in an unknown "
                "state; the safety backup is kept at %s: restore it with dbsafe.django.db_backup "
                "state=restore src=%s." % (what, restore_error.msg, backup["path"], backup["path"]),
                failed_step=step, restored=False, backup=self.result["backup"])
        self.result["restored"] = True
        return ResetFailed(
            "%s The safety backup %s was restored: the database is as it was before the reset."
            % (what, backup["path"]), failed_step=step, restored=True,
            backup=self.result["backup"])

    # -- helpers -------------------------------------------------------------------------

    def _step(self, name, function, *args, **kwargs):
        self.result["steps"].append({"step": name})
        return self.timings.run(name, function, *args, **kwargs)

    def _finish(self, started, summary):
        self.result.update(msg=summary, timings=dict(self.timings),
                           duration=round(time.time() - started, 3),
                           launches=self.project.launches)
        return self.result
