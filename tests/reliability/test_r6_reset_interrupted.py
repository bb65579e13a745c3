"""R6 - an operator's signal during ``django_reset``: the reset has wiped the database and its
migrate is under way when SIGTERM (or Ctrl-C's SIGINT) reaches the module. The project's
interpreter is stopped, the safety backup restored, and the task fails saying it was
interrupted - the database exactly as before the reset, read from its own catalog.
"""
import os
import signal
import threading

import pytest

import demo
import harness
from harness import prepared
from test_r6_process_faults import add_held_migration, catalog, held_interpreter_pid
from ansible_collections.dbsafe.django.plugins.module_utils import processes

CASES = [("postgresql", signal.SIGTERM), ("mysql", signal.SIGTERM), ("mysql", signal.SIGINT)]


@pytest.mark.parametrize("engine,signum", CASES,
                         ids=["%s-%s" % (e, signal.Signals(s).name) for e, s in CASES])
def test_a_signal_during_the_resets_migrate_restores_the_safety_backup(case, engine, signum,
                                                                       fresh_database, tmp_path):
    name = signal.Signals(signum).name
    case("R6", engine, "%s to django_reset during its migrate (database wiped): interpreter "
                       "stopped, safety backup restored, message says interrupted" % name)
    db = fresh_database(engine)
    project = prepared(db, tmp_path)
    add_held_migration(project)
    before = catalog(db)
    seen = {}

    def interrupt():
        interpreter = held_interpreter_pid(project)
        seen["interpreter"] = processes.identity(interpreter)
        os.kill(harness.parent_of(interpreter), signum)  # the module: the interpreter's parent

    interrupter = threading.Thread(target=interrupt, daemon=True)
    interrupter.start()
    result = harness.watched_run(db, "django_reset", demo.module_args(
        project, db, mode="schema", backup_dir=str(tmp_path / "backups")), "R6 reset %s" % name)
    interrupter.join(5)

    case.message = result.get("msg", "")
    assert "interpreter" in seen, "the reset's migrate never reached the held migration: %s" % result.get("msg")
    assert result["failed"] is True, result.get("msg")
    assert result["msg"].startswith("interrupted by %s" % name), result["msg"]
    assert "was restored" in result["msg"], result["msg"]
    assert result.get("restored") is True
    assert result.get("interrupted", [None])[0] == name
    assert not processes.still_running(seen["interpreter"])
    assert catalog(db) == before
