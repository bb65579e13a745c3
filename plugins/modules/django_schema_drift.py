#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: django_schema_drift
short_description: Prove that a live database's schema is what its applied migrations build
version_added: 0.1.0
description:
  - Reads which migrations are applied in the live database, builds a scratch database on the
    same server (a temporary file beside it for SQLite), migrates it to exactly that applied set
    (not to the latest state), and compares the two schemas.
  - Compares tables; columns with their type, nullability, default and length or precision;
    primary keys; unique, check and foreign key constraints (with their targets and on-delete
    rules); indexes (columns, uniqueness). Column order is never drift.
  - Constraint and index names that Django generated differently in another history do not
    count as drift; they are returned apart, in RV(harmless).
  - The scratch database is dropped in every case, also when the module fails or is
    interrupted (SIGTERM, SIGINT or SIGHUP stop the project's interpreter, drop the scratch
    database, and fail the task saying so). Only SIGKILL can leave it behind; its name starts
    with the live database's name followed by C(_drift_).
  - Never changes the live database, so O(fail_on_drift) is the only way it fails over drift and
    the task is never changed.
author:
  - dbsafe.django developers (@dbsafe)
extends_documentation_fragment:
  - dbsafe.django.project
options:
  fail_on_drift:
    description:
      - Fail the task when the schema drifted (the result still carries every difference).
    type: bool
    default: false
  ignore_tables:
    description:
      - Leave these tables out of the comparison (shell-style patterns such as V(celery_*)), for
        tables that are made outside migrations on purpose, for example by
        C(manage.py createcachetable).
      - On PostgreSQL a table outside the C(public) schema is named C(schema.table).
    type: list
    elements: str
    default: []
  lock_timeout:
    description:
      - Seconds to wait for the migration lock (the one M(dbsafe.django.django_migrate_guarded),
        M(dbsafe.django.db_backup) restores and M(dbsafe.django.django_reset) hold) before the live
        schema is read, so a migrate or restore under way is never taken for drift. The lock is
        held only while the live schema is read, not while the scratch database is built.
    type: int
    default: 300
  scratch_database:
    description:
      - Where the scratch database goes when the project's database user may not create one on
        the live server. Every option left out is taken from the project's database settings.
      - The scratch database needs a user who may create and drop databases, with C(CREATEDB) on
        PostgreSQL; on MySQL/MariaDB the C(CREATE) and C(DROP) privileges on databases whose
        names start with O(scratch_database.name_prefix).
    type: dict
    suboptions:
      host:
        description: Server host.
        type: str
      port:
        description: Server port.
        type: int
      user:
        description: A user who may create and drop databases there.
        type: str
      password:
        description:
          - That user's password. Without it, the project's password is used only when
            O(scratch_database.user) is the project's user.
        type: str
      name_prefix:
        description:
          - The scratch database's name is this prefix followed by 8 random hex digits.
          - Defaults to the live database's name followed by C(_drift_) (shortened to fit the
            server's name limit).
          - For SQLite, a path prefix for the scratch file; by default it goes beside the live
            file, or into the temporary directory when that directory is not writable.
        type: str
attributes:
  check_mode:
    support: full
    description:
      - The module only reads the live database, so it runs the same in check mode; the scratch
        database is its own and is dropped again.
  diff_mode:
    support: none
    description: The module changes nothing.
notes:
  - Two launches of the project's interpreter, one to read the live facts and one to migrate
    the scratch database.
  - The live database is read once with the engine's snapshot (the catalog, and for each table
    a row count and content hash), in one read-only transaction where the engine has them.
  - Only the migrations run on the scratch database; C(post_migrate) handlers (content types,
    permissions) do not, as they write rows, not schema.
  - Applied migrations whose files are gone (ghosts) cannot be replayed; they are listed in
    RV(not_replayed) with a warning, and whatever they built shows up as drift.
  - The scratch database is built by the project's current Django version. A database built by
    a much older one can differ in ways Django does not migrate (for example serial instead of
    identity columns on PostgreSQL since Django 4.1); those are reported as drift.
  - On PostgreSQL extensions that migrations do not create (for example created by hand in the
    live database) are missing in the scratch database, which is created from C(template0).
seealso:
  - module: dbsafe.django.django_showmigrations
  - module: dbsafe.django.django_migrate_guarded
"""

EXAMPLES = r"""
- name: Check that production's schema is what its migrations build
  dbsafe.django.django_schema_drift:
    project_path: /srv/shop
    virtualenv: /srv/shop/.venv
    settings: shop.settings.production
  register: drift

- name: Show the differences
  ansible.builtin.debug:
    msg: "{{ drift.summary_lines }}"
  when: drift.drift

- name: Fail a deployment on drift, the scratch database on a server where the user may create one
  dbsafe.django.django_schema_drift:
    project_path: /srv/shop
    virtualenv: /srv/shop/.venv
    environment:
      DATABASE_URL: "{{ shop_database_url }}"
    fail_on_drift: true
    ignore_tables: [django_cache]
    scratch_database:
      host: scratch-db.internal
      user: drift
      password: "{{ drift_scratch_password }}"
      name_prefix: shop_drift_
"""

RETURN = r"""
drift:
  description: Whether the live schema differs from what its applied migrations build.
  returned: success, and on failure through O(fail_on_drift)
  type: bool
  sample: true
differences:
  description:
    - Every difference, by table. RV(differences[].kind) is one of C(missing_table),
      C(extra_table), C(missing_column), C(extra_column), C(column), C(primary_key), C(unique),
      C(foreign_keys), C(checks) or C(indexes); C(expected) is what the migrations build,
      C(live) what the live database has (null where there is nothing).
  returned: success
  type: list
  elements: dict
  contains:
    table:
      description: The table.
      type: str
      returned: always
    kind:
      description: What differs.
      type: str
      returned: always
    expected:
      description: The part of the schema the migrations build.
      type: raw
      returned: always
    live:
      description: The same part in the live database.
      type: raw
      returned: always
  sample:
    - table: books_book
      kind: extra_column
      expected: null
      live: {rating: {type: integer, nullable: true, default: null}}
harmless:
  description:
    - Differences in constraint and index names only (same definitions, other names), as two
      histories produce; never drift. Same form as RV(differences) with C(kind) C(names).
  returned: success
  type: list
  elements: dict
  sample: []
summary:
  description: A short sentence for people.
  returned: success
  type: str
  sample: >-
    Drift: 1 difference(s) between postgresql database 'shop' at db1:5432 and what its 23
    applied migrations build: column books_book.rating is not built by the migrations.
summary_lines:
  description: One short line per difference (RV(differences) has the full definitions).
  returned: success
  type: list
  elements: str
  sample: ["column books_book.rating is not built by the migrations", "table django_session is missing"]
applied:
  description: The live database's applied migrations (C(app.name)), which the scratch database replayed.
  returned: success
  type: list
  elements: str
  sample: [authors.0001_initial, books.0001_initial]
not_replayed:
  description: Applied migrations that could not be replayed because their files are gone.
  returned: success
  type: list
  elements: str
  sample: []
ignored_tables:
  description: The tables that O(ignore_tables) left out.
  returned: success
  type: list
  elements: str
  sample: [django_cache]
database:
  description: The live database (never the password).
  returned: success
  type: dict
  sample: {engine: postgresql, name: shop, host: db1, port: 5432, user: shop, alias: default}
scratch:
  description: The scratch database and what became of it (never the password).
  returned: success, and on failure once it was created
  type: dict
  sample: {engine: postgresql, name: shop_drift_1a2b3c4d, host: db1, port: 5432, user: shop,
           alias: default, created: true, dropped: true}
django_version:
  description: The project's Django version.
  returned: success
  type: str
  sample: 5.2.19
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dbsafe.django.plugins.module_utils.drift import DriftOptions, SchemaDrift
from ansible_collections.dbsafe.django.plugins.module_utils.errors import DbsafeError
from ansible_collections.dbsafe.django.plugins.module_utils.module_support import (
    fail_with,
    project_for,
    runner_for,
)
from ansible_collections.dbsafe.django.plugins.module_utils.project import (
    PROJECT_ARGUMENT_SPEC,
    PROJECT_MUTUALLY_EXCLUSIVE,
)

SCRATCH_OPTIONS = dict(
    host=dict(type="str"),
    port=dict(type="int"),
    user=dict(type="str"),
    password=dict(type="str", no_log=True),
    name_prefix=dict(type="str"),
)


def main():
    argument_spec = dict(
        PROJECT_ARGUMENT_SPEC,
        fail_on_drift=dict(type="bool", default=False),
        ignore_tables=dict(type="list", elements="str", default=[]),
        scratch_database=dict(type="dict", options=SCRATCH_OPTIONS),
        lock_timeout=dict(type="int", default=300),
    )
    module = AnsibleModule(argument_spec=argument_spec,
                           mutually_exclusive=PROJECT_MUTUALLY_EXCLUSIVE, supports_check_mode=True)
    params = module.params
    if params["lock_timeout"] < 0:
        module.fail_json(msg="lock_timeout must not be negative")
    options = DriftOptions(params["database"], params["fail_on_drift"],
                           params["scratch_database"], params["ignore_tables"], params["lock_timeout"])
    try:
        runner = runner_for(module)
        result = SchemaDrift(project_for(module, runner), runner, options, module.warn).run()
    except DbsafeError as error:
        fail_with(module, error)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
