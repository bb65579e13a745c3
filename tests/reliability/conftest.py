"""The reliability suite's plumbing: each test is one case of R1..R6 and says so through the
``case`` fixture; the outcome of every case, plus the secrets checks of every module run
(R4), goes into a JSON results file that scripts/reliability-report turns into
docs/reliability.md.

The databases, the demo copies and the module runs are the integration tests' helpers
(tests/integration is on sys.path, see tests/conftest.py).
"""
import glob
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402 - needs the path above

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.environ.get("DBSAFE_RELIABILITY_RESULTS",
                         os.path.join(ROOT, "build", "reliability", "results.json"))


def _load(name, path):
    """A module of tests/integration under its own name (its conftest is not ours)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


integration = _load("integration_conftest", os.path.join(ROOT, "tests", "integration", "conftest.py"))


class Case:
    """One row of the report: requirement, engine, case, and what the run said."""

    def __init__(self, nodeid):
        self.nodeid = nodeid
        self.requirement = None
        self.engine = None
        self.name = None
        self.message = ""
        self.not_applicable = None

    def __call__(self, requirement, engine, name):
        self.requirement, self.engine, self.name = requirement, engine, name
        return self

    def skip_not_applicable(self, reason):
        self.not_applicable = reason
        pytest.skip("not applicable: " + reason)


_CASES = []


@pytest.fixture
def case(request):
    made = Case(request.node.nodeid)
    request.node.dbsafe_case = made
    return made


@pytest.fixture
def fresh_database(tmp_path):
    """fresh_database(engine) -> a throw-away LiveDatabase; its password is watched (R4)."""
    cleanups = []

    def make(engine, directory=None):
        directory = directory or tmp_path / ("db-%d" % len(cleanups))
        os.makedirs(str(directory), exist_ok=True)
        db, cleanup = integration.make_database(engine, directory)
        cleanups.append(cleanup)
        return db

    yield make
    for cleanup in reversed(cleanups):
        cleanup()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    made = getattr(item, "dbsafe_case", None)
    if made is None or made.requirement is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if made.not_applicable:
            status = "n/a"
        elif report.skipped:
            status = "skipped"
        else:
            status = "held" if report.passed else "failed"
        detail = made.message if report.passed or made.not_applicable else \
            (report.longreprtext or "").strip().splitlines()[-1:]
        _CASES.append({"requirement": made.requirement, "engine": made.engine,
                       "case": made.name, "status": status,
                       "message": made.not_applicable or (detail if isinstance(detail, str)
                                                          else " ".join(detail)),
                       "test": item.nodeid, "seconds": round(call.duration, 1)})


def _versions():
    def out(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30,
                                  check=False).stdout.strip()
        except OSError:
            return ""
    databases = sys.modules.get("databases")
    versions = {"python": platform.python_version(), "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "ansible-core": out([os.path.join(os.path.dirname(sys.executable), "ansible"),
                                     "--version"]).splitlines()[:1],
                "django": out([sys.executable, "-c", "import django; print(django.get_version())"]),
                "commit": out(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])}
    try:
        versions["postgresql"] = databases.pg_admin_sql("SHOW server_version;").strip()
    except Exception as error:  # noqa: B902 - a version is information, not a test
        versions["postgresql"] = "unavailable: %s" % error
    try:
        versions["mariadb"] = databases.mysql_admin_sql("SELECT VERSION();").strip()
    except Exception as error:  # noqa: B902
        versions["mariadb"] = "unavailable: %s" % error
    import sqlite3
    versions["sqlite"] = sqlite3.sqlite_version
    versions["ansible-core"] = " ".join(versions["ansible-core"])
    return versions


def _worker(config):
    """The pytest-xdist worker id of this process, None in the controller or a plain run."""
    return getattr(config, "workerinput", {}).get("workerid")


def _part_paths():
    return glob.glob(RESULTS + ".part-*")


def pytest_configure(config):
    if _worker(config) is None:  # before any worker starts: no stale parts of an earlier run
        for path in _part_paths():
            os.remove(path)


def pytest_sessionstart(session):
    session.dbsafe_started = time.time()


def _merge_parts():
    """The cases, secret runs and sampler figures the xdist workers left (see below)."""
    for path in sorted(_part_paths()):
        with open(path) as handle:
            part = json.load(handle)
        os.remove(path)
        _CASES.extend(part["cases"])
        harness._SECRET_RUNS.extend(part["secret_runs"])
        for key, value in part["argv_samples"].items():
            harness.SAMPLER_STATS[key] += value


def pytest_sessionfinish(session, exitstatus):
    worker = _worker(session.config)
    if worker is not None:
        # A worker hands its share to the controller, which writes the one results file.
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS + ".part-" + worker, "w") as handle:
            json.dump({"cases": _CASES, "secret_runs": harness._SECRET_RUNS,
                       "argv_samples": harness.SAMPLER_STATS}, handle)
        return
    _merge_parts()
    secret_cases = harness.secret_cases()
    if not _CASES and not secret_cases:
        return
    results = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                        time.gmtime(session.dbsafe_started)),
               "seconds": round(time.time() - session.dbsafe_started),
               "command": "scripts/reliability-report --run",
               "selection": session.config.invocation_params.args,
               "versions": _versions(),
               "cases": _CASES + secret_cases,
               "argv_samples": harness.SAMPLER_STATS}
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as handle:
        json.dump(results, handle, indent=1, sort_keys=True)
    if any(c["status"] == "failed" for c in secret_cases):
        session.exitstatus = 1  # a leaked secret fails the run even if its test passed
