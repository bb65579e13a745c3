"""prefix_files: the MySQL option file behind db_command_prefix is made where the prefix runs,
0600, from standard input, once per content and module call, and removed at the end. The prefix
here is /usr/bin/env, so mktemp, tee and rm really run (on this host); the compose tests
(tests/containers) run the same through podman-compose exec into a database container."""
import os
import stat

import pytest

from ansible_collections.dbsafe.django.plugins.module_utils.connection import Connection
from ansible_collections.dbsafe.django.plugins.module_utils.engines.prefix_files import prefix_files
from ansible_collections.dbsafe.django.plugins.module_utils.engines.registry import engine_for
from ansible_collections.dbsafe.django.plugins.module_utils.errors import EngineError
from ansible_collections.dbsafe.django.plugins.module_utils.runner import Runner

from runner_double import run_command

PASSWORD = "s3cret-option-file"


class RecordingRunner(Runner):
    def __init__(self, prefix):
        super(RecordingRunner, self).__init__(run_command, db_command_prefix=prefix)
        self.ran = []

    def run(self, argv, env=None, data=None, check=True, cwd=None, binary_data=False):
        self.ran.append(list(argv))
        return super(RecordingRunner, self).run(argv, env=env, data=data, check=check, cwd=cwd,
                                                binary_data=binary_data)


def mysql_engine(runner):
    return engine_for(Connection("mysql", "shop", "db", 3306, "app", PASSWORD), runner)


def test_the_option_file_is_made_where_the_prefix_runs_and_removed_at_the_end():
    runner = RecordingRunner(["/usr/bin/env"])
    engine = mysql_engine(runner)
    with engine.option_file() as first:
        assert stat.S_IMODE(os.stat(first).st_mode) == 0o600
        with open(first) as handle:
            text = handle.read()
        assert "password=\"%s\"" % PASSWORD in text and text.startswith("[client]")
    # The same content again (another client start, another engine of the same call): reused.
    with mysql_engine(runner).option_file() as second:
        assert second == first and os.path.exists(second)
    assert [argv[1] for argv in runner.ran] == ["mktemp", "tee"]
    assert all(PASSWORD not in " ".join(argv) for argv in runner.ran)
    prefix_files(runner).remove_all()
    assert not os.path.exists(first)
    assert runner.ran[-1] == ["/usr/bin/env", "rm", "-f", "--", first]


def test_another_content_is_another_file():
    runner = RecordingRunner(["/usr/bin/env"])
    files = prefix_files(runner)
    try:
        assert files.path_for("a\n") != files.path_for("b\n")
        assert files.path_for("a\n") == files.path_for("a\n")
    finally:
        files.remove_all()


def test_a_prefix_that_cannot_make_the_file_says_so():
    runner = RecordingRunner(["/usr/bin/env", "--chdir=/nonexistent-dbsafe"])
    with pytest.raises(EngineError) as error:
        prefix_files(runner).path_for("x\n")
    assert "cannot make a private file through db_command_prefix /usr/bin/env --chdir=/nonexistent-dbsafe " \
        "(mktemp)" in str(error.value)
