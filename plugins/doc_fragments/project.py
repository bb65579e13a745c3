# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # How a module reaches a Django project (plugins/module_utils/project.py).
    DOCUMENTATION = r"""
options:
  project_path:
    description:
      - Directory that holds the project's C(manage.py).
      - With O(command_prefix), the path as seen inside that container or environment.
    type: str
    required: true
  python:
    description:
      - The project's Python interpreter, for example the C(bin/python) of its virtualenv.
      - Defaults to C(python3) on E(PATH) when neither O(python) nor O(virtualenv) is given.
    type: str
  virtualenv:
    description:
      - The project's virtualenv directory; its C(bin/python) is used.
      - Mutually exclusive with O(python).
    type: str
  settings:
    description:
      - The settings module (E(DJANGO_SETTINGS_MODULE)).
      - Defaults to the environment's value, then to what C(manage.py) sets.
    type: str
  database:
    description:
      - The database alias in C(settings.DATABASES).
    type: str
    default: default
  environment:
    description:
      - Extra environment variables for the project, for example its database credentials.
      - They reach the project's interpreter on standard input, never on a command line.
      - Values whose names contain V(PASS), V(SECRET), V(TOKEN), V(KEY) or V(CREDENTIAL) are
        masked in all output.
    type: dict
    default: {}
  command_prefix:
    description:
      - Words put before every command that runs in the project, for a project that lives in a
        container, for example V([docker, compose, exec, -T, web]).
      - The prefix must pass standard input through (C(-T) for C(docker compose exec)).
    type: list
    elements: str
    default: []
  db_command_prefix:
    description:
      - Words put before every database tool the module runs (C(psql), C(pg_dump), C(pg_restore), C(mariadb),
        C(mariadb-dump)) for a database reachable only from inside a container or another network namespace, for
        example V([docker, compose, exec, -T, -e, PGPASSWORD, db]). Empty, the tools run on this host.
      - The tools are then found on the prefix's own PATH and their versions asked through it. Their dump streams out
        of the prefix's standard output and a restore streams into its standard input, so the prefix must pass both
        through (C(-T) for C(docker compose exec)); compression, filters and checksums stay on this host.
      - PostgreSQL's connection and password travel in the tools' environment (C(PGHOST), C(PGPASSWORD)...), MySQL's
        in a 0600 option file on this host; never on a command line. A prefix that does not pass the environment or
        share the file system (C(docker compose exec)) must be told, for example C(-e PGPASSWORD) (the value comes
        from the environment, not the command line); see the compose section of the collection's docs.
      - Not with the PostgreSQL V(directory) format or a parallel restore (the tools would need this host's paths),
        nor with SQLite (this module opens the file itself).
    type: list
    elements: str
    default: []
  boot_timeout:
    description:
      - Seconds booting the project (C(manage.py), the settings, the apps' imports) may take
        before the module stops the project's interpreter and fails, naming the settings module.
      - Booting touches no database; V(0) waits without a limit.
    type: int
    default: 300
"""
