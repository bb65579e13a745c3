"""processes: the children the module started are known, and an interruption stops them."""
import signal
import sys

from ansible_collections.dbsafe.django.plugins.module_utils import processes
from ansible_collections.dbsafe.django.plugins.module_utils.runner import Runner
from ansible_collections.dbsafe.django.plugins.module_utils.errors import CommandError

IGNORE_TERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
               "print('ready', flush=True); time.sleep(60)")


def no_commands(*args, **kwargs):
    raise AssertionError("no run_command here")


def test_terminate_children_stops_what_was_started_and_only_that():
    polite = processes.start([sys.executable, "-c", "import time; time.sleep(60)"], None)
    stubborn = processes.start([sys.executable, "-c", IGNORE_TERM], None,
                               stdout=processes.subprocess.PIPE)
    assert stubborn.stdout.readline() == b"ready\n"  # SIGTERM is ignored from here on
    assert {polite, stubborn} <= set(processes.running())
    processes.terminate_children(grace=0.5)
    assert polite.returncode == -signal.SIGTERM
    assert stubborn.returncode == -signal.SIGKILL
    assert polite not in processes.running() and stubborn not in processes.running()
    stubborn.stdout.close()


def test_a_pipeline_leaves_no_tracked_child():
    before = set(processes.running())
    out = Runner(no_commands).pipeline([[sys.executable, "-c", "print('x')"], ["cat"]])
    assert out == b"x\n" and set(processes.running()) == before
    try:
        Runner(no_commands).pipeline([["/nonexistent-tool"]])
    except CommandError as error:
        assert "cannot run /nonexistent-tool" in error.msg


def test_run_command_hands_its_child_to_the_tracker():
    seen = []

    def run_command(argv, environ_update=None, data=None, binary_data=False, cwd=None,
                    check_rc=False, before_communicate_callback=None):
        proc = processes.subprocess.Popen(argv, stdin=processes.subprocess.PIPE)
        before_communicate_callback(proc)
        seen.append(proc)
        assert proc in processes.running()
        proc.communicate()  # the child waits for the end of its input: alive until here
        return proc.returncode, "", ""

    Runner(run_command).run([sys.executable, "-c", "import sys; sys.stdin.read()"])
    assert len(seen) == 1 and seen[0] not in processes.running()


def test_stderr_collector_reads_text_and_bytes():
    proc = processes.start([sys.executable, "-c", "import sys; sys.stderr.write('a\\nb\\n')"],
                           None, stderr=processes.subprocess.PIPE)
    assert processes.StderrCollector(proc.stderr).join().text() == "a\nb\n"
    proc.wait()
    processes.untrack(proc)
