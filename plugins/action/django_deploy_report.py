# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The deploy report: read what the role's module calls returned on every host of the play and
write it on the controller as JSON and Markdown (the documentation is in
plugins/modules/django_deploy_report.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.dbsafe.django.plugins.module_utils.report import (
    build_report,
    render_markdown,
)

# What the role registers on each host (roles/django_migrate/tasks), by the report's name.
HOST_VARIABLES = {
    "preflight": "_django_migrate_preflight",
    "down": "_django_migrate_down",
    "migrate": "_django_migrate_result",
    "contract": "_django_migrate_contract_result",
    "up": "_django_migrate_up",
    "rollout": "_django_migrate_rollout",
    "rollout_back": "_django_migrate_rollout_back",
    "problems": "_django_migrate_verify_problems",
    "healthy_at": "_django_migrate_healthy_at",
    "failure": "_django_migrate_failure",
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("dir", "name", "hosts"))

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        directory = args.get("dir")
        if not directory:
            raise AnsibleActionFail("dir is required: the directory of the reports")
        name = args.get("name") or "deploy"
        hosts = args.get("hosts") or task_vars.get("ansible_play_hosts_all") or []
        active = set(task_vars.get("ansible_play_hosts") or [])
        hostvars = task_vars.get("hostvars") or {}
        per_host = []
        for host in hosts:
            variables = hostvars.get(host) or {}
            entry = dict((key, self._templar.template(variables.get(var)))
                         for key, var in HOST_VARIABLES.items() if var in variables)
            entry.update(host=host, active=host in active)
            per_host.append(entry)
        now = time.time()
        report = build_report(name, per_host, finished=now,
                              check_mode=bool(self._task.check_mode))
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        base = os.path.join(directory, "%s-%s" % (name, stamp))
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o755)
            with open(base + ".json", "w") as handle:
                handle.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
            with open(base + ".md", "w") as handle:
                handle.write(render_markdown(report))
        except (IOError, OSError) as error:
            raise AnsibleActionFail("cannot write the report %s: %s" % (base, error))
        result.update(changed=False, report=report, json=base + ".json", markdown=base + ".md")
        return result
