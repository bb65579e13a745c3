"""runner.exit_status: a killed tool is named as killed, with its signal."""
from ansible_collections.dbsafe.django.plugins.module_utils.runner import exit_status


def test_exit_codes_and_signals():
    assert exit_status(3) == "exited with 3"
    assert exit_status(-9) == "was killed by signal 9 (SIGKILL)"
    assert exit_status(-40) == "was killed by signal 40 (signal)"


def test_the_first_error_line_is_never_a_notice():
    from ansible_collections.dbsafe.django.plugins.module_utils.errors import first_error_line
    stderr = ("psql:<stdin>:40: NOTICE:  drop cascades to 2 other objects\n"
              "DETAIL:  drop cascades to table a\n"
              "psql:<stdin>:41: ERROR:  relation \"b\" does not exist\n")
    assert first_error_line(stderr) == 'psql:<stdin>:41: ERROR:  relation "b" does not exist'
    assert first_error_line("NOTICE:  drop cascades to 2 other objects\n") == ""
    assert first_error_line("something went wrong\nWARNING: x\n") == "something went wrong"
    # A notice that merely mentions an error is still a notice.
    assert first_error_line("NOTICE:  error-free\n") == ""


def test_killed_by_signal_is_the_cause():
    from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
        CommandError,
        killed_by_signal,
    )
    killed = CommandError("psql was killed by signal 9 (SIGKILL): NOTICE: x", rc=-9,
                          status="psql was killed by signal 9 (SIGKILL)")
    assert killed_by_signal(killed) == "psql was killed by signal 9 (SIGKILL)"
    assert killed_by_signal(CommandError("psql exited with 3", rc=3)) is None
    assert killed_by_signal(CommandError("x", rc=-15)) == "it was killed by signal 15"


def test_a_killed_engine_client_is_named_not_its_notice():
    from ansible_collections.dbsafe.django.plugins.module_utils.connection import Connection
    from ansible_collections.dbsafe.django.plugins.module_utils.engines.postgresql import (
        PostgresqlEngine,
    )
    from ansible_collections.dbsafe.django.plugins.module_utils.errors import CommandError
    engine = PostgresqlEngine(Connection("postgresql", "shop", "db1", 5432, "app"), runner=None)
    error = CommandError("psql was killed by signal 9 (SIGKILL): NOTICE: drop cascades", rc=-9,
                         stderr="NOTICE:  drop cascades to 2 other objects",
                         status="psql was killed by signal 9 (SIGKILL)")
    message = engine.error(error, "restore").msg
    assert "psql was killed by signal 9 (SIGKILL)" in message and "NOTICE" not in message


def test_a_notices_continuation_lines_are_not_the_cause():
    from ansible_collections.dbsafe.django.plugins.module_utils.errors import first_error_line
    stderr = ("NOTICE:  drop cascades to 2 other objects\n"
              "DETAIL:  drop cascades to constraint a_fk on table a\n"
              "drop cascades to constraint b_fk on table b\n")
    assert first_error_line(stderr) == ""
    assert first_error_line(stderr + "ERROR:  out of memory\n") == "ERROR:  out of memory"
    assert first_error_line("WARNING: x\n", errors_only=True) == ""
