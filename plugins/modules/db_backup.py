#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: db_backup
short_description: Verified, streaming backups and restores of a Django project's database and media
version_added: 0.1.0
description:
  - Backs up, restores, verifies and prunes backups of SQLite, PostgreSQL and MySQL/MariaDB
    databases with each engine's own tool, streamed through compression into a private
    directory.
  - A file with a final name is always a complete, verified backup; a JSON manifest beside it
    records the engine, database, size, sha256, tool versions and the Django migration state.
  - A restore checks the backup completely (sha256, size, engine, compressed stream, and that
    the dump is complete - the dump tool's last line, or a PostgreSQL custom archive or dump
    directory read to its end by C(pg_restore)) before it touches the database. The same checks
    run when the backup is written, so a dump cut short is refused even when its tool exited 0.
    One exception saves a full read. A PostgreSQL custom archive restored in one stream
    (O(jobs=1)) whose manifest says it was read to its end when written is checked by size and
    sha256 only. Equal hashes mean the very bytes that passed that read, and the restore itself
    runs in one transaction that commits only after C(pg_restore) read the whole archive.
    O(state=verify) always reads everything.
  - A PostgreSQL V(directory) format backup is kept as the directory C(pg_dump -j) wrote
    (C(<name>.pgdir), mode 0700, its files 0600), not packed into one file. Its manifest lists
    every file with its size and sha256 (C(files)); its C(sha256) is the sha256 of that list. A
    restore refuses it when any file is missing, extra, truncated or changed, and runs
    C(pg_restore -j) straight from it. Directory backups of earlier versions
    (one C(<name>.pgdir.tar) file) still verify and restore.
  - The connection comes from the project's C(settings.DATABASES) (O(project_path) and the
    other project options) or from O(engine), O(name) and the other connection options.
author:
  - dbsafe.django developers (@dbsafe)
extends_documentation_fragment:
  - dbsafe.django.project
options:
  project_path:
    description:
      - Directory that holds the project's C(manage.py); the connection and C(MEDIA_ROOT) are
        read from its settings.
      - Not needed with an explicit connection (O(engine) and O(name)).
    type: str
    required: false
  state:
    description:
      - V(dump) takes a backup, V(restore) restores O(src) or the newest backup of this
        database, V(verify) checks a backup without restoring it, V(pruned) keeps only the
        O(keep) newest backups of this database.
    type: str
    choices: [dump, restore, verify, pruned]
    default: dump
  backup_dir:
    description:
      - Directory of the backups, created with mode 0700; backups and manifests are 0600.
      - Required, except for O(state=restore) and O(state=verify) with O(src), which default
        to the directory of O(src) (a restore's safety backup goes there too).
    type: path
  safety_backup:
    description:
      - With O(state=restore), first take a verified backup of the database (and, with
        O(include_media), the media) that the restore overwrites, into O(backup_dir). The
        result's C(safety_backup) says where it is.
      - Not taken when O(restore_into) names a database that does not exist yet.
      - It is taken under the run lock, before the database or the media are touched; every
        failure of the restore names it.
    type: bool
    default: true
  lock_timeout:
    description:
      - Seconds a O(state=restore) waits for the run lock of the database (the lock a guarded
        migrate, a reset or another restore of it holds) before it fails without changing
        anything. A restore never runs while one of those does.
    type: int
    default: 300
  restore_login_user:
    description:
      - A privileged account of the same server that O(state=restore) logs in as to drop and
        re-create the database's objects, for objects the connection's user cannot re-create
        (a PostgreSQL extension a superuser created, a MariaDB view with C(DEFINER=root)).
        PostgreSQL objects keep the owners the backup recorded.
      - With O(state=verify) the restorability check is made for this user.
      - The safety backup and the run lock keep the connection's own user. The password
        reaches the client tools like that user's (environment, private option file), never
        on a command line.
    type: str
  restore_login_password:
    description:
      - The password of O(restore_login_user).
    type: str
  restore_method:
    description:
      - How a MySQL/MariaDB restore replaces the database. V(swap) loads the dump into a scratch
        database C(<name>__dbsafe_restore_<token>) on the same server and swaps its tables in
        with one atomic C(RENAME TABLE), so a failure or a kill leaves the database as it was
        (views, triggers, routines and events are recreated right after the swap). It needs
        the CREATE and DROP privileges on C(<name>%) databases; without them the restore fails
        before anything is touched.
      - V(in_place) empties the database and runs the dump in it (no CREATE privilege needed;
        a failure leaves the database partly restored).
      - SQLite and PostgreSQL (one job, every format) restores are all-or-nothing already and ignore it.
    type: str
    choices: [swap, in_place]
    default: swap
  src:
    description:
      - The backup to restore or verify (its path). Defaults to the newest backup of this
        database in O(backup_dir).
      - The newest is the one with the highest C(sequence) among this database's backups
        (same label, engine, database name and server identity, see the notes); the writer's
        clock plays no part. A manifest among them that cannot be read, or whose backup file
        is gone, is an error that names it.
    type: path
  allow_other_database:
    description:
      - Let O(state=restore) restore a backup taken from another database (another name, or
        the same name on another server, e.g. production's backup into a development
        database, or O(restore_into)). Without it such a restore is refused before anything
        is touched. The result's C(restored_into_other_database) says whether it happened.
    type: bool
    default: false
  label:
    description:
      - Name prefix of the backups of this database. Defaults to C(<alias>-<database name>).
    type: str
  format:
    description:
      - Dump format. PostgreSQL V(custom) (default), V(plain) or V(directory) (parallel with
        O(jobs); stored as a directory, see above); MySQL/MariaDB V(sql); SQLite V(sqlite).
    type: str
  jobs:
    description:
      - Parallel jobs for PostgreSQL's directory format dump and for C(pg_restore).
      - A restore with more than one job is B(not) all-or-nothing, because parallel jobs cannot share
        one transaction; it empties the database first and a failure leaves it partly restored. With
        one job (the default) a restore of every format is one transaction.
    type: int
    default: 1
  compression:
    description:
      - Compression of the backup stream. V(auto) is V(none) for the formats C(pg_dump)
        compresses itself (PostgreSQL V(custom) and V(directory)); for the others (PostgreSQL
        V(plain), MySQL/MariaDB V(sql), SQLite V(sqlite)) it is V(zstd) when the C(zstd)
        binary is installed, else V(gzip).
      - The PostgreSQL directory format takes only V(auto) or V(none), because C(pg_dump) compresses
        each of its files itself.
    type: str
    choices: [auto, gzip, zstd, none]
    default: auto
  keep:
    description:
      - After a dump, or with O(state=pruned), keep only the newest O(keep) backups of this
        database (never the one just taken). Must be 1 or more. Other databases' backups in the
        same O(backup_dir), also with the same O(label), are never counted or removed.
    type: int
  include_media:
    description:
      - Also archive (dump) or restore C(MEDIA_ROOT). A restore unpacks beside the media
        directory and swaps it in, so a failed extract leaves the old media in place.
    type: bool
    default: false
  media_root:
    description:
      - The media directory; defaults to the project's C(settings.MEDIA_ROOT).
    type: path
  restore_into:
    description:
      - Restore into this database name (created when missing) instead of the configured one.
        For SQLite, a file path. Without O(src) the newest backup of the configured database
        is restored. Needs O(allow_other_database).
    type: str
  engine:
    description:
      - Explicit connection without a project. V(postgresql), V(mysql) (also MariaDB) or
        V(sqlite).
    type: str
    choices: [sqlite, postgresql, mysql]
  host:
    description: Database host for an explicit connection.
    type: str
  port:
    description: Database port for an explicit connection.
    type: int
  name:
    description: Database name (SQLite, the file) for an explicit connection.
    type: str
  user:
    description: Database user for an explicit connection.
    type: str
  password:
    description:
      - Database password for an explicit connection. Never put on a command line
        (PostgreSQL gets it in the environment, MySQL in a 0600 option file).
    type: str
attributes:
  check_mode:
    support: full
    description: Says what it would do; writes no file and touches no database.
  diff_mode:
    support: full
    description: The list of backups of this database before and after.
notes:
  - C(SIGINT), C(SIGTERM), C(SIGHUP) or the task's caller going away (an Ansible task C(timeout)) before a
    restore touches the database stop the run with nothing changed; once the restore runs it goes to its end
    (each engine's restore is all-or-nothing) and the result lists them in RV(interrupted).
  - A backup belongs to the database it was taken from. Its manifest records that database
    (C(instance) - engine, host, port, name and the server's own identity - PostgreSQL's
    C(system_identifier), MySQL's C(server_uuid), MariaDB's C(server_uid), for SQLite the host
    name and the file's real path) and a C(sequence) number, one more than the highest of that
    database's backups in the directory when it completes. Two databases are the same when
    engine, name and server identity match. MariaDB's C(server_uid) is computed by the server
    from its host and port, so a MariaDB server moved to another machine counts as another
    server - restore its earlier backups with O(src) and O(allow_other_database).
  - Backups of earlier versions (no C(instance), no C(sequence)) are still found - they belong to
    the database with their engine, database name, host and port - and rank below every numbered
    backup, among themselves by C(created_at); a restore that picks one says so.
  - Needs the engine's client tools on the host that runs the module (C(pg_dump),
    C(pg_restore), C(psql); C(mariadb-dump) or C(mysqldump), C(mariadb) or C(mysql)).
seealso:
  - module: dbsafe.django.django_migrate_guarded
"""

EXAMPLES = r"""
- name: Back up the shop database and its media, keep the 10 newest
  dbsafe.django.db_backup:
    project_path: /srv/shop
    virtualenv: /srv/shop/.venv
    backup_dir: /var/backups/shop
    include_media: true
    keep: 10
  register: shop_backup

- name: Restore the newest backup into a developer database
  dbsafe.django.db_backup:
    state: restore
    engine: postgresql
    host: 127.0.0.1
    name: shop
    user: shop
    password: "{{ vault_shop_db_password }}"
    backup_dir: /var/backups/shop
    label: default-shop
    restore_into: shop_dev
    allow_other_database: true

- name: Verify a backup without restoring it
  dbsafe.django.db_backup:
    state: verify
    project_path: /srv/shop
    virtualenv: /srv/shop/.venv
    backup_dir: /var/backups/shop
    src: "{{ shop_backup.backup.path }}"
"""

RETURN = r"""
backup:
  description:
    - The backup taken, restored or verified (its manifest and path).
    - For a PostgreSQL directory backup C(path) is the directory, C(size) the sum of its files'
      sizes and C(sha256) the sha256 of its manifest's file list (name, size and sha256 of
      each file); the list itself is in the manifest file C(<path>.json).
  returned: success
  type: dict
  sample:
    path: /var/backups/shop/default-shop-postgresql-20261121T010000000000Z.pgdump
    engine: postgresql
    database: shop
    size: 1048576
    sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    compression: none
    format: custom
    media: null
    sequence: 12
    instance:
      engine: postgresql
      host: db1
      port: 5432
      name: shop
      server: "postgresql:7716364735375906975"
pruned:
  description: File names of the backups removed by O(keep).
  returned: when state is dump or pruned
  type: list
  elements: str
safety_backup:
  description: The backup of what the restore overwrote (see O(safety_backup)); null when none was taken.
  returned: when state is restore
  type: dict
restored:
  description: Whether a backup was restored.
  returned: when state is restore
  type: bool
media_restored:
  description: Whether the media directory was replaced from the backup.
  returned: when state is restore
  type: bool
lock:
  description: The run lock the restore held (C(holder)) and the seconds it waited for it (C(waited)).
  returned: when state is restore
  type: dict
restored_into_other_database:
  description: Whether the backup was taken from another database than the one restored into (see O(allow_other_database)).
  returned: when state is restore
  type: bool
interrupted:
  description:
    - The signals (C(SIGINT), C(SIGTERM), C(SIGHUP)) or the caller going away that arrived while the restore
      ran; the restore went on to its end regardless.
  returned: when state is restore
  type: list
  elements: str
verified:
  description: True when the backup is complete and intact.
  returned: when state is verify
  type: bool
database:
  description: The database (never the password).
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dbsafe.django.plugins.module_utils.backup_job import BackupJob
from ansible_collections.dbsafe.django.plugins.module_utils.errors import DbsafeError
from ansible_collections.dbsafe.django.plugins.module_utils.processes import interruptions
from ansible_collections.dbsafe.django.plugins.module_utils.module_support import (
    fail_with,
    project_for,
    runner_for,
)
from ansible_collections.dbsafe.django.plugins.module_utils.project import (
    PROJECT_ARGUMENT_SPEC,
    PROJECT_MUTUALLY_EXCLUSIVE,
)

BACKUP_OPTIONS = dict(
    state=dict(type="str", choices=["dump", "restore", "verify", "pruned"], default="dump"),
    backup_dir=dict(type="path"),
    safety_backup=dict(type="bool", default=True),
    lock_timeout=dict(type="int", default=300),
    restore_method=dict(type="str", choices=["swap", "in_place"], default="swap"),
    restore_login_user=dict(type="str"),
    restore_login_password=dict(type="str", no_log=True),
    src=dict(type="path"),
    label=dict(type="str"),
    format=dict(type="str"),
    jobs=dict(type="int", default=1),
    compression=dict(type="str", choices=["auto", "gzip", "zstd", "none"], default="auto"),
    keep=dict(type="int"),
    include_media=dict(type="bool", default=False),
    media_root=dict(type="path"),
    restore_into=dict(type="str"),
    allow_other_database=dict(type="bool", default=False),
    engine=dict(type="str", choices=["sqlite", "postgresql", "mysql"]),
    host=dict(type="str"),
    port=dict(type="int"),
    name=dict(type="str"),
    user=dict(type="str"),
    password=dict(type="str", no_log=True),
)


def main():
    argument_spec = dict(PROJECT_ARGUMENT_SPEC, **BACKUP_OPTIONS)
    argument_spec["project_path"] = dict(type="str")
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=PROJECT_MUTUALLY_EXCLUSIVE + [("project_path", "engine")],
        required_one_of=[("project_path", "engine")],
        required_by={"engine": "name"},
        supports_check_mode=True,
    )
    if module.params["keep"] is not None and module.params["keep"] < 1:
        module.fail_json(msg="keep must be 1 or more (got %d): pruning every backup is never "
                             "what you want" % module.params["keep"])
    if not module.params["backup_dir"] and not (
            module.params["state"] in ("restore", "verify") and module.params["src"]):
        module.fail_json(msg="backup_dir is required (except to restore or verify a given src)")
    if module.params["jobs"] < 1:
        module.fail_json(msg="jobs must be 1 or more")
    runner = runner_for(module)
    project = project_for(module, runner) if module.params["project_path"] else None
    # SIGINT/SIGTERM/SIGHUP or the caller gone (Ansible's task timeout): before a restore
    # touches the database the run stops, unchanged; a restore under way finishes first.
    interruptions.install()
    try:
        result = BackupJob(module.params, runner, project, module.check_mode).run()
    except DbsafeError as error:
        interruptions.mode = "finish"  # the outcome is known: report it, whatever comes now
        error.msg += interruptions.restore_note()
        fail_with(module, error)
    interruptions.mode = "finish"
    module.exit_json(**result)


if __name__ == "__main__":
    main()
