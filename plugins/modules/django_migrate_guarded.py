#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: django_migrate_guarded
short_description: Migrate a Django database safely, and put everything back when anything fails
version_added: 0.1.0
description:
  - Plans, checks, backs up, migrates and verifies, under an engine-native lock, and restores
    the backup and proves the database equals its state before the run when anything fails.
  - Refuses before touching anything on conflicts, inconsistent history, ghost migrations,
    model changes without a migration, an irreversible step in a backwards plan, a plan that
    loses data (unless O(allow_data_loss)), O(fake) or O(fake_initial) (unless O(allow_fake)),
    an error of Django's system checks (unless O(skip_checks)) and applied migrations edited
    after they were applied (unless O(allow_edited); see O(track_checksums)).
  - A refusal still returns RV(plan) (steps and operations) and, in diff mode, the task's diff
    with the SQL, so a person sees what they are asked to allow.
  - Works the same on MySQL/MariaDB, where DDL is not transactional and a failed migration
    leaves a half-changed schema behind; the restore undoes it.
  - While it holds the lock it keeps a marker C(.dbsafe-run-<label>-<key>.json) in O(backup_dir)
    (holder, phase, backup, the snapshot before); C(<key>) names the database (engine, name and
    server identity), so another database's run in a shared O(backup_dir) is none of its
    business. A marker C(.dbsafe-run-<label>.json) an earlier version left is still read. A run that finds the marker of a run that
    died holding the lock (killed, host crashed) warns. If that run died while migrating and
    left something behind that its own plan explains (its tables' schema and content, its
    migration rows), it first restores that run's backup and proves the database equals that
    run's state before, and only then plans and migrates. If the database changed in any other
    way since (for example the application wrote rows again), restoring would lose those
    writes, so the run is refused, changes nothing and says how to go on. A marker whose writer
    or its project's interpreter (recorded by pid and start time) still runs on this host is
    waited for, up to O(lock_timeout), then refused, changing nothing.
  - The project's interpreter and every tool it starts die with the module (own session, a
    parent-death signal, and the interpreter's own watch on its output), so a killed module
    never leaves a migrate running without the lock. SIGINT (Ctrl-C), SIGTERM, SIGHUP, or the
    task's caller going away (Ansible's task C(timeout) signals nothing, it stops reading) -
    before the lock nothing is changed; under the lock the interpreter is stopped and the
    backup restored and proven (a restore in progress is finished, further signals do not
    abandon it); the task fails with a message starting C(interrupted) that says the
    database's state, and RV(interrupted) lists what arrived. After a verified migrate an
    interruption undoes nothing, the run finishes with a warning.
  - One launch of the project's interpreter, also when there is something to do. It
    answers the plan, waits while the module takes the lock and the backup, then migrates
    and reads the state back.
author:
  - dbsafe.django developers (@dbsafe)
extends_documentation_fragment:
  - dbsafe.django.project
options:
  app:
    description:
      - Migrate only this app, to O(migration). Without it, every app is migrated to its
        latest migration.
    type: str
  migration:
    description:
      - The target migration of O(app), as a full name, a unique number prefix such as V(0002),
        or V(zero) to unapply all of the app's migrations.
      - An ambiguous or unknown prefix is an error that lists the candidates.
      - Requires O(app).
    type: str
  allow_data_loss:
    description:
      - Allow a plan that unapplies migrations or removes fields or models.
    type: bool
    default: false
  allow_edited:
    description:
      - Go ahead although applied migrations were edited after they were applied (RV(edited)),
        with a warning that names them. The migrate then records their new checksums, so the
        next run does not refuse on them again (a run with nothing to migrate records nothing).
    type: bool
    default: false
  allow_ghosts:
    description:
      - Go ahead although the database has migrations applied whose files no longer exist.
    type: bool
    default: false
  allow_fake:
    description:
      - Allow O(fake) and O(fake_initial). They are recorded in the result with a warning.
    type: bool
    default: false
  fake:
    description:
      - Mark the migrations as applied or unapplied without running them (C(migrate --fake)).
    type: bool
    default: false
  fake_initial:
    description:
      - Fake initial migrations whose tables already exist (C(migrate --fake-initial)).
    type: bool
    default: false
  backup:
    description:
      - Take a verified backup before migrating, restored on failure.
      - V(false) only when explicitly wanted; a failure can then not be undone and a warning says so.
    type: bool
    default: true
  backup_dir:
    description:
      - Directory for the backups; created with mode 0700.
      - Required unless O(backup=false).
    type: path
  compression:
    description:
      - Compression of the backup stream. V(zstd) needs the C(zstd) binary.
      - V(auto) is V(none) on PostgreSQL (its backup is C(pg_dump)'s custom format, which
        C(pg_dump) compresses itself), and on MySQL/MariaDB and SQLite V(zstd) when the
        C(zstd) binary is installed, else V(gzip).
    type: str
    choices: [auto, gzip, zstd, none]
    default: auto
  keep:
    description:
      - After a backup, keep only the newest O(keep) backups of this database in O(backup_dir)
        (never the one just taken). Keep all when not set.
    type: int
  lock_timeout:
    description:
      - Seconds to wait for B(another dbsafe run's) migration lock (the run lock, taken before the
        backup) before failing with the holder's name. It does not bound how long a migration's
        statements wait for table locks held by the application; that is O(db_lock_timeout).
    type: int
    default: 300
  db_lock_timeout:
    description:
      - Seconds each statement of the migrate - schema operations, C(RunSQL) and C(RunPython)
        alike - may wait for a table or row lock held by another session (PostgreSQL
        C(lock_timeout); MariaDB/MySQL C(lock_wait_timeout) for metadata locks and
        C(innodb_lock_wait_timeout) for rows; SQLite C(busy_timeout)), set on the migrating
        connection. A DDL statement queued behind a long transaction makes every later query on
        that table queue behind it; this bounds that queue to O(db_lock_timeout) seconds.
      - A step that gave up waiting and left nothing behind (PostgreSQL and SQLite roll the
        step's transaction back; on MariaDB/MySQL, where DDL commits as it goes, only when no
        statement of the step that changes anything had run) is tried again after a backoff, up
        to O(db_lock_retries) times, without a restore. After partial DDL, or with the retries
        used up after earlier steps were applied, the backup is restored as for any failure.
      - When the retries are used up the task fails naming the sessions that hold locks
        (PostgreSQL pid, user, application; MariaDB/MySQL connection id, user, client; since
        when, the first line of their query) and the database's state, checked.
      - V(0) leaves the server's own setting (PostgreSQL waits forever by default).
    type: int
    default: 5
  db_lock_retries:
    description:
      - How many times a step that gave up waiting for a lock (O(db_lock_timeout)) is tried again,
        with exponential backoff and jitter between tries (about 1, 2, 4, 8... seconds, each
        0.5x to 1.5x, at most 30). V(0) fails at the first timeout.
    type: int
    default: 5
  db_statement_timeout:
    description:
      - Seconds any single statement of the migrate may run (PostgreSQL C(statement_timeout),
        MariaDB C(max_statement_time); MySQL's C(max_execution_time) covers only C(SELECT); SQLite
        has none). A statement that runs longer fails the migrate, which is restored like any
        failure, and is not retried. Not set, there is no limit.
    type: int
  terminate_blocking_sessions:
    description:
      - When the restore after a failure finds other sessions holding table locks in the
        database, end them first (PostgreSQL C(pg_terminate_backend); MariaDB/MySQL
        C(KILL CONNECTION) of the sessions with an open transaction, or without the PROCESS
        privilege of the user's other sessions on the database; another user's session needs
        CONNECTION ADMIN or SUPER, a refusal fails the run before the restore). For a service
        window in which the application is meant to be stopped.
      - Without it the restore waits up to 60 seconds for those locks and then fails, naming
        each session (PostgreSQL pid, user, application; MariaDB/MySQL connection id, user,
        client, database; since when and the first line of its query).
    type: bool
    default: false
  track_checksums:
    description:
      - Record a checksum of what each applied migration does, in the table
        C(dbsafe_migration_checksums) of the project's database, and refuse (unless
        O(allow_edited)) when an applied migration was edited afterwards.
      - The table is created by the first migrate that runs (under the lock, never in check
        mode or a refused run), with the checksums of every migration applied by then as the
        baseline; after each migrate the applied steps' checksums are recorded and those of
        unapplied migrations deleted. Backups keep the table; the schema drift check and
        RV(row_changes) leave it out.
      - The checksum is over the migration's operations as Django deconstructs them, so that
        comments and formatting do not count - class names and arguments (positional or by
        keyword alike), RunSQL's SQL without comments and with whitespace normalised, and the
        syntax tree of a function defined in the migration's file (RunPython's), without
        comments and docstrings. Dependencies do not count, nor do Django's own apps' migrations
        (a Django upgrade edits them). A third-party app's upgrade that edits its applied
        migrations is reported like the project's own edits.
      - V(false) - the table is neither read nor written.
    type: bool
    default: true
  restore_login_user:
    description:
      - A privileged account of the same server that the restore after a failure (and the
        restore of a run that died while migrating) logs in as, on the same database, for
        objects the application's user cannot drop and re-create (a PostgreSQL extension a
        superuser created, a MariaDB view with C(DEFINER=root)).
      - When set, the preflight's restorability check is made for this user instead of the
        application's; the backup, the snapshots and the migrate keep the application's
        connection.
      - Its password reaches the client tools like the application's does (C(PGPASSWORD) in
        the process environment, a private option file for MySQL), never on a command line.
    type: str
  restore_login_password:
    description:
      - The password of O(restore_login_user).
    type: str
  skip_checks:
    description:
      - Migrate although Django's system checks report an error, like
        C(manage.py migrate --skip-checks). Without it the checks gate the migrate exactly as
        C(manage.py migrate) does (every tag, this database, silenced checks stay silent).
        An error or critical message refuses the run before anything is touched.
      - Recorded in the result (RV(skip_checks)) with a warning.
    type: bool
    default: false
  restore_lock_wait:
    description:
      - Seconds the restore after a failed migrate waits for table locks other sessions hold, before it gives up
        and names them (unless O(terminate_blocking_sessions) ends them first).
    type: int
    default: 60
  max_risk:
    description:
      - The highest risk the plan may have (see RV(risks)); a plan with an operation above it
        is refused in the preflight, before the lock, the backup or anything else, with the
        operations and their reasons in the message. Without it there is no limit.
      - Levels, lowest first - V(safe) (metadata only, instant or online), V(locks) (a lock that
        blocks writes or reads for a time that grows with the table, or C(RunSQL)/C(RunPython),
        which cannot be analysed), V(incompatible) (code still running breaks - a dropped or
        renamed column or table, NOT NULL without a database default, a type change),
        V(data_loss).
    type: str
    choices: [safe, locks, incompatible, data_loss]
  online:
    description:
      - Migrate while the application keeps serving, for a release whose every pending operation
        is V(safe) for the running code (see RV(risks)), forwards and reversible; a plan with
        anything else is refused before anything is touched, with RV(online_blockers) in the
        message.
      - The lock, the backup, the database's lock timeouts and the verification are as without it.
        What differs is a failure - the application wrote rows meanwhile, which restoring the
        backup would throw away - so the migrations this run applied (and, on MySQL/MariaDB, the
        operations the failed migration had already run) are undone by Django's reverse
        operations, and the result is proven - schema and C(django_migrations) equal their state
        before the run, no table has fewer rows (RV(rows_written_meanwhile) lists what the
        application added). When that cannot be proven nothing is restored automatically; the
        message says how to restore the backup by hand once the application is stopped.
      - Cannot be combined with O(downtime).
    type: bool
    default: false
  stage:
    description:
      - One stage of a split online deploy (see RV(stages)); needs O(online).
      - V(expand) migrates only the migrations safe for the code still running (before the new code is
        rolled out), app by app, never one of the contract stage; refused when the plan cannot be split.
      - V(contract) migrates the rest - migrations that only remove (C(RemoveField), C(DeleteModel)) or
        are marked to run after the deploy (django-safemigrate C(Safe.after_deploy()), django-syzygy
        C(Stage.POST_DEPLOY)) - once no host runs the previous code; refused while expand migrations are
        pending. A failure there undoes and restores nothing (a removal's reverse would bring the column
        back empty, and the running code uses none of it); the message lists what is applied and what not.
      - V(all) (the default) migrates the whole plan.
    type: str
    choices: [all, expand, contract]
    default: all
  downtime:
    description:
      - Stop the application, switch its code, migrate and start it again, all in this one
        task, so the application is down only for the work itself.
      - Django's own framework is loaded B(before) the stop; the project (settings, models,
        migrations) is loaded only after the O(downtime.code) command, from O(project_path),
        so the migration runs the new code, as C(manage.py migrate) would.
      - On any failure before the migration is verified the database is restored as usual,
        then O(downtime.code_back) and O(downtime.start) run and the task fails saying so. When
        the B(restore) fails, the application is left stopped.
      - The commands are argv lists run without a shell. Not run in check mode (the result's
        C(downtime.would_run) lists them).
    type: dict
    suboptions:
      services:
        description:
          - systemd units of the application, stopped and started with C(systemctl);
            O(downtime.stop) and O(downtime.start) are then ignored.
        type: list
        elements: str
        default: []
      stop:
        description: Stops the application (or puts it into maintenance).
        type: list
        elements: str
        default: []
      code:
        description: Brings the code in O(project_path) to the revision to migrate, after the stop.
        type: list
        elements: str
        default: []
      code_back:
        description: Puts the previous code back after a failure, before the start.
        type: list
        elements: str
        default: []
      code_after_migrate:
        description:
          - Run O(downtime.code) after the migration instead of before it (a rollback, the
            older code no longer has the migrations to unapply). A failure then leaves the
            code as it was.
        type: bool
        default: false
      start:
        description: Starts the application again, after success and after a failure.
        type: list
        elements: str
        default: []
      reload:
        description: Not used by this module (it stops and starts); accepted so that the same options serve M(dbsafe.django.django_service).
        type: list
        elements: str
        default: []
      status:
        description: Not used by this module (the application is always started again); accepted so that the same options serve M(dbsafe.django.django_service).
        type: list
        elements: str
        default: []
      environment:
        description:
          - Environment variables for the commands, set as their process environment (never
            on a command line).
        type: dict
        default: {}
      release_link:
        description:
          - A symlink naming the release's virtualenv (see M(dbsafe.django.django_release_venv)).
            With O(downtime.release_venv), the code step points it at that venv (after
            O(downtime.code)) and the code-back step points it at O(downtime.release_venv_back)
            (or removes it when that is empty). Nothing happens when both name the same venv.
        type: path
      release_venv:
        description: The venv O(downtime.release_link) points at after the code step.
        type: path
      release_venv_back:
        description: The venv O(downtime.release_link) points at again when the code is put back.
        type: path
attributes:
  check_mode:
    support: full
    description: Returns the plan and each step's operations; the database is not touched.
  diff_mode:
    support: full
    description: The applied migrations before and after, and the SQL of each step.
notes:
  - The lock is a PostgreSQL advisory lock, a MySQL/MariaDB C(GET_LOCK), or an exclusive lock
    file beside an SQLite database. The lock of a killed run is released by the server.
  - Stop the application (or put it in maintenance) first. Writes between the backup and a
    failure would be lost by the restore, and the proof of the restore would show a difference.
seealso:
  - module: dbsafe.django.django_showmigrations
  - module: dbsafe.django.db_backup
"""

EXAMPLES = r"""
- name: Migrate production safely
  dbsafe.django.django_migrate_guarded:
    project_path: /srv/shop
    virtualenv: /srv/shop/.venv
    settings: shop.settings.production
    backup_dir: /var/backups/shop
    keep: 10
  register: migration

- name: Roll the orders app back to 0002 (data loss acknowledged, backup first)
  dbsafe.django.django_migrate_guarded:
    project_path: /srv/shop
    virtualenv: /srv/shop/.venv
    app: orders
    migration: "0002"
    allow_data_loss: true
    backup_dir: /var/backups/shop

- name: Stop, update, migrate and start in one task (the application is down only for this)
  dbsafe.django.django_migrate_guarded:
    project_path: /srv/shop
    virtualenv: /srv/shop/.venv
    backup_dir: /var/backups/shop
    downtime:
      stop: [systemctl, stop, shop.service]
      code: [git, -C, /srv/shop, reset, --hard, --quiet, 1f3a9c2]
      code_back: [git, -C, /srv/shop, reset, --hard, --quiet, 0b7e4d1]
      start: [systemctl, start, shop.service]
  register: deploy

- name: Show what would run, with the SQL
  dbsafe.django.django_migrate_guarded:
    project_path: /srv/shop
    virtualenv: /srv/shop/.venv
    backup_dir: /var/backups/shop
  check_mode: true
  diff: true
"""

RETURN = r"""
before:
  description: The migration facts before the run, as M(dbsafe.django.django_showmigrations) returns them.
  returned: always
  type: dict
after:
  description: The migration facts after a successful migration.
  returned: when migrations were applied
  type: dict
plan:
  description:
    - The steps, in order, each with C(migration), C(backwards), C(atomic) and its
      C(operations) (each with C(type), for example C(RunPython), C(description),
      C(reversible) and C(detail), what RV(risks) is computed from - the Django class, the
      table, the field before and after); in diff mode each step's C(sql) too.
    - Also in a refused result.
  returned: always
  type: list
  elements: dict
risks:
  description:
    - Per operation of RV(plan), what it will do to its live table on this server (engine and
      version), from the operation's class and fields - C(migration), C(operation), C(type),
      C(table), C(level) (V(safe), V(locks), V(incompatible) or V(data_loss)), C(reasons)
      (sentences, the worst first), and the table's estimated C(rows) and C(bytes) (null for a
      table the plan creates). Also in check mode, diff mode and a refusal.
  returned: once the plan was read
  type: list
  elements: dict
  sample:
    - {migration: books.0006_book_isbn13, operation: Add field isbn13 to book, type: AddField,
       table: books_book, level: locks, rows: 120000, bytes: 18874368,
       reasons: ['the unique index is built while writes to the table wait (CREATE INDEX without CONCURRENTLY; ~120000 rows, 18.0 MB)']}
risk:
  description: The highest C(level) of RV(risks) (V(safe) for an empty plan).
  returned: once the plan was read
  type: str
  sample: locks
code_steps:
  description:
    - The steps of RV(plan) that run code or raw SQL (C(RunPython), C(RunSQL)), each with
      C(migration) and its C(operations); what they do to the data shows only once they ran
      (see RV(row_changes)). The summary (C(msg)) of a check-mode run names them.
  returned: always
  type: list
  elements: dict
  sample: [{migration: books.0007_delete_authors, operations: ['RunPython: Raw Python operation']}]
edited:
  description:
    - The applied migrations (C(app.name)) whose operations changed since their checksum was
      recorded (see O(track_checksums)); the run is refused on them unless O(allow_edited).
      RV(before) has the same under C(edited), and under C(checksums) whether the check is on
      (C(enabled)), has started (C(active)) and how many applied migrations are
      C(recorded) and C(unrecorded).
  returned: once the plan was read
  type: list
  elements: str
  sample: [books.0003_book_author]
row_changes:
  description:
    - After a successful migrate, the tables whose row count changed, each with C(table),
      C(before), C(after) (null where the table did not exist) and C(change), from the
      snapshot taken before migrating and a count afterwards. C(django_migrations) and
      C(dbsafe_migration_checksums) are left out.
  returned: when migrations were applied
  type: list
  elements: dict
  sample: [{table: authors_author, before: 100, after: 60, change: -40}]
skip_checks:
  description: True when O(skip_checks) let a migrate go ahead without Django's system checks.
  returned: when O(skip_checks) was set and there was something to migrate
  type: bool
applied:
  description: The steps migrate ran, each with C(migration), C(action), C(ok) and C(seconds).
  returned: always
  type: list
  elements: dict
  sample: [{migration: books.0002_book_pages, action: applying, ok: true, seconds: 0.012}]
backup:
  description: The backup taken before migrating.
  returned: when a backup was taken
  type: dict
  sample: {path: /var/backups/shop/default-shop-postgresql-20261121T010000000000Z.pgdump, sha256: 9f86d0..., size: 1048576}
interrupted:
  description:
    - What stopped the run, in order of arrival (C(SIGINT), C(SIGTERM), C(SIGHUP), or that the
      task's caller went away).
  returned: when the run was interrupted
  type: list
  elements: str
  sample: [SIGTERM, SIGINT]
lock_waits:
  description:
    - Each time a step gave up waiting for a lock (O(db_lock_timeout)) and was tried again - the
      migration (null between steps), the try's number, the error's first line and the seconds
      waited before the next try.
  returned: when a statement of the migrate waited longer than O(db_lock_timeout)
  type: list
  elements: dict
  sample: [{migration: shop.0042_add_note, attempt: 1, error: canceling statement due to lock timeout, retry_in: 1.21}]
lock_holders:
  description: The sessions that held locks when the retries were used up, in words.
  returned: when the migrate failed because it could not get a lock
  type: str
  sample: "pid 4242 (user shop, application gunicorn, idle in transaction since 2026-12-07T05:00:00Z: SELECT ...)"
online_blockers:
  description:
    - Why the plan cannot run while the application serves (O(online)) - one sentence per
      operation that is not V(safe), unapplied, or has no reverse. Empty when it can.
  returned: when the plan was computed
  type: list
  elements: str
  sample: ["shop.0007_drop_sku RemoveField on shop_item is incompatible: drops column sku ..."]
stages:
  description:
    - How the whole plan splits around a rollout - C(expand) (the migrations safe for the previous code,
      run before it), C(contract) (removals, or marked to run after the deploy) and C(blockers) (why it
      cannot be split; empty when it can).
  returned: when the plan was computed
  type: dict
  sample: {"expand": ["shop.0007_add_note"], "contract": ["shop.0008_drop_sku"], "blockers": []}
undone:
  description:
    - With O(online), after a failure - what Django's reverse operations undid, newest first (the
      failed migration's kept operations first).
  returned: when an online migrate failed
  type: list
  elements: str
  sample: ["shop.0008_add_note (1 of 2 operations)", "shop.0007_add_table"]
rows_written_meanwhile:
  description: With O(online), after a proven undo - rows the application added to each table during the run (kept).
  returned: when an online migrate failed and its undo was proven
  type: dict
  sample: {"shop_order": 42}
restored:
  description: Whether the backup was restored (only ever true in a failed result).
  returned: always
  type: bool
lock:
  description:
    - The lock held from backup to verification, and how long we waited for it.
    - On SQLite, C(holder.taken_over_from) names a holder that died holding the lock (a warning says so too).
  returned: when the database was touched
  type: dict
  sample: {name: 'dbsafe.django:shop', holder: {host: web1, pid: 4242, since: '2026-11-21T01:00:00Z'}, waited: 0.01}
fake:
  description: Whether migrations were faked.
  returned: always
  type: bool
online:
  description: Whether the migrate ran with O(online) (beside the running application).
  returned: always
  type: bool
stage:
  description: The O(stage) this run migrated (V(all), V(expand) or V(contract)).
  returned: always
  type: str
duration:
  description: Seconds the whole run took.
  returned: always
  type: float
timings:
  description: Seconds per phase (introspect, snapshot_before, backup, migrate, restore...).
  returned: always
  type: dict
downtime:
  description:
    - With O(downtime), what the service window did. C(stopped_at) and C(started_at) are
      epoch seconds (C(started_at) is null when the application was not started again),
      C(seconds) the time from the stop until the start finished (or until the task ended),
      C(steps) each command run with its C(rc) and C(seconds).
    - In check mode only C(would_run), the commands by step.
  returned: when O(downtime) is set
  type: dict
  sample:
    stopped_at: 1795050000.12
    started_at: 1795050001.02
    seconds: 0.9
    steps: [{step: stop, argv: [systemctl, stop, shop.service], rc: 0, seconds: 0.21}]
launches:
  description: How many times the project's interpreter was launched.
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dbsafe.django.plugins.module_utils.downtime import (
    SERVICE_OPTIONS,
    ServiceWindow,
)
from ansible_collections.dbsafe.django.plugins.module_utils.errors import DbsafeError
from ansible_collections.dbsafe.django.plugins.module_utils.processes import interruptions
from ansible_collections.dbsafe.django.plugins.module_utils.guard import (
    GUARD_ARGUMENT_SPEC,
    GuardedMigrate,
    GuardOptions,
)
from ansible_collections.dbsafe.django.plugins.module_utils.module_support import (
    fail_with,
    project_for,
    runner_for,
)
from ansible_collections.dbsafe.django.plugins.module_utils.project import (
    PROJECT_ARGUMENT_SPEC,
    PROJECT_MUTUALLY_EXCLUSIVE,
)

DOWNTIME_OPTION = dict(type="dict", options=SERVICE_OPTIONS)


def main():
    module = AnsibleModule(
        argument_spec=dict(PROJECT_ARGUMENT_SPEC, downtime=DOWNTIME_OPTION,
                           **GUARD_ARGUMENT_SPEC),
        mutually_exclusive=PROJECT_MUTUALLY_EXCLUSIVE + [("fake", "fake_initial"), ("online", "downtime")],
        required_by={"migration": "app"},
        required_if=[("backup", True, ["backup_dir"])],
        supports_check_mode=True,
    )
    params = module.params
    options = GuardOptions.from_params(params)
    if options.problems():
        module.fail_json(msg="; ".join(options.problems()))
    runner = runner_for(module)
    window = None
    if params["downtime"] is not None:
        window = ServiceWindow.from_params(runner, params["downtime"],
                                           mask=module.no_log_values.add)
    guard = GuardedMigrate(project_for(module, runner), runner, options,
                           check_mode=module.check_mode, diff=module._diff, warn=module.warn,
                           window=window)
    # SIGINT (Ctrl-C), SIGTERM, SIGHUP and the task's caller going away (Ansible's task timeout)
    # stop the work in order: restored, or finished, then a failed result that says so.
    interruptions.install()
    try:
        result = guard.run()
    except DbsafeError as error:
        interruptions.mode = "finish"  # the outcome is known: report it, whatever comes now
        fail_with(module, error, **guard.result)
    interruptions.mode = "finish"
    module.exit_json(**result)


if __name__ == "__main__":
    main()
