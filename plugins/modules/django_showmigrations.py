#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: django_showmigrations
short_description: Gather a Django project's migration state as facts
version_added: 0.1.0
description:
  - Boots the Django project once, in its own interpreter, and returns its migration state
    as facts. Every migration per app with whether and when it was applied, the plan that
    C(manage.py migrate) would run, conflicts, ghosts, inconsistent history and model changes
    that have no migration yet.
  - Only reads. It never writes to the database; a missing SQLite file is reported as an empty
    database and is not created.
  - The database password is never returned.
author:
  - dbsafe.django developers (@dbsafe)
extends_documentation_fragment:
  - dbsafe.django.project
options:
  apps:
    description:
      - Limit the facts to these app labels. An unknown label is an error.
    type: list
    elements: str
    default: []
  track_checksums:
    description:
      - Compare each applied migration with the checksum recorded when it was applied (by
        M(dbsafe.django.django_migrate_guarded), in the table C(dbsafe_migration_checksums))
        and list the edited ones in RV(edited). Read only; V(false) - the table is not read.
    type: bool
    default: true
  expect:
    description:
      - Check the state against what a migration should have left, and return the
        C(problems). The deploy's verification on every app host uses it.
    type: dict
    suboptions:
      plan:
        description:
          - The steps that ran (a guarded migrate's C(plan)), each with C(migration) and
            C(backwards) - forward steps must be applied, backwards steps not.
        type: list
        elements: dict
        default: []
      complete:
        description: Nothing may be left to migrate (a full migrate, not one app to a target).
        type: bool
        default: true
attributes:
  check_mode:
    support: full
    description: The module only reads, so it runs the same in check mode.
  diff_mode:
    support: none
    description: The module changes nothing.
notes:
  - One launch of the project's interpreter per call.
seealso:
  - module: dbsafe.django.django_migrate_guarded
"""

EXAMPLES = r"""
- name: Gather the migration state of the shop project
  dbsafe.django.django_showmigrations:
    project_path: /srv/shop
    virtualenv: /srv/shop/.venv
    settings: shop.settings.production
  register: migrations

- name: Refuse to deploy over ghosts (applied migrations whose files are gone)
  ansible.builtin.assert:
    that: migrations.ghosts | length == 0
    fail_msg: "Ghost migrations: {{ migrations.ghosts | join(', ') }}"

- name: A project in a compose service, one app only
  dbsafe.django.django_showmigrations:
    project_path: /app
    python: python
    command_prefix: [docker, compose, -f, /srv/shop/compose.yml, exec, -T, web]
    apps: [orders]
"""

RETURN = r"""
django_version:
  description:
    - The project's Django version. One outside the tested range (3.2 to 6.1) gets a warning
      that names the range.
  returned: success
  type: str
  sample: 5.2.19
boot:
  description:
    - How the project was started. V(manage.py) - its own C(manage.py) ran up to where it hands
      over to Django's command line (whatever it does first, such as
      C(pymysql.install_as_MySQLdb()) or loading a C(.env), happened), then the introspection
      ran instead of a command. V(fallback) - there was no C(manage.py) to run (or it did not
      hand over); C(boot_note) says why.
  returned: success
  type: str
  sample: manage.py
boot_note:
  description: Why the project booted the V(fallback) way.
  returned: when RV(boot) is V(fallback)
  type: str
database:
  description: The database the facts are about (never the password).
  returned: success
  type: dict
  sample: {alias: default, vendor: postgresql, name: shop, host: db1, port: '5432', user: shop}
apps:
  description: Per app label, its migrations in graph order.
  returned: success
  type: dict
  sample:
    books:
      - {name: 0001_initial, applied: true, applied_at: '2026-11-01T10:00:00+00:00'}
      - {name: 0002_book_pages, applied: false, applied_at: null}
plan:
  description: What C(manage.py migrate) would apply, in order, as C(app.name).
  returned: success
  type: list
  elements: str
  sample: [books.0002_book_pages]
unapplied_count:
  description: How many migrations are not applied.
  returned: success
  type: int
  sample: 1
ghosts:
  description:
    - Migrations recorded as applied whose files no longer exist (and that no squash replaces),
      as left behind by a branch switch or a deleted migration.
  returned: success
  type: list
  elements: str
  sample: [books.0007_experiment]
conflicts:
  description: Apps with more than one leaf migration; fix with C(manage.py makemigrations --merge).
  returned: success
  type: dict
  sample: {books: [0003_a, 0003_b]}
inconsistent:
  description: Applied migrations whose dependency is not applied.
  returned: success
  type: list
  elements: dict
  sample: [{migration: admin.0001_initial, missing_dependency: accounts.0001_initial}]
pending_changes:
  description:
    - Per app, model changes that have no migration yet (what C(makemigrations --check) would
      write), as operation descriptions.
  returned: success
  type: dict
  sample: {books: [Add field isbn13 to book]}
checks:
  description:
    - The messages of Django's system checks that C(manage.py migrate) runs before it migrates
      (every tag, this database; silenced ones left out), each with C(id), C(level) (C(DEBUG),
      C(INFO), C(WARNING), C(ERROR) or C(CRITICAL)), C(serious) (an error, migrate refuses on it),
      C(message), C(hint) and C(obj).
  returned: success
  type: list
  elements: dict
  sample:
    - {id: shop.E001, level: ERROR, serious: true, message: 'MariaDB 10.7+ needs the UUID migration',
       hint: 'Run manage.py migrate_uuids first.', obj: null}
risks:
  description:
    - Per pending operation of RV(plan), what it will do to its live table on this server
      (engine and version) - C(migration), C(operation), C(type), C(table), C(level) (V(safe)
      metadata only, instant or online; V(locks) a lock that blocks writes or reads for a time
      that grows with the table, and C(RunSQL)/C(RunPython), which cannot be analysed;
      V(incompatible) code still running breaks; V(data_loss)), C(reasons) (sentences, the
      worst first) and the table's estimated C(rows) and C(bytes) from the catalog (null for a
      table the plan creates).
  returned: success
  type: list
  elements: dict
  sample:
    - {migration: books.0006_book_isbn13, operation: Add field isbn13 to book, type: AddField,
       table: books_book, level: incompatible, rows: 120000, bytes: 18874368,
       reasons: ['adds a NOT NULL column without a database default: code still running that inserts rows without it fails']}
risk:
  description: The highest C(level) of RV(risks); V(safe) when nothing is pending.
  returned: success
  type: str
  sample: incompatible
edited:
  description:
    - The applied migrations (C(app.name)) whose operations changed since their checksum was
      recorded when a guarded migrate applied them (see
      M(dbsafe.django.django_migrate_guarded)'s C(track_checksums)); comments and formatting do
      not count. Empty when the check is off or has not started.
  returned: success
  type: list
  elements: str
  sample: [books.0003_book_author]
checksums:
  description:
    - Whether applied migrations are checked for edits - C(enabled) (not O(track_checksums=false)),
      C(active) (the table exists - a guarded migrate has recorded the baseline), C(table), how
      many applied migrations are C(recorded) and C(unrecorded) yet (applied before the check
      started or outside the guard; recorded by the next guarded migrate), and C(error) when
      the table could not be read.
  returned: success
  type: dict
  sample: {enabled: true, active: true, table: dbsafe_migration_checksums, recorded: 14, unrecorded: 0}
problems:
  description:
    - With O(expect), what does not match, as sentences (a step not applied, a backwards step
      still applied, migrations left to apply, model changes without a migration, conflicts).
      Empty when everything matches.
  returned: with O(expect)
  type: list
  elements: str
  sample: [books.0006_book_subtitle was not applied]
ansible_facts:
  description: The same facts under C(django_migrations).
  returned: success
  type: dict
  contains:
    django_migrations:
      description: All of the above in one dict.
      type: dict
      returned: success
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dbsafe.django.plugins.module_utils.errors import DbsafeError
from ansible_collections.dbsafe.django.plugins.module_utils.module_support import (
    fail_with,
    project_for,
)
from ansible_collections.dbsafe.django.plugins.module_utils.project import (
    PROJECT_ARGUMENT_SPEC,
    PROJECT_MUTUALLY_EXCLUSIVE,
)
from ansible_collections.dbsafe.django.plugins.module_utils.state import (
    migration_facts,
    plan_problems,
    untested_django,
)


def main():
    argument_spec = dict(
        PROJECT_ARGUMENT_SPEC,
        apps=dict(type="list", elements="str", default=[]),
        track_checksums=dict(type="bool", default=True),
        expect=dict(type="dict", options=dict(
            plan=dict(type="list", elements="dict", default=[]),
            complete=dict(type="bool", default=True),
        )),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=PROJECT_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    try:
        project = project_for(module)
        result = project.facts(database=module.params["database"], apps=module.params["apps"],
                               track_checksums=module.params["track_checksums"])
    except DbsafeError as error:
        fail_with(module, error)
    facts = migration_facts(result, module.params["apps"])
    warning = untested_django(facts["django_version"])
    if warning:
        module.warn(warning)
    expect = module.params["expect"]
    if expect is not None:
        facts["problems"] = plan_problems(dict(facts, applied_rows=result["facts"]["applied_rows"]),
                                          expect["plan"], expect["complete"])
    module.exit_json(changed=False, ansible_facts={"django_migrations": facts}, **facts)


if __name__ == "__main__":
    main()
