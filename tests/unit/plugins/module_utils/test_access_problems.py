"""The engines' access checks: a read-only target and objects a restore could not re-create,
decided from what the catalogs said (the queries themselves run in tests/reliability R6)."""
import json

from ansible_collections.dbsafe.django.plugins.module_utils.engines import (
    mysql_privileges as my,
    postgresql_privileges as pg,
)

WHERE = "the database"


def pg_access(**changes):
    access = {"user": "app", "superuser": False, "in_recovery": False,
              "default_transaction_read_only": "off", "transaction_read_only": "off",
              "schema": "public", "can_create_in_schema": True, "foreign": []}
    access.update(changes)
    return pg.access_from_output("\n" + json.dumps(access) + "\n")


def test_postgresql_owner_of_everything_may_write_and_restore():
    access = pg_access()
    assert pg.write_problems(access, WHERE) == [] and pg.restore_problems(access, WHERE) == []


def test_postgresql_foreign_objects_are_listed_unless_superuser():
    foreign = [{"kind": "extension", "name": "citext", "owner": "postgres"},
               {"kind": "view", "name": "public.v", "owner": "report"}]
    problems = pg.restore_problems(pg_access(foreign=foreign), WHERE)
    assert len(problems) == 1
    assert "2 object(s)" in problems[0] and "extension citext (owner postgres)" in problems[0]
    assert "view public.v (owner report)" in problems[0]
    assert "privileged restore connection" in problems[0]
    assert pg.restore_problems(pg_access(foreign=foreign, superuser=True), WHERE) == []


def test_postgresql_long_lists_are_cut():
    foreign = [{"kind": "table", "name": "t%d" % i, "owner": "x"} for i in range(40)]
    problem = pg.restore_problems(pg_access(foreign=foreign), WHERE)[0]
    assert "and %d more" % (40 - pg.LISTED) in problem and "t39" not in problem


def test_postgresql_read_only_targets():
    assert "hot standby" in pg.write_problems(pg_access(in_recovery=True), WHERE)[0]
    assert "default_transaction_read_only = on" in pg.write_problems(
        pg_access(default_transaction_read_only="on", transaction_read_only="on"), WHERE)[0]
    assert len(pg.write_problems(pg_access(default_transaction_read_only="on",
                                           transaction_read_only="on"), WHERE)) == 1
    assert "cannot create tables in schema public" in pg.write_problems(
        pg_access(can_create_in_schema=False), WHERE)[0]
    assert pg.write_problems(pg_access(can_create_in_schema=False, superuser=True), WHERE) == []


def my_access(privileges, objects=(), user="app@%", read_only="OFF", innodb_read_only="OFF",
              version="10.11.6-MariaDB"):
    lines = [json.dumps({"kind": "server", "user": user, "version": version,
                         "read_only": read_only, "innodb_read_only": innodb_read_only})]
    lines += [json.dumps({"kind": "privilege", "name": name}) for name in privileges]
    lines += [json.dumps(dict(item, kind="object")) for item in objects]
    return my.access_from_output("\n".join(lines))


ALL = ["SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "INDEX", "LOCK TABLES",
       "CREATE VIEW", "SHOW VIEW", "CREATE ROUTINE", "ALTER ROUTINE", "TRIGGER", "EVENT"]


def test_mysql_definers_other_than_the_user():
    objects = [{"type": "view", "name": "v", "definer": "root@localhost"},
               {"type": "trigger", "name": "t", "definer": "app@%"}]
    problems = my.restore_problems(my_access(ALL, objects), WHERE)
    assert len(problems) == 1 and "view v (DEFINER=root@localhost)" in problems[0]
    assert "trigger t" not in problems[0] and "SET USER" in problems[0]
    assert my.restore_problems(my_access(ALL + ["SET USER"], objects), WHERE) == []


def test_mysql_privileges_the_objects_need():
    objects = [{"type": "procedure", "name": "p", "definer": "app@%"}]
    privileges = [p for p in ALL if p not in ("CREATE ROUTINE", "ALTER ROUTINE")]
    problems = my.restore_problems(my_access(privileges, objects), WHERE)
    assert problems and "CREATE ROUTINE, ALTER ROUTINE" in problems[0]
    # Without routines those privileges are not needed.
    assert my.restore_problems(my_access(privileges), WHERE) == []


def test_mysql_read_only_targets():
    assert my.write_problems(my_access(ALL), WHERE) == []
    assert "@@read_only" in my.write_problems(my_access(ALL, read_only="ON"), WHERE)[0]
    assert my.write_problems(my_access(ALL + ["READ_ONLY ADMIN"], read_only="ON"), WHERE) == []
    # MariaDB 10.11 took the bypass out of SUPER; older servers and MySQL keep it there.
    assert my.write_problems(my_access(ALL + ["SUPER"], read_only="1"), WHERE)
    assert my.write_problems(my_access(ALL + ["SUPER"], read_only="1", version="10.6.1-MariaDB"),
                             WHERE) == []
    assert "innodb_read_only" in my.write_problems(my_access(ALL, innodb_read_only="ON"), WHERE)[0]
    problem = my.write_problems(my_access(["SELECT"]), WHERE)[0]
    assert "INSERT, UPDATE, DELETE, CREATE, DROP, ALTER" in problem


def test_mysql_option_file_bounds_connecting_and_the_restore_lock_wait():
    from ansible_collections.dbsafe.django.plugins.module_utils.connection import Connection
    from ansible_collections.dbsafe.django.plugins.module_utils.engines.mysql import MysqlEngine
    engine = MysqlEngine(Connection("mysql", "shop", "db1", 3306, "app", "pw"), runner=None)
    text = engine.option_file_text()
    client, _group, own = text.partition("[mysql]\n")
    # mariadb-dump reads [client] and refuses connect-timeout: only the client's group has it.
    assert "connect-timeout" not in client and "connect-timeout=10" in own
    assert "lock_wait_timeout" not in text
    engine.restore_lock_wait = 60
    assert 'init-command="SET SESSION lock_wait_timeout=60"' in engine.option_file_text()
    slow = MysqlEngine(Connection("mysql", "shop", options={"connect_timeout": 3}), runner=None)
    assert "connect-timeout=3" in slow.option_file_text()
