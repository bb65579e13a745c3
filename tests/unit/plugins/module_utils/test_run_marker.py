"""run_marker.py: the takeover decisions and the marker file's life."""
import os
import signal
import subprocess
import time

import pytest

from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    BackupError,
    MigrationFailed,
    PreflightRefused,
    RestoreFailed,
)
from ansible_collections.dbsafe.django.plugins.module_utils import processes
from ansible_collections.dbsafe.django.plugins.module_utils.run_marker import (
    RunMarker,
    holder_alive,
    restore_and_prove,
    take_over,
    takeover_decision,
    unexplained_changes,
)

DEAD = {"host": "web1", "pid": 4242, "since": "2026-01-01T10:00:00Z"}


def test_died_during_backup_goes_on_with_a_warning():
    action, message = takeover_decision({"phase": "backup", "holder": DEAD}, alive=False)
    assert action == "continue"
    assert "lock left by host web1, pid 4242" in message and "process gone" in message


def test_died_while_migrating_restores_its_backup():
    action, message = takeover_decision({"phase": "migrating", "holder": DEAD,
                                         "backup": {"path": "/b/x.sqlite.gz"},
                                         "snapshot": {"schema": {}}}, alive=False)
    assert action == "restore" and "/b/x.sqlite.gz" in message


def test_a_live_holder_or_no_backup_is_refused():
    assert takeover_decision({"phase": "backup", "holder": DEAD}, alive=True)[0] == "refuse"
    action, message = takeover_decision({"phase": "migrating", "holder": DEAD, "backup": None,
                                         "path": "/b/.dbsafe-run-x.json"}, alive=False)
    assert action == "refuse" and "half-migrated" in message and "/b/.dbsafe-run-x.json" in message
    assert takeover_decision({"phase": "unreadable"}, alive=False)[0] == "refuse"


def test_holder_alive_only_for_a_running_process_of_this_host():
    assert holder_alive(dict(DEAD, host="here"), hostname="here", pid_exists=lambda pid: True)
    assert not holder_alive(dict(DEAD, host="here"), hostname="here", pid_exists=lambda pid: False)
    assert not holder_alive(dict(DEAD, host="elsewhere"), hostname="here",
                            pid_exists=lambda pid: True)
    assert not holder_alive(None, hostname="here")


def test_tracking_clears_on_success_and_known_failures_but_keeps_after_a_failed_restore(tmp_path):
    marker = RunMarker(str(tmp_path), "default-db")
    with marker.tracking(DEAD) as track:
        assert marker.read()["phase"] == "backup"
        track.migrating({"schema": {}}, {"path": "/b/x", "sha256": "0" * 64})
        assert marker.read()["phase"] == "migrating"
        assert marker.read()["snapshot"] == {"schema": {}}
        assert os.stat(marker.path).st_mode & 0o777 == 0o600
    assert marker.read() is None
    with pytest.raises(MigrationFailed):
        with marker.tracking(DEAD):
            raise MigrationFailed("restored and verified")
    assert marker.read() is None
    with pytest.raises(RestoreFailed):
        with marker.tracking(DEAD):
            raise RestoreFailed("the restore failed too")
    assert marker.read()["phase"] == "backup"


def test_take_over_warns_about_a_dead_sqlite_holder_without_a_marker(tmp_path):
    warnings = []
    take_over(RunMarker(str(tmp_path), "x"), {"taken_over_from": DEAD}, None, None,
              warnings.append)
    assert warnings == ["lock left by host web1, pid 4242, since 2026-01-01T10:00:00Z "
                        "(process gone), taken over"]


def test_take_over_refuses_and_keeps_the_marker_of_a_live_run(tmp_path):
    marker = RunMarker(str(tmp_path), "x")
    marker.write(phase="migrating", holder=dict(DEAD, host=os.uname()[1], pid=os.getppid()))
    with pytest.raises(PreflightRefused) as raised:
        take_over(marker, {}, None, None, lambda message: None)
    assert "still runs" in raised.value.msg
    assert marker.read() is not None


def test_a_marker_that_cannot_be_written_is_a_backup_error(tmp_path):
    marker = RunMarker(str(tmp_path / "missing-directory"), "x")
    with pytest.raises(BackupError) as raised:
        with marker.tracking(DEAD):
            pass
    assert "cannot write the run marker" in raised.value.msg


def _snapshot(books_columns, books_rows, books_hash, migrations, authors_hash="a1"):
    return {
        "schema": {"books_book": {"columns": dict((c, {"type": "int"}) for c in books_columns)},
                   "authors_author": {"columns": {"id": {"type": "int"}}}},
        "tables": {"books_book": {"rows": books_rows, "hash": books_hash},
                   "authors_author": {"rows": 2, "hash": authors_hash}},
        "migrations": sorted(migrations),
    }


BEFORE = _snapshot(["id"], 3, "h1", [["books", "0001_initial"]])
RECORD = {"phase": "migrating", "holder": DEAD, "snapshot": BEFORE,
          "plan": ["books.0002_slow"], "backup": {"path": "/b/x.gz"}}
# The same record written by a run on another host (so nobody can look for its process).
ELSEWHERE = dict(RECORD)
ELSEWHERE["holder"] = dict(DEAD, host="elsewhere")


def test_nothing_left_by_the_dead_run_is_no_change():
    assert unexplained_changes(RECORD, BEFORE) == ([], [])


def test_what_the_dead_runs_plan_did_is_explained():
    # MariaDB: the column stays (no transactional DDL), its default changes the content, and
    # the migration may even be recorded.
    half_done = _snapshot(["id", "processed"], 3, "h2",
                          [["books", "0001_initial"], ["books", "0002_slow"]])
    changed, unexplained = unexplained_changes(RECORD, half_done)
    assert changed and unexplained == []


def test_writes_since_the_dead_run_are_not_explained():
    new_rows = _snapshot(["id", "processed"], 4, "h2", [["books", "0001_initial"]])
    assert [d["kind"] for d in unexplained_changes(RECORD, new_rows)[1]] == ["rows"]
    other_table = _snapshot(["id"], 3, "h1", [["books", "0001_initial"]], authors_hash="a2")
    assert [d["table"] for d in unexplained_changes(RECORD, other_table)[1]] == ["authors_author"]
    other_migration = _snapshot(["id"], 3, "h1", [["books", "0001_initial"], ["authors", "0009_x"]])
    assert [d["kind"] for d in unexplained_changes(RECORD, other_migration)[1]] == ["migrations"]


class _Engine:
    """Stands in for the engine's snapshot and restore: the decision under test is ours."""

    def __init__(self, current):
        self.current = current

    def snapshot(self):
        return self.current


def test_take_over_refuses_to_restore_over_later_writes(tmp_path):
    marker = RunMarker(str(tmp_path), "x")
    marker.write(**ELSEWHERE)
    restored = []
    store = type("Store", (), {"restore": lambda self, path, engine: restored.append(path)})
    later = _snapshot(["id", "processed"], 5, "h9", [["books", "0001_initial"]])
    with pytest.raises(PreflightRefused) as raised:
        take_over(marker, {}, _Engine(later), lambda directory: store(), lambda message: None)
    assert "would lose those changes" in raised.value.msg and "/b/x.gz" in raised.value.msg
    assert restored == [] and marker.read() is not None


def test_take_over_goes_on_when_nothing_remained(tmp_path):
    marker = RunMarker(str(tmp_path), "x")
    marker.write(**ELSEWHERE)
    warnings = []
    take_over(marker, {}, _Engine(BEFORE), lambda directory: None, warnings.append)
    assert "nothing of it remained" in warnings[0] and marker.read() is None


def test_a_killed_process_not_yet_reaped_is_not_alive():
    # A real zombie: a child killed and not waited for (its parent, this test, is alive).
    child = subprocess.Popen(["sleep", "60"])
    try:
        child.send_signal(signal.SIGKILL)
        deadline = time.time() + 10
        while not processes._is_zombie(child.pid) and time.time() < deadline:
            time.sleep(0.01)
        assert processes._is_zombie(child.pid)
        assert not processes.pid_exists(child.pid)
        assert processes.pid_exists(os.getpid())
    finally:
        child.wait()


class _Store:
    def __init__(self, error=None):
        self.error = error
        self.restored = []

    def restore(self, path, engine):
        if self.error:
            raise self.error
        self.restored.append(path)


class _Engine:
    def __init__(self, snapshot):
        self.snapshot = lambda: snapshot


def test_restore_and_prove_restores_then_compares_with_the_snapshot_before():
    before = _snapshot(["id"], 2, "h", [["books", "0001"]])
    store = _Store()
    assert restore_and_prove(store, "/b/x", _Engine(before), before) == []
    assert store.restored == ["/b/x"]
    after = _snapshot(["id"], 3, "h2", [["books", "0001"]])
    assert restore_and_prove(store, "/b/x", _Engine(after), before) != []
    steps = []
    restore_and_prove(store, "/b/x", _Engine(before), before,
                      timed=lambda name, function, *args: steps.append(name) or function(*args))
    assert steps == ["restore", "snapshot_after_restore"]
    with pytest.raises(RestoreFailed):
        restore_and_prove(_Store(RestoreFailed("no")), "/b/x", _Engine(before), before)


def test_a_dead_online_run_is_never_restored_under_the_serving_application(tmp_path):
    marker = RunMarker(str(tmp_path), "x")
    marker.write(**dict(ELSEWHERE, online=True))
    restored = []
    store = type("Store", (), {"restore": lambda self, path, engine: restored.append(path)})
    # What its own plan explains (a column it added, its migration row) - a restore otherwise.
    left = _snapshot(["id", "slow"], 3, "h2", [["books", "0001_initial"], ["books", "0002_slow"]])
    with pytest.raises(PreflightRefused) as raised:
        take_over(marker, {}, _Engine(left), lambda directory: store(), lambda message: None)
    message = raised.value.msg
    assert "online run" in message and "NOT restored automatically" in message and "/b/x.gz" in message
    assert restored == [] and marker.read() is not None and raised.value.details["online"] is True


def test_a_dead_online_run_that_left_nothing_is_taken_over(tmp_path):
    marker = RunMarker(str(tmp_path), "x")
    marker.write(**dict(ELSEWHERE, online=True))
    warnings = []
    take_over(marker, {}, _Engine(BEFORE), lambda directory: None, warnings.append)
    assert "the online run died while migrating; nothing of it remained" in warnings[0]
    assert marker.read() is None
