# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The guarded migrate: preflight -> lock -> backup -> migrate -> verify, and on any failure
restore the backup and prove the database equals its state before the run.

One launch of the project's interpreter (a DjangoProject.session): it answers the facts,
waits while the guard takes the lock and the backup, then migrates and reads the state
afterwards. The module file is a thin shell around ``GuardedMigrate``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import time

from ansible_collections.dbsafe.django.plugins.module_utils import (
    backup_identity,
    online,
    processes,
    risk,
    run_marker,
    state,
)
from ansible_collections.dbsafe.django.plugins.module_utils.access_check import refuse_inaccessible, restorer_for
from ansible_collections.dbsafe.django.plugins.module_utils.backup_job import backup_label
from ansible_collections.dbsafe.django.plugins.module_utils.checked_state import state_after_failure
from ansible_collections.dbsafe.django.plugins.module_utils.backups import BackupStore
from ansible_collections.dbsafe.django.plugins.module_utils.engines.registry import engine_for
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    DbsafeError,
    MigrationFailed,
    PreflightRefused,
    RestoreFailed,
)
from ansible_collections.dbsafe.django.plugins.module_utils.timings import Timings
from ansible_collections.dbsafe.django.plugins.module_utils.processes import (
    Background,
    interruptions,
)


# The module's options that steer the guard: its argument spec (the module adds the project's
# options and ``downtime``), and so the one place their defaults are written.
GUARD_ARGUMENT_SPEC = dict(
    app=dict(type="str"),
    migration=dict(type="str"),
    allow_data_loss=dict(type="bool", default=False),
    # Go ahead although applied migrations were edited (their new checksums are recorded).
    allow_edited=dict(type="bool", default=False),
    allow_ghosts=dict(type="bool", default=False),
    allow_fake=dict(type="bool", default=False),
    fake=dict(type="bool", default=False),
    fake_initial=dict(type="bool", default=False),
    backup=dict(type="bool", default=True),
    backup_dir=dict(type="path"),
    compression=dict(type="str", choices=["auto", "gzip", "zstd", "none"], default="auto"),
    keep=dict(type="int"),
    lock_timeout=dict(type="int", default=300),
    # The migrating connection's own waits (see introspect.SessionTimeouts): seconds a statement
    # may wait for a table or row lock, how often a step that gave up is tried again, and
    # seconds any statement may run (None: no limit).
    db_lock_timeout=dict(type="int", default=5),
    db_lock_retries=dict(type="int", default=5),
    db_statement_timeout=dict(type="int"),
    skip_checks=dict(type="bool", default=False),
    terminate_blocking_sessions=dict(type="bool", default=False),
    # Seconds the restore after a failure waits for a table lock another session holds.
    restore_lock_wait=dict(type="int", default=60),
    # Record each applied migration's checksum and refuse on edited ones; false: our table is
    # neither read nor written.
    track_checksums=dict(type="bool", default=True),
    # The highest risk (risk.LEVELS) the plan may have; None: no limit.
    max_risk=dict(type="str", choices=["safe", "locks", "incompatible", "data_loss"]),
    # Migrate while the application serves: only a plan whose every operation is safe for the
    # running code and reversible (online.py); a failure is undone by reverse operations, the
    # rows the application wrote meanwhile stay.
    online=dict(type="bool", default=False),
    # A split online deploy (online.stages): expand runs the migrations safe for the previous
    # code (before the rollout), contract the removals (after it); all: the whole plan.
    stage=dict(type="str", choices=["all", "expand", "contract"], default="all"),
    # A privileged login the restore after a failure runs as (same server and database).
    restore_login_user=dict(type="str"),
    restore_login_password=dict(type="str", no_log=True),
)


class GuardOptions:
    """The options of ``GUARD_ARGUMENT_SPEC`` (plus ``database``) as plain attributes: the
    values given, the spec's defaults for the rest."""

    def __init__(self, database="default", **given):
        unknown = sorted(set(given) - set(GUARD_ARGUMENT_SPEC))
        if unknown:
            raise TypeError("unknown guard options: %s" % ", ".join(unknown))
        self.database = database
        for name, spec in GUARD_ARGUMENT_SPEC.items():
            setattr(self, name, given.get(name, spec.get("default")))

    @classmethod
    def from_params(cls, params):
        """From a module's params (which hold every option of the spec, and more)."""
        return cls(database=params["database"],
                   **dict((name, params[name]) for name in GUARD_ARGUMENT_SPEC))

    def problems(self):
        """What is wrong with the values themselves (before anything is read or touched)."""
        problems = []
        if self.keep is not None and self.keep < 1:
            problems.append("keep must be 1 or more (got %d)" % self.keep)
        for name in ("lock_timeout", "db_lock_timeout", "db_lock_retries"):
            if getattr(self, name) < 0:
                problems.append("%s must not be negative (got %d)" % (name, getattr(self, name)))
        if self.restore_lock_wait < 1:
            problems.append("restore_lock_wait must be 1 second or more (got %d)" % self.restore_lock_wait)
        if self.stage != "all" and not self.online:
            problems.append("stage %s is a stage of an online deploy: set online: true too" % self.stage)
        if self.stage != "all" and self.app is not None:
            problems.append("stage %s migrates its own migrations: do not set app/migration with it"
                            % self.stage)
        if self.db_statement_timeout is not None and self.db_statement_timeout < 1:
            problems.append("db_statement_timeout must be 1 second or more, or not set for no limit "
                            "(got %d)" % self.db_statement_timeout)
        return problems

    @property
    def db_timeouts(self):
        """The migrating connection's waits, as introspect.migrate takes them."""
        return {"lock_wait": self.db_lock_timeout, "retries": self.db_lock_retries,
                "statement": self.db_statement_timeout}

    @property
    def target(self):
        if self.app is None:
            return None
        # Like `migrate APP`: no migration means the app's latest.
        return {"app": self.app, "migration": self.migration}


def preflight_problems(result, options):
    """Why we must not touch this database, as sentences that say what to do. Pure."""
    facts = result["facts"]
    problems = []
    for app, leaves in sorted(facts["conflicts"].items()):
        problems.append(
            "app %s has conflicting migrations (%s): run 'manage.py makemigrations --merge %s' "
            "and commit the merge migration" % (app, ", ".join(leaves), app)
        )
    for item in facts["inconsistent"]:
        problems.append(
            "inconsistent history: %s is applied but its dependency %s is not"
            % (item["migration"], item["missing_dependency"])
        )
    if facts["ghosts"] and not options.allow_ghosts:
        problems.append(
            "ghost migrations (applied in the database, no file in the code): %s; check out the "
            "branch that has them, or set allow_ghosts: true if they are known leftovers"
            % ", ".join(facts["ghosts"])
        )
    pending = facts.get("pending_changes") or {}
    if pending:
        problems.append(
            "models changed without a migration (did someone forget to commit a migration?): %s"
            % "; ".join("%s: %s" % (app, ", ".join(ops)) for app, ops in sorted(pending.items()))
        )
    if not options.skip_checks:
        # What manage.py migrate refuses on before it touches anything.
        for message in state.serious_checks(facts):
            problems.append(
                "Django's system check %s: %s; fix it (manage.py migrate refuses on it too), "
                "or set skip_checks: true to migrate anyway (like --skip-checks)"
                % (message["level"], state.check_text(message)))
    for item in state.irreversible_steps(facts["plan"]):
        problems.append(
            "%s cannot be unapplied: %s has no reverse"
            % (item["migration"], ", ".join(item["operations"]))
        )
    problems.extend(checksum_problems(facts, options))
    if (options.fake or options.fake_initial) and not options.allow_fake:
        problems.append(
            "fake/fake_initial record migrations without running them; set allow_fake: true "
            "if that is really what you want"
        )
    return problems


def checksum_problems(facts, options):
    """Applied migrations edited since they were applied (unless allow_edited), or checksums
    that could not be read: what to do about them. Pure."""
    if not options.track_checksums:
        return []
    found = facts.get("checksums") or {}
    if found.get("error"):
        return ["the checksums of the applied migrations could not be read from %s: %s; fix the "
                "database user's access to that table, or set track_checksums: false to migrate "
                "without the check" % (found.get("table"), found["error"])]
    edited = state.edited_migrations(facts)
    if not edited or options.allow_edited:
        return []
    return ["applied migrations were edited after they were applied (what they do no longer "
            "matches the checksum recorded when they ran): %s; the database ran the old version, "
            "so the edit never reached it. Undo the edit and put the change into a new migration, "
            "or set allow_edited: true if the database needs nothing of it (their new checksums "
            "are then recorded by the migrate)" % ", ".join(edited)]


def verification_problems(before, after, plan):
    """What is wrong with the state after migrate, given the plan. Pure."""
    if after.get("facts") is None:
        return ["cannot read the migration state after migrate: %s" % after.get("facts_error")]
    # The steps, model changes without a migration (conflicts were refused before migrating).
    problems = state.plan_problems(after["facts"], plan, complete=False)
    new_ghosts = sorted(set(after["facts"]["ghosts"]) - set(before["facts"]["ghosts"]))
    if new_ghosts:
        problems.append("new ghost migrations: %s" % ", ".join(new_ghosts))
    return problems


class GuardedMigrate:
    def __init__(self, project, runner, options, check_mode=False, diff=False, warn=None,
                 window=None, store=None):
        self.project = project
        # The BackupStore (see ``store``); given, or made on first use.
        self._store = store
        # A downtime.ServiceWindow when the module stops and starts the application itself.
        self.window = window
        self.runner = runner
        self.options = options
        self.check_mode = check_mode
        self.diff = diff
        self.warn = warn or (lambda message: None)
        self.timings = Timings()
        self.session = None  # the ProjectSession of a run
        self.restorer = None  # the engine restores run through (see _restorer)
        self._edited_allowed = False  # allow_edited's warning was given
        self._stages = {"expand": [], "contract": [], "blockers": []}  # see _stage_plan
        self.result = {"changed": False, "restored": False, "backup": None, "lock": None,
                       "applied": [], "fake": bool(options.fake or options.fake_initial),
                       "online": bool(options.online), "stage": options.stage}

    def run(self):
        # ONE launch of the project's interpreter for the whole run: facts now, migrate (and
        # the facts after it) once the lock and the backup are in place.
        # With a service window, Django's framework is loaded while the application still
        # runs; stop, code switch, the project's boot and the work follow (see downtime.py).
        started = time.time()
        try:
            # An interruption (SIGINT/SIGTERM/SIGHUP, the caller gone; see processes.Interruptions)
            # stops the project's interpreter; the steps below decide what that means.
            with interruptions.in_mode("stop"), interruptions.stopping(self._stop_interpreter), \
                    self.project.session() as self.session:
                if self.window is None:
                    return self._run(started)
                if self.check_mode:
                    self.result["downtime"] = {"would_run": self.window.describe()}
                    return self._run(started)
                self.timings.run("warm", self.session.warm)
                return self.window.around(lambda: self._work_then_finish(started))
        except DbsafeError as error:
            # Refused and failed results carry them too (documented as always returned).
            self._stamp(started)
            _say_interrupted(error)
            raise

    def _stop_interpreter(self):
        """On an interruption: the project's interpreter (and a wrapper around it) ends at once;
        a migrate in flight fails, and is restored like any failed migrate."""
        if self.session is not None:
            processes.kill_group(self.session.process.proc)

    def _work_then_finish(self, started):
        """The window's work; once it is done the interpreter exits while the application
        starts (its exit is no longer part of the downtime)."""
        result = self._run(started)
        self.session.finish()
        return result

    def _run(self, started):
        # Nothing is changed until the lock is ours: an interruption stops where we are.
        with interruptions.in_mode("raise"):
            return self._steps(started)

    def _steps(self, started):
        before = self.timings.run("introspect", self.session.facts, database=self.options.database,
                                  target=self.options.target, sql=self.diff,
                                  track_checksums=self.options.track_checksums)
        facts = state.migration_facts(before)
        plan = self._stage_plan(before, facts["risks"])
        self.result.update(before=facts, plan=plan, code_steps=state.code_steps(plan))
        untested = state.untested_django(before.get("django_version"))
        if untested:
            self.warn(untested)
        if self.diff and plan:
            # Before the preflight: a refusal shows what it refuses (the SQL too).
            self.result["diff"] = self._diff(before, plan)
        self._preflight(before, plan)
        if not plan:
            return self._finish(started, "nothing to migrate")
        self.result["changed"] = True
        if self.check_mode:
            return self._finish(started, "would apply %d step(s)%s"
                                % (len(plan), _runs_code(self.result["code_steps"])))
        if self.result["fake"]:
            self.warn("migrations are faked: they are recorded as applied without running")
        if not self.options.backup:
            self.warn("backup: false - no backup is taken, a failure cannot be undone")
        engine = engine_for(self.project.connection(before), self.runner)
        self.restorer = self._restorer(engine)
        # A read-only target, or objects a restore could not re-create: refused untouched.
        refuse_inaccessible(engine, restore=self.options.backup, restore_engine=self.restorer)
        # A restore after a failure waits a bounded time behind other sessions' table locks
        # (and names them), or ends them first when the application is meant to be stopped.
        for restoring in (engine, self.restorer):
            restoring.restore_lock_wait = self.options.restore_lock_wait
            restoring.terminate_blockers = self.options.terminate_blocking_sessions
        lock_started = time.time()
        # One lock per database: each engine scopes the default name to its database.
        with engine.lock(timeout=self.options.lock_timeout) as holder:
            # The lock is ours: from here an interruption stops the interpreter, and the steps
            # below restore or finish what was started.
            interruptions.mode = "stop"
            waited = time.time() - lock_started
            self.result["lock"] = {"holder": holder, "waited": round(waited, 3)}
            # A run that died holding the lock: warn, wait for its processes that still run
            # (never a second migrate beside them), and undo its half-done migrate first.
            marker = self._marker(engine)
            run_marker.take_over(marker, holder, engine, self.store, self.warn,
                                 wait=max(0, self.options.lock_timeout - waited),
                                 restorer=self.restorer)
            interruptions.check("nothing was migrated by this run")
            if not before["database"].get("exists", True):
                # A SQLite file that does not exist yet: nothing to back up or prove; on
                # failure "as before" means the file is gone again.
                self._migrate_and_verify(engine, before, plan, None, None)
                return self._finish(started, "created the database and applied %d step(s)"
                                    % len(plan))
            # Schema and migrations only (no row is read): did another run migrate meanwhile?
            current = self.timings.run("state_before", engine.snapshot, content=False)
            interruptions.check("nothing was migrated by this run")
            before, plan = self._recheck_after_lock(current, before, plan)
            if not plan:
                self.result["changed"] = False
                return self._finish(started, "another run migrated while we waited for the lock")
            # The interpreter's pid goes into the marker: a next run waits while it still runs.
            workers = [processes.identity(self.session.process.proc.pid)]
            with marker.tracking(holder, workers) if marker else _no_tracking() as track:
                # The full snapshot: row counts and content hashes of every table, the proof
                # after a restore (and the marker's, should this run die while migrating).
                snapshot, backup = self._snapshot_and_backup(engine, before)
                interruptions.check("stopped before migrating: nothing was migrated, the "
                                    "database is as before%s" % (
                                        " (the backup %s is kept)" % backup["path"] if backup else ""))
                track.migrating(snapshot, backup, state.plan_names(plan), online=self.options.online)
                self._migrate_and_verify(engine, before, plan, snapshot, backup)
                if interruptions.causes:
                    # Done and verified: failing now would send a service window back to the
                    # old code on a migrated database. Finish, and say so.
                    self.result["interrupted"] = list(interruptions.causes)
                    self.warn("%s after the migrate had finished and was verified: the database "
                              "is fully migrated; the run finished" % interruptions.describe())
        return self._finish(started, "applied %d step(s)%s" % (len(plan), _row_summary(
            self.result.get("row_changes"))))

    # -- steps -------------------------------------------------------------------------------

    def _preflight(self, before, plan):
        # The refusal keeps the result's plan (its steps and operations, the SQL in diff mode)
        # so a person sees what they are asked to allow.
        problems = preflight_problems(before, self.options)
        # Each pending operation's risk to its live table, shown in check and diff mode too.
        self.result["risks"] = self.result["before"]["risks"]
        self.result["risk"] = self.result["before"]["risk"]
        self.result["edited"] = self.result["before"]["edited"]
        # What keeps this plan from running while the application serves (the deploy's mode),
        # and how it would split in two stages around the rollout.
        names = set(step["migration"] for step in plan)
        self.result["online_blockers"] = online.blockers(
            plan, [item for item in self.result["risks"] if item["migration"] in names])
        self.result["stages"] = self._stages
        if problems:
            raise PreflightRefused(
                "refused before touching the database: " + " | ".join(problems),
                problems=problems, database_changed=False,
            )
        lossy = state.lossy_steps(plan, before["facts"]["applied_rows"])
        if lossy and not self.options.allow_data_loss:
            raise PreflightRefused(
                "refused: the plan loses data (%s); set allow_data_loss: true to go ahead "
                "(a backup is taken first)"
                % "; ".join("%s: %s" % (s["migration"], s["reason"]) for s in lossy),
                data_loss=lossy, database_changed=False,
            )
        blockers = self.result["online_blockers"]
        # The contract stage runs once no host runs the previous code: its removals are meant.
        if self.options.online and plan and self.options.stage != "contract":
            if blockers:
                raise PreflightRefused(
                    "refused before touching the database: online: true, but %d operation(s) need "
                    "the application stopped: %s. Migrate with the application stopped (online: "
                    "false, or deploy mode stop/auto)" % (len(blockers), "; ".join(blockers)),
                    online_blockers=blockers, database_changed=False)
        too_risky = risk.refusal(self.result["risks"], self.options.max_risk)
        if too_risky:
            raise PreflightRefused("refused before touching the database: " + too_risky,
                                   too_risky=risk.above(self.result["risks"], self.options.max_risk),
                                   database_changed=False)
        if self.result["edited"] and self.options.allow_edited and self.options.track_checksums \
                and not self._edited_allowed:
            self._edited_allowed = True  # once, also when the preflight runs again after the lock
            self.warn("allow_edited: true - going ahead although these applied migrations were "
                      "edited after they were applied: %s; their new checksums are recorded once a "
                      "migrate runs" % ", ".join(self.result["edited"]))
        serious = state.serious_checks(before["facts"])
        if plan and self.options.skip_checks and not self.result.get("skip_checks"):
            self.result["skip_checks"] = True
            self.warn("skip_checks: true - Django's system checks do not gate this migrate (as "
                      "manage.py migrate --skip-checks)%s" % (
                          "; errors it would refuse on: %s" % "; ".join(
                              state.check_text(m) for m in serious) if serious else ""))

    def _stage_plan(self, before, risks):
        """The steps this run migrates: the whole plan, or one stage of it (online.stages, from
        the plan's ``risks``); the split of the whole plan is kept for the result."""
        plan = before["facts"]["plan"]
        self._stages = online.stages(plan, risks)
        if self.options.stage == "all":
            return plan
        if self.options.stage == "contract" and (self._stages["expand"] or self._stages["blockers"]):
            raise PreflightRefused(
                "refused before touching the database: the contract stage runs once the expand stage is "
                "done, but %s; nothing was changed" % (
                    "the expand migrations %s are not applied" % ", ".join(self._stages["expand"])
                    if self._stages["expand"] else "the plan cannot be split: " + "; ".join(self._stages["blockers"])),
                stages=self._stages, database_changed=False)
        if self.options.stage == "expand" and self._stages["blockers"]:
            raise PreflightRefused(
                "refused before touching the database: stage expand, but the plan cannot be split: %s. "
                "Nothing was changed; deploy it in the stop window" % "; ".join(self._stages["blockers"]),
                stages=self._stages, online_blockers=self._stages["blockers"], database_changed=False)
        names = set(self._stages[self.options.stage])
        return [step for step in plan if step["migration"] in names]

    def _recheck_after_lock(self, snapshot, before, plan):
        """Another run may have migrated while we waited: read the state again if it moved."""
        rows = set("%s.%s" % tuple(row) for row in snapshot["migrations"] or [])
        if rows == set(before["facts"]["applied_rows"]):
            return before, plan
        before = self.timings.run("introspect_again", self.session.facts,
                                  database=self.options.database, target=self.options.target,
                                  track_checksums=self.options.track_checksums)
        facts = state.migration_facts(before)
        plan = self._stage_plan(before, facts["risks"])
        self._preflight(before, plan)
        self.result.update(before=facts, plan=plan, code_steps=state.code_steps(plan))
        return before, plan

    def _snapshot_and_backup(self, engine, before):
        """(snapshot, backup or None). Both only read, under the lock, with the application
        stopped: side by side, so the downtime pays for the longer of the two instead of their
        sum."""
        snapshotting = Background(self.timings.run, "snapshot_before", engine.snapshot)
        try:
            backup = self._backup(engine, before) if self.options.backup else None
        finally:
            snapshotting.join()
        if snapshotting.error is not None:
            raise snapshotting.error
        return snapshotting.result, backup

    def _backup(self, engine, before):
        store = self.store
        # The same label db_backup uses, so retention and "newest backup" see both.
        label = backup_label(engine.connection)
        backup = self.timings.run(
            "backup", store.write, label, engine, compression=self.options.compression,
            migrations=[row.split(".", 1) for row in before["facts"]["applied_rows"]],
        )
        self.result["backup"] = {"path": backup["path"], "sha256": backup["sha256"],
                                 "size": backup["size"], "format": backup["format"],
                                 "compression": backup["compression"]}
        if self.options.keep:
            self.result["backup"]["pruned"] = store.prune(
                self.options.keep, protect=[backup["path"]], label=label, engine=engine)
        return backup

    def _migrate_and_verify(self, engine, before, plan, snapshot, backup):
        try:
            after = self.timings.run(
                "migrate", self.session.migrate, database=self.options.database,
                target=self.options.target, fake=self.options.fake,
                fake_initial=self.options.fake_initial, skip_checks=self.options.skip_checks,
                track_checksums=self.options.track_checksums, allow_edited=self.options.allow_edited,
                db_timeouts=self.options.db_timeouts,
                # The expand stage: its migrations only, app by app (never a contract one).
                targets=online.stage_targets(plan, set(self._stages["expand"]))
                if self.options.stage == "expand" else None,
            )
        except DbsafeError as error:  # killed, crashed, no answer: an undo needs a new interpreter
            return self._failed(engine, before, snapshot, backup, None, error.msg)
        self.result["applied"] = after["migrate"]["steps"]
        self._say_lock_waits(after["migrate"].get("lock_waits") or [])
        error = after["migrate"]["error"]
        if error is not None:
            failed = _failed_step(after["migrate"]["steps"])
            message = "%s: %s" % (error["type"], error["message"])
            if error.get("lock_wait") and not self.options.online:
                message = self._gave_up_waiting(engine, message)
                if error.get("clean") and not any(step["ok"] for step in after["migrate"]["steps"]):
                    # Nothing applied, the step rolled back: prove it, no restore needed (which
                    # would wait behind the same lock).
                    self._unchanged_or_put_back(engine, snapshot, failed, message)
            return self._failed(engine, before, snapshot, backup, failed, message,
                                error.get("kept_operations"), self.session)
        problems = verification_problems(before, after, plan)
        if problems:
            return self._failed(engine, before, snapshot, backup, None,
                                "verification failed: " + "; ".join(problems), session=self.session)
        self.result["after"] = state.migration_facts(after)
        self._checksums_written(after)
        self._row_changes(engine, snapshot)

    def _say_lock_waits(self, lock_waits):
        """Each retry after a lock wait that timed out, in the result and as a warning."""
        if not lock_waits:
            return
        self.result["lock_waits"] = lock_waits
        self.warn("%d statement(s) gave up waiting %ds for a lock held by another session and "
                  "were tried again (%s)" % (len(lock_waits), self.options.db_lock_timeout, ", ".join(
                      "%s after %.1fs" % (wait["migration"] or "between steps", wait["retry_in"])
                      for wait in lock_waits)))

    def _gave_up_waiting(self, engine, message):
        """The failure of a migrate whose tries were used up behind a lock, naming who holds it."""
        self.result["lock_holders"] = holders = engine.described_blockers()
        tries = len(self.result.get("lock_waits") or []) + 1
        return ("gave up waiting for a lock held by %s: %d tr%s of db_lock_timeout=%ds each "
                "(db_lock_retries=%d); the last ended with %s" % (
                    holders, tries, "y" if tries == 1 else "ies", self.options.db_lock_timeout,
                    self.options.db_lock_retries, message))

    def _unchanged_or_put_back(self, engine, snapshot, failed, message):
        """After a lock wait that rolled back cleanly: the database proven as before, no restore
        (it would wait behind the same lock). Returns when that is not proven: restore then."""
        if snapshot is None:
            return
        checked, as_before = state_after_failure(engine, snapshot)
        if not as_before:
            return
        raise MigrationFailed(
            "%s: %s. Nothing was applied and nothing needed restoring. %s Migrate again once that "
            "session has ended, or end it (a longer db_lock_timeout makes every query on the table "
            "queue behind the migration for that long)"
            % ("migration %s failed" % failed if failed else "migrate failed", message, checked),
            failed_step=failed, error=message, applied=self.result["applied"],
            plan=state.plan_names(self.result["plan"]), restored=False, proven=True,
            database_as_before=True, backup=self.result["backup"])

    def _checksums_written(self, after):
        """The migrate succeeded: a checksum that could not be recorded is a warning, not a
        failure (the next guarded migrate records what is missing)."""
        found = after["facts"].get("checksums") or {}
        if found.get("write_error"):
            self.warn("the migrate succeeded, but the checksums of the applied migrations could "
                      "not be recorded in %s: %s; the next guarded migrate records them"
                      % (found.get("table"), found["write_error"]))

    def _row_changes(self, engine, snapshot):
        """Tables whose row count the migrate changed (a data migration's deletes show here):
        the full snapshot's counts before, plain counts after."""
        try:
            counts = self.timings.run("rows_after", engine.row_counts)
        except DbsafeError as error:  # the migrate succeeded: say so, do not fail for this
            self.warn("the migrate succeeded, but counting the rows after it failed: %s"
                      % error.msg)
            return
        # No snapshot: the SQLite file did not exist before, every row is new.
        self.result["row_changes"] = state.row_changes(
            snapshot["tables"] if snapshot else {}, counts)

    def _put_back(self, engine, snapshot, backup, failed_step, error):
        what = "migration %s failed" % failed_step if failed_step else "migrate failed"
        base = dict(failed_step=failed_step, error=error, applied=self.result["applied"],
                    plan=state.plan_names(self.result["plan"]))
        if snapshot is None:  # the SQLite file did not exist before the run
            for suffix in ("", "-wal", "-shm", "-journal"):
                if os.path.exists(engine.connection.name + suffix):
                    os.unlink(engine.connection.name + suffix)
            raise MigrationFailed(
                "%s: %s. The database file %s did not exist before the run and was removed "
                "again." % (what, error, engine.connection.name), restored=True, proven=True,
                **base)
        if backup is None:
            raise MigrationFailed(
                "%s: %s. No backup was taken (backup: false): the database may be half-migrated"
                % (what, error), restored=False, **base)
        try:
            differences = run_marker.restore_and_prove(self.store, backup["path"], engine,
                                                       snapshot, timed=self.timings.run,
                                                       restorer=self.restorer)
        except DbsafeError as restore_error:
            checked, as_before = state_after_failure(engine, snapshot)
            raise RestoreFailed(
                "%s: %s. THE RESTORE ALSO FAILED: %s. %s The backup is kept at %s; restore it "
                "by hand with: %s"
                % (what, error, restore_error.msg.rstrip("."), checked, backup["path"],
                   _manual_restore(backup, self.project, self.options)),
                restored=False, database_as_before=as_before, backup=self.result["backup"],
                **base)
        if differences:
            raise RestoreFailed(
                "%s: %s. The backup was restored but the database does NOT equal its state "
                "before the run (%d difference(s), e.g. %s). The backup is kept at %s."
                % (what, error, len(differences), differences[0], backup["path"]),
                restored=True, proven=False, differences=differences[:50],
                backup=self.result["backup"], **base)
        self.result["restored"] = True
        raise MigrationFailed(
            "%s: %s. The backup %s was restored and verified: the database equals its state "
            "before the run." % (what, error, backup["path"]),
            restored=True, proven=True, backup=self.result["backup"], **base)

    # -- helpers ---------------------------------------------------------------------------

    def _failed(self, engine, before, snapshot, backup, failed_step, error, kept=None, session=None):
        """A failed migrate, put back as its mode needs: the contract stage left as it is, an
        online run undone by reverse operations (``session``: the run's interpreter, None when
        it died), otherwise the backup restored and proven."""
        if self.options.stage == "contract":
            return self._contract_failed(engine, before, failed_step, error, kept)
        if self.options.online and snapshot is not None:
            return self._undo(engine, snapshot, backup, failed_step, error, kept, before, session)
        return self._put_back(engine, snapshot, backup, failed_step, error)

    def _applied_by_run(self, engine, before):
        """The plan's forward steps this run recorded in django_migrations, in plan order, read
        from the database (DbsafeError when it cannot be read)."""
        rows = set("%s.%s" % tuple(row) for row in engine.snapshot(content=False)["migrations"] or [])
        new = rows - set(before["facts"]["applied_rows"])
        return [step["migration"] for step in self.result["plan"]
                if not step["backwards"] and step["migration"] in new]

    def _undo(self, engine, snapshot, backup, failed_step, error, kept, before, session=None):
        """An online migrate failed while the application kept writing: Django's reverse
        operations undo what it applied (a restore would lose those writes), then the proof -
        schema and django_migrations as before the run, no table with fewer rows. Not proven:
        no automatic restore (it would lose the writes), the message says what to do."""
        what = "migration %s failed" % failed_step if failed_step else "migrate failed"
        base = dict(failed_step=failed_step, error=error, applied=self.result["applied"],
                    plan=state.plan_names(self.result["plan"]), backup=self.result["backup"],
                    restored=False, online=True)
        undone, undo_error = self.timings.run("undo", self._reverse, engine, before, kept, session)
        try:
            live = engine.snapshot(content=False)
            counts = engine.row_counts()
        except DbsafeError as read_error:
            problems = ["the database could not be read after the undo: %s" % read_error.msg]
            counts = None
        else:
            problems = online.undo_problems(snapshot, live, counts)
        self.result["undone"] = undone
        if undo_error is None and not problems:
            written = online.grown(snapshot, counts)
            raise MigrationFailed(
                "%s: %s. Online (the application kept running): undone by Django's reverse "
                "operations (%s) and proven: the schema and django_migrations equal their state "
                "before the run and no table lost a row%s. The backup %s was not needed and is kept."
                % (what, error, ", ".join(undone) or "nothing had been applied",
                   " (rows the application wrote meanwhile, kept: %s)" % ", ".join(
                       "%s +%d" % item for item in sorted(written.items())) if written else "",
                   backup["path"] if backup else "(none)"),
                undone=undone, proven=True, database_as_before=True, rows_written_meanwhile=written,
                **base)
        raise RestoreFailed(
            "%s: %s. Online (the application kept running): the undo by Django's reverse operations "
            "%s; the database does NOT equal its state before the run: %s. It was NOT restored from "
            "the backup automatically: the application is writing and a restore loses those rows. "
            "Either fix forward (a migration that completes or reverses the change), or stop the "
            "application and restore the backup %s with: %s"
            % (what, error, ("failed: %s" % undo_error) if undo_error else "ran (%s)" % (
                ", ".join(undone) or "nothing to undo"), "; ".join(problems) or "unknown",
               backup["path"] if backup else "(none - backup: false)",
               _manual_restore(backup, self.project, self.options) if backup else "-"),
            undone=undone, proven=False, database_as_before=False, differences=problems[:50],
            **base)

    def _contract_failed(self, engine, before, failed_step, error, kept):
        """The contract stage failed. Nothing is undone: a removal's reverse brings the column or
        table back empty (its data would only be in the backup), and the running - new - code
        uses none of it; nothing is restored either (the application writes). The message says
        what is applied, what is not and what to do."""
        what = "migration %s failed" % failed_step if failed_step else "migrate failed"
        unread = None
        try:
            done = self._applied_by_run(engine, before)
        except DbsafeError as read_error:
            done, unread = [], read_error.msg
        names = state.plan_names(self.result["plan"])
        left = [name for name in names if name not in done]
        raise MigrationFailed(
            "%s: %s. Contract stage (after the rollout; the application runs the new code, which uses "
            "nothing these migrations remove): nothing was undone or restored. Applied: %s; not applied: %s%s. "
            "The running code is not affected; fix the failing migration and deploy again to finish the "
            "contract stage (the backup %s holds the data as before it)."
            % (what, error, ", ".join(done) or "none", ", ".join(left) or "none",
               "; the failed migration had already run %d operation(s) (no transactional DDL): they stay"
               % kept["count"] if (kept or {}).get("count") else "" if unread is None
               else "; the applied migrations could not be read: %s" % unread,
               (self.result["backup"] or {}).get("path") or "(none - backup: false)"),
            failed_step=failed_step, error=error, applied=self.result["applied"], plan=names,
            restored=False, online=True, stage="contract", backup=self.result["backup"],
            contract_applied=done, contract_left=left)

    def _reverse(self, engine, before, kept, session):
        """(undone, error or None): the migrations this run recorded (read from the database,
        in plan order) and the failed one's kept operations, reversed in the project - in the
        run's own interpreter, or a new one when that one died."""
        try:
            completed = self._applied_by_run(engine, before)
        except DbsafeError as error:
            return [], "the applied migrations could not be read: %s" % error.msg
        if not completed and not (kept or {}).get("count"):
            return [], None
        try:
            if session is not None:
                answer = session.undo(completed, kept, database=self.options.database)
            else:
                with self.project.session() as fresh:
                    answer = fresh.undo(completed, kept, database=self.options.database)
        except DbsafeError as error:
            return [], error.msg
        found = answer["undo"]
        if found["error"]:
            return found["undone"], "%s: %s" % (found["error"]["type"], found["error"]["message"])
        return found["undone"], None

    def _restorer(self, engine):
        return restorer_for(engine, self.options.restore_login_user,
                            self.options.restore_login_password)

    @property
    def store(self):
        """The BackupStore of ``backup_dir``, made once, when first needed (under the lock:
        check mode and a refused run create no directory); None without backups."""
        if self._store is None and self.options.backup:
            self._store = BackupStore(self.options.backup_dir, self.runner)
        return self._store

    def _marker(self, engine):
        if self.store is None:  # no backup directory, nothing to go back to
            return None
        # One marker per database: another database's run in a shared backup_dir (same label)
        # is none of ours. A marker an earlier version left (one per label) is still honoured.
        label = backup_label(engine.connection)
        own = run_marker.RunMarker(self.store.directory, "%s-%s" % (
            label, backup_identity.database_key(engine.instance_identity())))
        legacy = run_marker.RunMarker(self.store.directory, label)
        return legacy if own.read() is None and legacy.read() is not None else own

    def _diff(self, before, plan):
        applied = sorted(before["facts"]["applied_rows"])
        expected = set(applied)
        for step in plan:
            (expected.discard if step["backwards"] else expected.add)(step["migration"])
        sql = []
        for step in plan:
            sql.append("-- %s %s" % ("Unapply" if step["backwards"] else "Apply",
                                     step["migration"]))
            sql.extend(step.get("sql") or [])
        return {
            "before": "\n".join(applied) + "\n",
            "after": "\n".join(sorted(expected)) + "\n",
            "prepared": "\n".join(sql) + "\n",
        }

    def _finish(self, started, summary):
        self.result["msg"] = summary
        self._stamp(started)
        return self.result

    def _stamp(self, started):
        self.result["timings"] = dict(self.timings)
        self.result["duration"] = round(time.time() - started, 3)
        self.result["launches"] = self.project.launches


def _say_interrupted(error):
    """A run that was interrupted says so first, then what happened and the database's state."""
    interruptions.annotate(error, "the guard stopped the project's interpreter")


def _row_summary(changes):
    if not changes:
        return ""
    return "; rows changed: %s" % ", ".join(
        "%s %s -> %s" % (c["table"], c["before"] or 0, c["after"] or 0) for c in changes[:10])


def _runs_code(code_steps):
    """The summary's note on steps whose data changes the plan cannot show."""
    if not code_steps:
        return ""
    return "; %d of them run code or raw SQL (RunPython/RunSQL), whose data changes only show " \
        "once they ran: %s" % (len(code_steps), ", ".join(s["migration"] for s in code_steps))


class _no_tracking:
    """RunMarker.tracking's stand-in when there is no backup (and so no marker)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def migrating(self, snapshot, backup, plan=None, online=False):
        pass


def _failed_step(steps):
    for step in steps:
        if not step["ok"]:
            return step["migration"]
    return None


def _manual_restore(backup, project, options):
    """The db_backup call that restores this backup, with this run's project options (the
    environment's credentials are left out: pass the same ``environment`` again)."""
    args = {"state": "restore", "src": backup["path"], "backup_dir": os.path.dirname(backup["path"]),
            "project_path": project.project_path, "python": project.interpreter,
            "database": options.database}
    if project.settings:
        args["settings"] = project.settings
    if project.command_prefix:
        args["command_prefix"] = project.command_prefix
    if getattr(project.runner, "db_command_prefix", None):
        args["db_command_prefix"] = project.runner.db_command_prefix
    return ("ansible localhost -m dbsafe.django.db_backup -a '%s' (add the same environment "
            "option as this run)" % json.dumps(args, sort_keys=True))
