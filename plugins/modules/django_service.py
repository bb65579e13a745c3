#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: django_service
short_description: Take a Django application down (stop, switch the code) or bring it up again
version_added: 0.4.0
description:
  - The two halves of the service window of M(dbsafe.django.django_migrate_guarded)'s
    O(dbsafe.django.django_migrate_guarded#module:downtime) option, for the app hosts of a
    fleet that do not run the migration themselves.
  - O(state=stopped) runs the stop command, then the code command (unless
    O(code_after_migrate)). When either fails, the application is started again (with the
    code put back) before the task fails, so a host is never left half-stopped.
  - O(state=started) runs the code command when O(code_after_migrate) (a rollback), then the
    start command. Without a code command it asks the status command first and starts only
    an application that is down.
  - O(state=restored) is for the hosts a failed deploy stopped - O(code_back), then the
    start command.
  - O(state=reloaded) is the rolling restart of an online deploy (the database is migrated
    already) - the code command, then O(reload), so the application serves the new code without
    going down; without O(reload) it is stopped and started. When either fails the previous code
    is put back (O(code_back)) and reloaded or started before the task fails.
  - O(state=reverted) undoes O(state=reloaded) on a host that did not answer afterwards -
    O(code_back), then O(reload) (or stop, code back, start).
  - The commands are argv lists run without a shell, with O(environment) as their process
    environment, so the project's secrets never appear on a command line.
author:
  - dbsafe.django developers (@dbsafe)
options:
  state:
    description:
      - V(stopped) takes the application down (and switches its code); V(started) brings it
        up; V(restored) puts the previous code back (O(code_back)) and starts it, after a
        failed deploy; V(reloaded) switches the code and reloads the running application;
        V(reverted) puts the previous code back on a host V(reloaded) switched, and reloads it.
    type: str
    choices: [stopped, started, restored, reloaded, reverted]
    required: true
  services:
    description:
      - systemd units of the application. They are stopped, started and asked with
        C(systemctl); O(stop), O(start) and O(status) are then ignored.
    type: list
    elements: str
    default: []
  stop:
    description: Stops the application (or puts it into maintenance).
    type: list
    elements: str
    default: []
  start:
    description: Starts the application.
    type: list
    elements: str
    default: []
  status:
    description: Exits 0 when the application runs. Without it O(state=started) always starts.
    type: list
    elements: str
    default: []
  code:
    description:
      - Brings the code to the revision to run, after the stop (or, with
        O(code_after_migrate), before the start).
    type: list
    elements: str
    default: []
  reload:
    description:
      - Reloads the running application gracefully, so it serves the new code without going down
        (for example C([systemctl, reload, shop.service]) or a command that sends gunicorn's master
        C(HUP)). Used by O(state=reloaded) only.
    type: list
    elements: str
    default: []
  code_back:
    description:
      - Puts the previous code back. Run by O(state=restored), and by O(state=stopped) when
        the code command failed.
    type: list
    elements: str
    default: []
  code_after_migrate:
    description:
      - The code comes with O(state=started) instead of O(state=stopped) (a rollback, the
        older code no longer has the migrations to unapply).
    type: bool
    default: false
  environment:
    description:
      - Environment variables of the commands, for example the project's settings and
        credentials. Set as the commands' process environment, never on a command line;
        values whose names contain V(PASS), V(SECRET), V(TOKEN), V(KEY) or V(CREDENTIAL) are
        masked in all output.
    type: dict
    default: {}
  release_link:
    description:
      - A symlink naming the release's virtualenv (see M(dbsafe.django.django_release_venv)).
        With O(release_venv), the code step points it at that venv (after O(code)) and the
        code-back step points it at O(release_venv_back) (or removes it when that is empty).
        Nothing happens when both name the same venv.
    type: path
  release_venv:
    description: The venv O(release_link) points at after the code step.
    type: path
  release_venv_back:
    description: The venv O(release_link) points at again when the code is put back.
    type: path
attributes:
  check_mode:
    support: full
    description: Nothing runs; the result's C(would_run) lists the commands.
  diff_mode:
    support: none
    description: No diff is returned.
notes:
  - The result's C(window) has C(stopped_at) and C(started_at) (epoch seconds) and each
    command run with its C(rc) and C(seconds), which the deploy report uses.
seealso:
  - module: dbsafe.django.django_migrate_guarded
"""

EXAMPLES = r"""
- name: Take the other app hosts down and bring their code to the release
  dbsafe.django.django_service:
    state: stopped
    services: [shop.service]
    code: [git, -C, /srv/shop, reset, --hard, --quiet, 1f3a9c2]
    code_back: [git, -C, /srv/shop, reset, --hard, --quiet, 0b7e4d1]
  register: window

- name: Start them again
  dbsafe.django.django_service:
    state: started
    services: [shop.service]

- name: Roll the new code out on one host of an online deploy (the application stays up)
  dbsafe.django.django_service:
    state: reloaded
    services: [shop.service]
    reload: [systemctl, reload, shop.service]
    code: [git, -C, /srv/shop, reset, --hard, --quiet, 1f3a9c2]
    code_back: [git, -C, /srv/shop, reset, --hard, --quiet, 0b7e4d1]
"""

RETURN = r"""
window:
  description:
    - What ran. C(stopped_at) / C(started_at) are epoch seconds (null when that half did not
      run), C(seconds) the time from the stop to the end of the task, C(steps) each command
      with C(step), C(argv), C(rc) and C(seconds).
  returned: always
  type: dict
  sample: {stopped_at: 1795050000.12, started_at: null, seconds: 0.4,
           steps: [{step: stop, argv: [systemctl, stop, shop.service], rc: 0, seconds: 0.21}]}
would_run:
  description: In check mode, the commands that would run, by step.
  returned: in check mode
  type: dict
running:
  description: With O(state=started) and a status command, whether the application was already running.
  returned: with O(state=started) and a status command
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dbsafe.django.plugins.module_utils.downtime import (
    SERVICE_OPTIONS,
    ServiceWindow,
)
from ansible_collections.dbsafe.django.plugins.module_utils.errors import DbsafeError
from ansible_collections.dbsafe.django.plugins.module_utils.module_support import (
    fail_with,
    runner_for,
)


class ServiceTask:
    """One half of the window, as the module's ``state`` asks."""

    def __init__(self, module):
        self.module = module
        self.state = module.params["state"]
        self.window = ServiceWindow.from_params(runner_for(module), module.params,
                                                mask=module.no_log_values.add)

    def run(self):
        if self.module.check_mode:
            return dict(changed=True, window=self.window.report, would_run=self._would_run())
        if self.state == "stopped":
            self.window.down()
            return dict(changed=bool(self.window.report["steps"]), window=self.window.report)
        if self.state in ("reloaded", "reverted"):
            self.window.roll(back=self.state == "reverted")
            return dict(changed=bool(self.window.report["steps"]), window=self.window.report)
        result = {}
        code_step = self._code_step()
        if not code_step:  # nothing to change in the code: start only what is down
            running = self.window.is_running()
            if running is not None:
                result["running"] = running
            if running:
                return dict(result, changed=False, window=self.window.report)
        self.window.up(code_step)
        # No command to run (none configured): nothing changed, nothing to wait for.
        return dict(result, changed=bool(self.window.report["steps"]), window=self.window.report)

    def _code_step(self):
        """The code command ``state`` runs before the start, if any."""
        if self.state == "restored":
            step = "code_back"
        else:
            step = "code" if self.window.code_after_migrate else None
        return step if step and self.window.commands[step] else None

    def _would_run(self):
        if self.state in ("reloaded", "reverted"):
            code = "code" if self.state == "reloaded" else "code_back"
            steps = (code, "reload") if self.window.commands["reload"] else ("stop", code, "start")
        elif self.state == "stopped":
            steps = ("stop",) if self.window.code_after_migrate else ("stop", "code")
        else:
            steps = (self._code_step(), "start")
        return dict((step, self.window.commands[step]) for step in steps
                    if step and self.window.commands[step])


def main():
    module = AnsibleModule(
        argument_spec=dict(state=dict(type="str", choices=["stopped", "started", "restored", "reloaded", "reverted"],
                                      required=True),
                           **SERVICE_OPTIONS),
        supports_check_mode=True,
    )
    task = ServiceTask(module)
    try:
        result = task.run()
    except DbsafeError as error:
        fail_with(module, error, window=task.window.report)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
