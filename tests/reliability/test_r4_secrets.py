"""R4 - secrets: the password in no process's argv, no result, no output; backups 0600 in 0700.

Every module run of the suite on PostgreSQL and MariaDB goes through harness.watched_run,
which samples /proc/*/cmdline while it runs and checks what comes back: each run is an R4 case
in the report. This file adds the runs the other requirements do not make - a plain dump, a
restore and a drift check - and checks the backup directory as a whole.
"""
import os
import secrets
import stat
import subprocess
import sys

import pytest

import demo
import harness


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
def test_dump_restore_and_drift_never_show_the_password(case, engine, fresh_database, tmp_path):
    case("R4", engine, "backup directory: every file 0600, every directory 0700")
    db = fresh_database(engine)
    project = harness.prepared(db, tmp_path)
    backups = str(tmp_path / "backups")
    args = demo.module_args(project, db, backup_dir=backups)

    dumped = harness.watched_run(db, "db_backup", args, "R4")
    restored = harness.watched_run(db, "db_backup", dict(args, state="restore"), "R4")
    drift = harness.watched_run(db, "django_schema_drift", demo.module_args(project, db), "R4")

    for result in (dumped, restored, drift):
        assert not result["failed"], result.get("msg")
    modes = {}
    for root, dirs, names in os.walk(backups):
        for name in dirs + [root]:
            modes[os.path.join(root, name)] = stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode)
        for name in names:
            modes[os.path.join(root, name)] = stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode)
    wrong = dict((path, "%o" % mode) for path, mode in modes.items()
                 if mode != (0o700 if os.path.isdir(path) else 0o600))
    assert not wrong, wrong
    case.message = "%d files and directories checked" % len(modes)


def test_the_sampler_catches_a_password_on_a_command_line(case):
    case("R4", "-", "self-test: the argv sampler catches a secret put on a command line")
    secret = "dbsafe-" + secrets.token_hex(8)
    with harness.ArgvSampler([secret]) as sampler:
        subprocess.run([sys.executable, "-c", "import time; time.sleep(0.5)", secret],
                       check=True)
    case.message = "caught in %d samples" % len(sampler.leaks)
    assert sampler.leaks and secret in sampler.leaks[0]
