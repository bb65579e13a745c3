"""runner.Session: one real child process answering several requests (the guarded migrate's
single launch of the project's interpreter), and what happens when it dies."""
import sys

from ansible_collections.dbsafe.django.plugins.module_utils.runner import Runner

ECHO = (
    "import sys\n"
    "for line in sys.stdin:\n"
    "    print('noise', flush=True)\n"
    "    sys.stderr.write('err ' + line)\n"
    "    if line.strip() == 'die':\n"
    "        sys.exit(3)\n"
    "    print('@@ANSWER ' + line.strip().upper(), flush=True)\n"
)


def run_command(*args, **kwargs):
    raise AssertionError("a session does not go through run_command")


def test_one_process_answers_requests_in_order_and_ends_on_close():
    session = Runner(run_command).session([sys.executable, "-c", ECHO])
    first = session.ask("facts\n", "@@ANSWER")
    second = session.ask("migrate\n", "@@ANSWER")
    assert first.stdout.splitlines() == ["noise", "@@ANSWER FACTS"] and first.rc is None
    assert second.stdout.splitlines()[-1] == "@@ANSWER MIGRATE"
    assert session.proc.pid and session.close() == 0


def test_a_process_that_dies_gives_its_exit_status_and_stderr():
    session = Runner(run_command).session([sys.executable, "-c", ECHO])
    result = session.ask("die\n", "@@ANSWER")
    assert result.rc == 3 and "@@ANSWER" not in result.stdout
    assert "err die" in result.stderr
    # Asking a dead process does not hang or raise: no answer, its status.
    assert session.ask("facts\n", "@@ANSWER").rc == 3
    assert session.close() == 3
