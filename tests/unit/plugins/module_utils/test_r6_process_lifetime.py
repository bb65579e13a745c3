"""R6 (issue 16): no child outlives the module, interruptions stop the work in order, and a run
that finds the previous run's processes still working waits for them or refuses."""
import os
import subprocess
import sys
import time

import pytest

from ansible_collections.dbsafe.django.plugins.module_utils import processes, run_marker
from ansible_collections.dbsafe.django.plugins.module_utils.errors import PreflightRefused
from ansible_collections.dbsafe.django.plugins.module_utils.processes import (
    CALLER_GONE,
    Interrupted,
    Interruptions,
)
from ansible_collections.dbsafe.django.plugins.module_utils.run_marker import RunMarker, take_over

# The directory holding ansible_collections/ (as imported here), for the child interpreters.
_PACKAGE = os.path.abspath(processes.__file__)  # .../ansible_collections/dbsafe/django/plugins/module_utils/processes.py
COLLECTIONS_PATH = _PACKAGE[:_PACKAGE.rindex(os.sep + "ansible_collections" + os.sep)]
HERE = os.uname()[1]


def _python(code, **popen):
    prelude = "import sys, time, os, signal; sys.path.insert(0, %r)\n" % COLLECTIONS_PATH
    return subprocess.Popen([sys.executable, "-c", prelude + code], **popen)


def _gone_within(identity, seconds):
    deadline = time.monotonic() + seconds
    while processes.still_running(identity):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_dies_with_the_module_even_when_the_module_is_killed():
    module = _python(
        "from ansible_collections.dbsafe.django.plugins.module_utils import processes\n"
        "child = processes.start(['sleep', '60'], None)\n"
        "print(child.pid, os.getsid(child.pid), flush=True)\n"
        "time.sleep(60)\n", stdout=subprocess.PIPE)
    pid, session = [int(word) for word in module.stdout.readline().split()]
    child = processes.identity(pid)
    assert session == pid, "the child is not in its own session (a Ctrl-C would reach it)"
    assert processes.still_running(child)
    module.kill()
    module.wait()
    module.stdout.close()
    assert _gone_within(child, 5), "the child outlived its killed parent"


def test_a_reused_pid_is_not_the_process_that_was_recorded():
    me = processes.identity(os.getppid())
    assert processes.still_running(me)
    if me["started"] is None:
        pytest.skip("no /proc start times here")
    assert not processes.still_running(dict(me, started=me["started"] + 1))
    assert not processes.still_running({"pid": os.getpid(), "started": None})  # never ourselves


def test_an_interruption_before_the_lock_raises_and_says_nothing_changed():
    interruptions = Interruptions()
    stopped = []
    with interruptions.stopping(lambda: stopped.append(1)), pytest.raises(Interrupted) as raised:
        interruptions.interrupt("SIGINT")
    assert raised.value.msg == "interrupted by SIGINT; the database was not changed"
    assert stopped == [1]  # the interpreter is stopped too: no need to wait for its answer


def test_an_interruption_under_the_lock_stops_the_work_once_and_is_checked_between_steps():
    interruptions = Interruptions()
    stopped = []
    with interruptions.in_mode("stop"), interruptions.stopping(lambda: stopped.append(1)):
        interruptions.check("unused")  # nothing asked yet
        interruptions.interrupt("SIGTERM")
        interruptions.interrupt("SIGINT")  # a second one: already stopping
        assert stopped == [1]
        with pytest.raises(Interrupted) as raised:
            interruptions.check("nothing was migrated")
    assert raised.value.msg == "interrupted by SIGTERM; nothing was migrated"
    assert raised.value.details["interrupted"] == ["SIGTERM", "SIGINT"]
    assert interruptions.mode == "raise"  # the mode of before the block


def test_an_interruption_during_a_restore_is_recorded_and_the_restore_goes_on():
    interruptions = Interruptions()
    stopped = []
    with interruptions.in_mode("stop"), interruptions.stopping(lambda: stopped.append(1)):
        interruptions.interrupt("SIGINT")
        with interruptions.in_mode("finish"):
            interruptions.interrupt("SIGTERM")  # no exception: the restore is not abandoned
            interruptions.interrupt("SIGINT")
            interruptions.interrupt("SIGINT")
    assert stopped == [1]
    assert interruptions.restore_note() == (
        " (SIGTERM, SIGINT (2 times) arrived during the restore: the restore was not abandoned, "
        "it went on to its end)")


def test_the_caller_going_away_is_an_interruption():
    """Ansible's task timeout signals nothing: the module sees its output's reader vanish."""
    module = _python(
        "from ansible_collections.dbsafe.django.plugins.module_utils import processes\n"
        "i = processes.interruptions\n"
        "i.mode = 'stop'\n"
        "seen = []\n"
        "i._stoppers.append(lambda: seen.append(i.causes[0]))\n"
        "i.install()\n"
        "sys.stderr.write('ready\\n'); sys.stderr.flush()\n"
        "deadline = time.time() + 20\n"
        "while not seen and time.time() < deadline:\n"
        "    time.sleep(0.05)\n"
        "sys.stderr.write('stopped: %s\\n' % (seen and seen[0]))\n",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert module.stderr.readline() == b"ready\n"
    module.stdout.close()  # the reader is gone, as when Ansible's worker ends
    assert module.stderr.read().decode().strip() == "stopped: %s" % CALLER_GONE
    assert module.wait(10) == 0
    module.stderr.close()


def test_the_interpreter_stops_when_the_module_is_gone():
    """introspect.watch_module: the project's interpreter (maybe behind sudo) ends once nobody
    reads its output."""
    interpreter = _python(
        "from ansible_collections.dbsafe.django.plugins.module_utils import introspect\n"
        "introspect.watch_module()\n"
        "sys.stderr.write('ready\\n'); sys.stderr.flush()\n"
        "time.sleep(30)\n", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert interpreter.stderr.readline() == b"ready\n"
    interpreter.stdout.close()
    assert interpreter.wait(10) == 70
    assert b"the module that started it is gone" in interpreter.stderr.read()
    interpreter.stderr.close()


RECORD = {"phase": "backup", "holder": {"host": HERE, "pid": 4242, "since": "2026-01-01T10:00:00Z"},
          "workers": [{"pid": 4343, "started": 7}]}
MIGRATING = dict(RECORD)
MIGRATING["phase"] = "migrating"


def test_live_workers_only_on_this_host_and_only_running_ones():
    def running(worker):
        return worker["pid"] == 4343
    assert run_marker.live_workers(RECORD, hostname=HERE, still_running=running) == RECORD["workers"]
    assert run_marker.live_workers(RECORD, hostname=HERE, still_running=lambda w: False) == []
    assert run_marker.live_workers(RECORD, hostname="elsewhere", still_running=running) == []
    assert run_marker.still_working(RECORD, hostname=HERE, pid_exists=lambda pid: False,
                                    still_running=running) == [4343]


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_take_over_waits_for_an_orphan_still_working_then_goes_on(tmp_path):
    marker = RunMarker(str(tmp_path), "x")
    marker.write(**RECORD)
    answers = [[4343], [4343], []]  # the orphan ends after two looks
    warnings = []
    clock = _Clock()
    pids = run_marker.wait_until_stopped(marker.read(), 30, warnings.append,
                                         working=lambda record: answers.pop(0), clock=clock,
                                         sleep=clock.sleep)
    assert pids == [] and clock.now == pytest.approx(0.4)
    assert "still runs (pid 4343)" in warnings[0] and "waiting up to 30 s" in warnings[0]
    # Through take_over: the run died in its backup phase, so it goes on (nothing was migrated).
    answers[:] = [[4343], []]
    warnings = []
    take_over(marker, {}, None, None, warnings.append, wait=30,
              working=lambda record: answers.pop(0))
    assert "nothing was migrated" in warnings[-1]
    assert marker.read() is None


def test_take_over_refuses_while_an_orphan_still_works_after_the_wait(tmp_path):
    marker = RunMarker(str(tmp_path), "x")
    marker.write(**MIGRATING)
    with pytest.raises(PreflightRefused) as raised:
        take_over(marker, {}, None, None, lambda message: None, wait=0,
                  working=lambda record: [4343])
    assert "still runs (pid 4343)" in raised.value.msg
    assert "Nothing was changed" in raised.value.msg
    assert marker.read() is not None  # kept: the next run must look again


def test_the_restore_is_not_abandoned_on_an_interruption():
    """restore_and_prove runs in the 'finish' mode of the module's interruptions."""
    modes = []

    class _Store:
        def restore(self, path, engine):
            modes.append(processes.interruptions.mode)

    class _Engine:
        def snapshot(self):
            modes.append(processes.interruptions.mode)
            return {}

    assert run_marker.restore_and_prove(_Store(), "b", _Engine(), {}) == []
    assert modes == ["finish", "finish"] and processes.interruptions.mode == "raise"


def test_a_failure_of_an_interrupted_run_says_interrupted_first(monkeypatch):
    from ansible_collections.dbsafe.django.plugins.module_utils import guard
    from ansible_collections.dbsafe.django.plugins.module_utils.errors import MigrationFailed
    interrupted = Interruptions()
    monkeypatch.setattr(guard, "interruptions", interrupted)
    error = MigrationFailed("migrate failed: killed. The backup b was restored and verified.")
    guard._say_interrupted(error)  # nothing arrived: unchanged
    assert error.msg.startswith("migrate failed")
    interrupted.causes[:] = ["SIGINT"]
    interrupted.during_finish[:] = ["SIGTERM"]
    guard._say_interrupted(error)
    assert error.msg == (
        "interrupted by SIGINT (the guard stopped the project's interpreter): migrate failed: "
        "killed. The backup b was restored and verified. (SIGTERM arrived during the restore: "
        "the restore was not abandoned, it went on to its end)")
    assert error.details["interrupted"] == ["SIGINT"] and str(error) == error.msg
    own = Interrupted("interrupted by SIGINT; nothing was migrated")
    guard._say_interrupted(own)  # its own message already says it
    assert own.msg == "interrupted by SIGINT; nothing was migrated"
