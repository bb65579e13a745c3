"""downtime.ServiceWindow with real commands (sh), and introspect's warm-up in a real child
interpreter: what runs in which order, what runs after which failure, and that warming up
loads nothing of the project."""
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.dbsafe.django.plugins.module_utils import introspect, project
from ansible_collections.dbsafe.django.plugins.module_utils.downtime import (
    ServiceWindow,
    service_commands,
)
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    MigrationFailed,
    RestoreFailed,
    ServiceError,
)
from ansible_collections.dbsafe.django.plugins.module_utils.runner import Runner


def run_command(argv, environ_update=None, data=None, binary_data=False, cwd=None,
                check_rc=False):
    """AnsibleModule.run_command's contract, enough for the window's commands."""
    proc = subprocess.run(argv, env=dict(os.environ, **(environ_update or {})), cwd=cwd,
                          capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


class Log:
    def __init__(self, tmp_path):
        self.path = str(tmp_path / "log")

    def command(self, step, rc=0):
        return ["/bin/sh", "-c", 'echo %s >> "$0"; exit %d' % (step, rc), self.path]

    def lines(self):
        if not os.path.exists(self.path):
            return []
        with open(self.path) as handle:
            return handle.read().split()


def window(log, masked=None, **rcs):
    commands = dict((step, log.command(step, rcs.get(step, 0)))
                    for step in ("stop", "code", "code_back", "start"))
    return ServiceWindow(Runner(run_command), commands, {"APP_PASSWORD": "pw-123"},
                         mask=(masked.append if masked is not None else None))


def test_success_runs_stop_code_work_start_in_that_order(tmp_path):
    log = Log(tmp_path)
    masked = []

    def work():
        assert log.lines() == ["stop", "code"]  # the work runs with the service down
        return {"changed": False}

    result = window(log, masked).around(work)

    assert log.lines() == ["stop", "code", "start"]
    assert result["changed"] is True  # commands ran: the host changed
    downtime = result["downtime"]
    assert downtime["started_at"] >= downtime["stopped_at"] and downtime["seconds"] >= 0
    assert [(s["step"], s["rc"]) for s in downtime["steps"]] == [
        ("stop", 0), ("code", 0), ("start", 0)]
    assert masked == ["pw-123"]


def test_a_failed_migration_puts_the_code_back_and_starts(tmp_path):
    log = Log(tmp_path)

    def work():
        raise MigrationFailed("migration books.0007 failed: boom. The backup was restored")

    with pytest.raises(MigrationFailed) as caught:
        window(log).around(work)

    assert log.lines() == ["stop", "code", "code_back", "start"]
    assert caught.value.msg.endswith("Service: code back done; start done.")
    assert caught.value.details["downtime"]["started_at"] is not None


def test_a_failed_restore_leaves_the_service_stopped(tmp_path):
    log = Log(tmp_path)

    def work():
        raise RestoreFailed("THE RESTORE ALSO FAILED")

    with pytest.raises(RestoreFailed) as caught:
        window(log).around(work)

    assert log.lines() == ["stop", "code"]
    assert "LEFT STOPPED" in caught.value.msg
    assert caught.value.details["downtime"]["started_at"] is None
    assert caught.value.details["downtime"]["left_stopped"] is True  # a fleet's others stay down


def test_a_failed_stop_starts_again_and_never_works(tmp_path):
    log = Log(tmp_path)

    def work():
        raise AssertionError("must not run")

    with pytest.raises(ServiceError) as caught:
        window(log, stop=4).around(work)

    assert log.lines() == ["stop", "start"]
    assert "the stop command" in caught.value.msg and "(rc 4)" in caught.value.msg
    assert caught.value.msg.endswith("Service: start done.")


def test_a_failed_code_step_goes_back_and_starts(tmp_path):
    log = Log(tmp_path)

    with pytest.raises(ServiceError) as caught:
        window(log, code=1).around(lambda: {"changed": True})

    assert log.lines() == ["stop", "code", "code_back", "start"]
    assert "the code command" in caught.value.msg


def test_a_failed_start_after_success_says_the_migration_holds(tmp_path):
    log = Log(tmp_path)

    with pytest.raises(ServiceError) as caught:
        window(log, start=2).around(lambda: {"changed": True})

    assert log.lines() == ["stop", "code", "start"]  # no code_back: database and code agree
    assert caught.value.msg.startswith("the migration succeeded and was verified, but the "
                                       "application did not start again")
    assert caught.value.details["downtime"]["started_at"] is None


def test_no_commands_change_nothing_by_themselves(tmp_path):
    result = ServiceWindow(Runner(run_command), {}).around(lambda: {"changed": False})
    assert result["changed"] is False and result["downtime"]["steps"] == []


def test_warming_up_loads_neither_settings_nor_project_modules(tmp_path):
    """warm with DJANGO_SETTINGS_MODULE set and the project directory as cwd: a settings
    module that would record its import is not imported, and settings stay unconfigured."""
    pytest.importorskip("django")
    marker = tmp_path / "imported"
    (tmp_path / "trap_settings.py").write_text(
        "open(%r, 'w').write('settings imported')\n" % str(marker))
    request = {"action": "warm", "session": True}
    source = project._introspect_source()
    request["source_chars"] = len(source)
    proc = subprocess.run(
        [sys.executable, "-c", project.LOADER], input=json.dumps(request) + "\n" + source,
        cwd=str(tmp_path), env=dict(os.environ, DJANGO_SETTINGS_MODULE="trap_settings"),
        capture_output=True, text=True, timeout=120, check=False)

    answer = project._parse_answer(proc.stdout)
    assert answer is not None and answer["ok"], proc.stdout + proc.stderr
    assert "django.db.migrations.executor" in answer["result"]["warmed"]
    assert "django.core.management.commands.migrate" in answer["result"]["warmed"]
    assert not marker.exists()
    assert introspect.RESULT_MARKER in proc.stdout


# --- the halves on their own (the other app hosts of a fleet: django_service) ---------------


def test_down_stops_then_switches_the_code_and_up_starts(tmp_path):
    log = Log(tmp_path)
    halves = window(log)

    halves.down()
    assert log.lines() == ["stop", "code"]
    report = halves.up()

    assert log.lines() == ["stop", "code", "start"]
    assert report["stopped_at"] <= report["started_at"] and report["left_stopped"] is False


def test_a_rollback_brings_the_code_after_the_migration(tmp_path):
    log = Log(tmp_path)
    commands = dict((step, log.command(step)) for step in ("stop", "code", "code_back", "start"))
    rollback = ServiceWindow(Runner(run_command), commands, code_after_migrate=True)

    def work():
        assert log.lines() == ["stop"]  # the old code still has the migrations to unapply
        return {"changed": True}

    rollback.around(work)

    assert log.lines() == ["stop", "code", "start"]


def test_a_failed_rollback_migration_leaves_the_code_alone(tmp_path):
    log = Log(tmp_path)
    commands = dict((step, log.command(step)) for step in ("stop", "code", "code_back", "start"))
    rollback = ServiceWindow(Runner(run_command), commands, code_after_migrate=True)

    def work():
        raise MigrationFailed("restored")

    with pytest.raises(MigrationFailed):
        rollback.around(work)

    assert log.lines() == ["stop", "start"]


def test_putting_back_runs_code_back_then_start(tmp_path):
    log = Log(tmp_path)

    window(log).up("code_back")

    assert log.lines() == ["code_back", "start"]


def test_systemd_units_become_systemctl_commands():
    commands = service_commands({"services": ["shop.service", "worker.service"],
                                 "stop": ["ignored"], "code": ["git", "reset"]})

    assert commands["stop"] == ["systemctl", "stop", "shop.service", "worker.service"]
    assert commands["start"] == ["systemctl", "start", "shop.service", "worker.service"]
    assert commands["status"] == ["systemctl", "is-active", "--quiet", "shop.service",
                                  "worker.service"]
    assert commands["code"] == ["git", "reset"]


def test_the_status_command_says_whether_the_application_runs(tmp_path):
    running = ServiceWindow(Runner(run_command), {"status": ["/bin/true"]})
    down = ServiceWindow(Runner(run_command), {"status": ["/bin/false"]})
    unknown = ServiceWindow(Runner(run_command), {})

    assert running.is_running() is True
    assert down.is_running() is False
    assert unknown.is_running() is None


def test_the_commands_get_the_environment_in_their_process_not_their_argv(tmp_path):
    out = tmp_path / "env"
    command = ["/bin/sh", "-c", 'echo "$APP_PASSWORD" > "$0"', str(out)]
    ServiceWindow(Runner(run_command), {"stop": command},
                  {"APP_PASSWORD": "pw-123"}).down()

    assert out.read_text().strip() == "pw-123"
    assert "pw-123" not in " ".join(command)


def rolling_window(log, with_reload=True, **rcs):
    steps = ("stop", "code", "code_back", "start") + (("reload",) if with_reload else ())
    commands = dict((step, log.command(step, rcs.get(step, 0))) for step in steps)
    return ServiceWindow(Runner(run_command), commands, {})


def test_a_rollout_switches_the_code_and_reloads_without_stopping(tmp_path):
    log = Log(tmp_path)
    report = rolling_window(log).roll()
    assert log.lines() == ["code", "reload"]
    assert report["stopped_at"] is None


def test_a_rollout_without_reload_stops_and_starts_and_back_puts_the_previous_code(tmp_path):
    log = Log(tmp_path)
    report = rolling_window(log, with_reload=False).roll()
    assert log.lines() == ["stop", "code", "start"]
    assert report["stopped_at"] and report["started_at"]
    rolling_window(log, with_reload=False).roll(back=True)
    assert log.lines()[3:] == ["stop", "code_back", "start"]


def test_a_reload_that_fails_puts_the_previous_code_back_and_reloads_it(tmp_path):
    log = Log(tmp_path)
    with pytest.raises(ServiceError) as failed:
        rolling_window(log, reload=1).roll()
    assert log.lines() == ["code", "reload", "code_back", "reload"]
    assert "the reload command" in failed.value.msg and "code back done" in failed.value.msg
