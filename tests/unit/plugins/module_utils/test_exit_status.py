"""runner.exit_status: a killed tool is named as killed, with its signal."""
from ansible_collections.dbsafe.django.plugins.module_utils.runner import exit_status


def test_exit_codes_and_signals():
    assert exit_status(3) == "exited with 3"
    assert exit_status(-9) == "was killed by signal 9 (SIGKILL)"
    assert exit_status(-40) == "was killed by signal 40 (signal)"
