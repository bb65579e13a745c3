"""db_command_prefix: every database tool's argv is built by Engine.tool_argv, behind the prefix
the runner carries; what needs this host's paths is refused with a prefix (no server needed;
the real run through a network namespace is tests/integration/test_db_command_prefix.py)."""
import pytest

from ansible_collections.dbsafe.django.plugins.module_utils.connection import Connection
from ansible_collections.dbsafe.django.plugins.module_utils.engines.postgresql_archive import pg_restore_argv
from ansible_collections.dbsafe.django.plugins.module_utils.engines.registry import engine_for
from ansible_collections.dbsafe.django.plugins.module_utils.errors import CommandError, EngineError
from ansible_collections.dbsafe.django.plugins.module_utils.runner import CommandResult, Runner

PREFIX = ["docker", "compose", "exec", "-T", "db"]


class RecordingRunner(Runner):
    """Answers ``--version`` for the tools in ``present`` (behind the prefix), records every run."""

    def __init__(self, prefix, present=("psql", "pg_dump", "pg_restore", "mysql", "mysqldump")):
        super(RecordingRunner, self).__init__(None, db_command_prefix=prefix)
        self.present = present
        self.ran = []

    def run(self, argv, env=None, data=None, check=True, cwd=None, binary_data=False):
        self.ran.append(list(argv))
        tool = argv[len(self.db_command_prefix)]
        if tool not in self.present:
            raise CommandError("%s exited with 127" % argv[0], stderr="exec: %s: not found" % tool)
        return CommandResult(argv, 0, "%s (fake) 15.4\n" % tool, "")


def engine(kind, prefix, **kwargs):
    return engine_for(Connection(kind, "shop", "db", 5432, "app", "s3cret"), RecordingRunner(prefix, **kwargs))


def test_without_a_prefix_the_tool_is_this_hosts():
    argv = engine("postgresql", []).psql_argv("-c", "SELECT 1")
    assert argv[0].startswith("/") and argv[0].endswith("/psql")
    assert argv[-2:] == ["-c", "SELECT 1"]


def test_with_a_prefix_the_tool_is_the_bare_name_behind_it():
    pg = engine("postgresql", PREFIX)
    assert pg.psql_argv("-c", "SELECT 1")[:len(PREFIX) + 1] == PREFIX + ["psql"]
    # Found by asking through the prefix, once; the version check reuses that answer.
    assert pg.runner.ran == [PREFIX + ["psql", "--version"]]
    assert pg.version_output("psql") == "psql (fake) 15.4\n"
    assert pg.runner.ran == [PREFIX + ["psql", "--version"]]


def test_the_password_is_never_in_the_argv():
    pg = engine("postgresql", PREFIX)
    assert "s3cret" not in " ".join(pg.psql_argv())
    assert pg.env()["PGPASSWORD"] == "s3cret"


def test_mysql_takes_the_first_name_that_answers_behind_the_prefix():
    my = engine("mysql", PREFIX, present=("mysql", "mysqldump"))
    argv = my.client_argv("/tmp/x.cnf")
    assert argv[:len(PREFIX) + 1] == PREFIX + ["mysql"]
    assert [run[len(PREFIX)] for run in my.runner.ran] == ["mariadb", "mysql"]


def test_a_tool_missing_behind_the_prefix_is_named_with_the_prefix():
    pg = engine("postgresql", PREFIX, present=())
    with pytest.raises(EngineError) as raised:
        pg.psql_argv()
    assert "psql does not run through db_command_prefix docker compose exec -T db" in raised.value.msg
    assert "not found" in raised.value.msg and "postgresql-client" in raised.value.msg


@pytest.mark.parametrize("call", ["dump", "restore"])
def test_the_directory_format_is_refused_behind_a_prefix(tmp_path, call):
    pg = engine("postgresql", PREFIX)
    with pytest.raises(EngineError) as raised:
        getattr(pg, call)(str(tmp_path), fmt="directory")
    assert "the directory format" in raised.value.msg
    assert "with db_command_prefix use the custom format" in raised.value.msg
    assert pg.runner.ran == []  # refused before any tool ran


def test_a_parallel_restore_is_refused_behind_a_prefix(tmp_path):
    dump = tmp_path / "x.pgdump"
    dump.write_bytes(b"PGDMP")
    pg = engine("postgresql", PREFIX)
    with pytest.raises(EngineError) as raised:
        pg.restore(str(dump), fmt="custom", jobs=4)
    assert "a parallel restore (jobs=4)" in raised.value.msg and "restore with jobs=1" in raised.value.msg


def test_sqlite_refuses_a_prefix():
    with pytest.raises(EngineError) as raised:
        engine_for(Connection("sqlite", "/srv/db.sqlite3"), RecordingRunner(PREFIX))
    assert "cannot apply to the SQLite database /srv/db.sqlite3" in raised.value.msg


def test_engines_made_from_an_engine_keep_the_prefix():
    pg = engine("postgresql", PREFIX)
    assert pg.for_database("other").prefix == PREFIX


def test_the_archive_check_runs_pg_restore_behind_the_prefix():
    assert pg_restore_argv(RecordingRunner(PREFIX), "--list") == PREFIX + ["pg_restore", "--list"]
    assert pg_restore_argv(RecordingRunner([]), "--list")[0].endswith("/pg_restore")
