"""Fixtures of the field harness (see fleet.py): one harness per session - the OS users, the
sshd, the hosts' Python, the database servers - and one fleet per engine, made on first use and
shared by the tests (their playbook runs are what costs)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleet as field  # noqa: E402 - needs the path above


@pytest.fixture(scope="session")
def harness():
    made = field.Harness()
    try:
        made.start()
    except BaseException:
        made.close()
        raise
    yield made
    made.close()


@pytest.fixture(scope="session")
def fleets(harness):
    """fleets(engine) -> the Fleet of that engine (postgresql: the own scram cluster; mysql: the
    local MariaDB with a password user)."""
    made = {}

    def get(engine):
        if engine not in made:
            server = harness.postgres() if engine == "postgresql" else harness.mysql()
            made[engine] = field.Fleet(harness, engine, server)
        return made[engine]

    yield get
    for one in made.values():
        one.close()


def pytest_sessionfinish(session, exitstatus):
    if field.RUNS:
        field.write_results()
