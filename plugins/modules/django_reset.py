#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: django_reset
short_description: Reset a development database - safety backup, wipe, migrate, fixtures
version_added: 0.4.0
description:
  - Takes a verified safety backup of the project's database, wipes it, migrates it and loads
    the fixtures, under the same lock as M(dbsafe.django.django_migrate_guarded).
  - When any step after the wipe fails (the wipe, the migration, a fixture), the safety backup
    is restored and the task fails naming the step; the database is as it was before.
  - The database itself is never dropped. O(mode=data) runs Django's C(flush) (every row
    goes, the schema stays); O(mode=schema) drops every table, view, sequence and routine
    inside the database, then migrates from scratch. So the database user needs no CREATE
    DATABASE privilege, and the host never ends up without its database.
  - Everything runs in one launch of the project's interpreter; the database credentials come
    from the project's settings (O(environment)), never from a command line.
  - It does not know which hosts are protected. The role C(dbsafe.django.django_migrate)
    (entry point C(reset)) and C(playbooks/reset.yml) refuse production and protected hosts
    before they call it.
author:
  - dbsafe.django developers (@dbsafe)
extends_documentation_fragment:
  - dbsafe.django.project
options:
  mode:
    description:
      - V(data) empties every table (C(manage.py flush)); V(schema) drops every object and
        migrates from an empty database.
    type: str
    choices: [data, schema]
    default: data
  fixtures:
    description: Fixtures to load after the migration (C(manage.py loaddata)), in order.
    type: list
    elements: str
    default: []
  backup:
    description:
      - Take a verified safety backup first (restored when a later step fails).
      - V(false) only when explicitly wanted; a warning says the data cannot be brought back.
    type: bool
    default: true
  backup_dir:
    description: Directory of the safety backup (created with mode 0700). Required unless O(backup=false).
    type: path
  compression:
    description:
      - Compression of the safety backup, as M(dbsafe.django.db_backup)'s O(dbsafe.django.db_backup#module:compression).
    type: str
    choices: [auto, gzip, zstd, none]
    default: auto
  lock_timeout:
    description: Seconds to wait for a guarded migrate or another reset holding the database's lock.
    type: int
    default: 300
  restore_login_user:
    description:
      - A privileged account of the same server that the restore of the safety backup after a
        failed step logs in as, for objects the application's user cannot drop and re-create
        (a PostgreSQL extension a superuser created, a MariaDB view with C(DEFINER=root)).
        The safety backup and the reset itself keep the application's connection.
    type: str
  restore_login_password:
    description:
      - The password of O(restore_login_user); it reaches the clients like the application's,
        never on a command line.
    type: str
attributes:
  check_mode:
    support: full
    description: Connects and says what would run (C(would_run)); nothing is changed.
  diff_mode:
    support: none
    description: No diff is returned.
seealso:
  - module: dbsafe.django.django_migrate_guarded
  - module: dbsafe.django.db_backup
"""

EXAMPLES = r"""
- name: Empty the developer's database and load the demo data
  dbsafe.django.django_reset:
    project_path: /home/dev/shop
    virtualenv: /home/dev/shop/.venv
    mode: data
    fixtures: [demo]
    backup_dir: /home/dev/backups

- name: Rebuild the schema from the migrations
  dbsafe.django.django_reset:
    project_path: /home/dev/shop
    virtualenv: /home/dev/shop/.venv
    mode: schema
    backup_dir: /home/dev/backups
"""

RETURN = r"""
mode:
  description: The mode of the reset.
  returned: always
  type: str
database:
  description: The database reset (engine, name, host, port, user, alias; no password).
  returned: when the project could be read
  type: dict
backup:
  description: The safety backup (path, sha256, size, ...).
  returned: when one was taken
  type: dict
steps:
  description: The steps that ran, in order (C(flush) or C(drop_objects), C(migrate), C(loaddata)).
  returned: always
  type: list
  elements: dict
applied:
  description: The migrations applied, as M(dbsafe.django.django_migrate_guarded) returns them.
  returned: when the migration ran
  type: list
  elements: dict
restored:
  description: Whether the safety backup was restored after a failure.
  returned: always
  type: bool
would_run:
  description: In check mode, the steps that would run.
  returned: in check mode
  type: list
  elements: str
timings:
  description: Seconds per step.
  returned: always
  type: dict
duration:
  description: Seconds the whole reset took.
  returned: always
  type: float
launches:
  description: How many times the project's interpreter was launched.
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule

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
from ansible_collections.dbsafe.django.plugins.module_utils.reset import MODES, Reset

RESET_OPTIONS = dict(
    mode=dict(type="str", choices=list(MODES), default="data"),
    fixtures=dict(type="list", elements="str", default=[]),
    backup=dict(type="bool", default=True),
    backup_dir=dict(type="path"),
    compression=dict(type="str", choices=["auto", "gzip", "zstd", "none"], default="auto"),
    lock_timeout=dict(type="int", default=300),
    restore_login_user=dict(type="str"),
    restore_login_password=dict(type="str", no_log=True),
)


def main():
    module = AnsibleModule(
        argument_spec=dict(PROJECT_ARGUMENT_SPEC, **RESET_OPTIONS),
        mutually_exclusive=PROJECT_MUTUALLY_EXCLUSIVE,
        required_if=[("backup", True, ["backup_dir"])],
        supports_check_mode=True,
    )
    if module.params["lock_timeout"] < 0:
        module.fail_json(msg="lock_timeout must not be negative")
    runner = runner_for(module)
    reset = Reset(project_for(module, runner), runner, module.params,
                  check_mode=module.check_mode, warn=module.warn)
    # SIGINT/SIGTERM/SIGHUP or the caller gone (Ansible's task timeout): the step in flight
    # stops and the safety backup is restored before the task fails, saying so.
    interruptions.install()
    try:
        result = reset.run()
    except DbsafeError as error:
        interruptions.mode = "finish"  # the outcome is known: report it, whatever comes now
        fail_with(module, error, **reset.result)
    interruptions.mode = "finish"
    module.exit_json(**result)


if __name__ == "__main__":
    main()
