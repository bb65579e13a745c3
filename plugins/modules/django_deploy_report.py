#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: django_deploy_report
short_description: Write the deploy report of the hosts of a play on the controller
version_added: 0.4.0
description:
  - An action that runs on the controller. It reads what the role C(dbsafe.django.django_migrate)
    registered on every host of the play (the preflight's revisions and plan, the service
    windows of M(dbsafe.django.django_service) and M(dbsafe.django.django_migrate_guarded), the
    guarded migrate's result, the verification's problems) and writes one report as JSON and
    Markdown into O(dir), named C(<name>-<UTC time>.json) and C(.md).
  - Per host it tells the truth about the service - C(stopped, started again), C(never stopped),
    C(LEFT STOPPED), C(unreachable) - the revisions before and after, the downtime, when the
    application answered again and the problems; per database the migration with its steps,
    backup and checksum, and the service window.
  - Run it once (C(run_once)); it changes nothing on the managed hosts and always reports
    C(changed=false).
author:
  - dbsafe.django developers (@dbsafe)
options:
  dir:
    description: Directory of the reports on the controller (created when missing).
    type: path
    required: true
  name:
    description: The report's name, the first part of its file names (e.g. V(deploy), V(rollback)).
    type: str
    default: deploy
  hosts:
    description: The hosts to report on. Default, every host of the play (C(ansible_play_hosts_all)).
    type: list
    elements: str
attributes:
  action:
    support: full
    description: An action plugin on the controller renders the report and writes it there.
  check_mode:
    support: full
    description: The report is written in check mode too, with the result V(check mode).
  diff_mode:
    support: none
    description: The report is the output; there is no diff.
seealso:
  - module: dbsafe.django.django_migrate_guarded
  - module: dbsafe.django.django_service
"""

EXAMPLES = r"""
- name: Write the deploy report
  dbsafe.django.django_deploy_report:
    dir: "{{ playbook_dir }}/reports"
    name: deploy
  run_once: true
  register: report
"""

RETURN = r"""
report:
  description: The report's data, as written to the JSON file.
  returned: always
  type: dict
  contains:
    result:
      description: V(succeeded), V(nothing to do), V(failed), V(failed verification) or V(check mode).
      type: str
      returned: always
    message:
      description: The failure, the problems or the migration's message.
      type: str
      returned: always
    mode:
      description:
        - V(online) (migrated while the application served, the code rolled out host by host), V(stop) (the stop
          window), V(online and stop) for a run over databases that differ, null without a preflight.
      type: str
      returned: always
    mode_reasons:
      description: What required the stop window - each operation that is not safe for the running code, or the setting.
      type: list
      elements: str
      returned: always
    downtime_seconds:
      description: From the first stop to the last start, or V(not started) when a host was left down.
      type: raw
      returned: always
    hosts:
      description:
        - One entry per host (service, mode, code_switched, revision_before, revision_after, stopped_at,
          started_at, downtime_seconds, answered_after_seconds, migrated_here, problems).
      type: list
      elements: dict
      returned: always
    migrations:
      description:
        - One entry per database migrated (host, msg, plan, applied, backup, restored, timings,
          service_window).
      type: list
      elements: dict
      returned: always
json:
  description: The path of the JSON report.
  returned: always
  type: str
markdown:
  description: The path of the Markdown report.
  returned: always
  type: str
"""
