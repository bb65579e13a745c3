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
  boot_timeout:
    description:
      - Seconds booting the project (C(manage.py), the settings, the apps' imports) may take
        before the module stops the project's interpreter and fails, naming the settings module.
      - Booting touches no database; V(0) waits without a limit.
    type: int
    default: 300
"""
