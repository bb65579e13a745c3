# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module's ``main()`` shares: building the runner and project, mapping errors."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbsafe.django.plugins.module_utils.project import DjangoProject
from ansible_collections.dbsafe.django.plugins.module_utils.runner import Runner

# Keys fail_json/exit_json reserve for themselves.
_RESERVED = ("msg", "failed", "changed", "invocation", "warnings", "deprecations")


def runner_for(module):
    # Modules without the option (django_service, django_release_venv) run no database tools.
    return Runner(module.run_command, db_command_prefix=module.params.get("db_command_prefix"))


def project_for(module, runner=None):
    return DjangoProject.from_module(module, runner or runner_for(module))


def fail_with(module, error, **result):
    """``fail_json`` for a DbsafeError: its message plus its details and any partial result."""
    # A result finished before the failure (e.g. the start after a migration) has its own msg.
    payload = dict((key, value) for key, value in result.items() if key not in ("msg", "failed"))
    for key, value in error.details.items():
        payload["error_" + key if key in _RESERVED else key] = value
    module.fail_json(msg=error.msg, **payload)
