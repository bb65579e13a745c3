"""Online migrations (issue 18, items 1-2) on real PostgreSQL and MariaDB: a guarded migrate with
``online: true`` runs while another session keeps inserting rows; when it fails, Django's reverse
operations undo it - on MariaDB including the operations the failed migration had already run,
on PostgreSQL its transaction rolled back - and every row written meanwhile is still there
(counted by the writer itself), with the schema and django_migrations as before the run. A plan
the running code would trip over is refused before anything is touched."""
import os
import threading
import time

import pytest

import demo
from ansible_run import run_module
from test_risks import columns, fill_books

ENGINES = ["postgres_database", "mysql_database"]

MODELS = """

class Shelf(models.Model):
    label = models.CharField(max_length=40)


class Clash(models.Model):
    name = models.CharField(max_length=40)

    class Meta:
        db_table = "online_clash"
"""

SHELF_ONLY = MODELS.split("\n\nclass Clash", maxsplit=1)[0] + "\n"

# 1: a new table (safe, reversible). 2: a nullable column, then a table that cannot be created
# (a table of that name exists already): both safe for the running code; the second fails.
NEW_TABLE = """migrations.CreateModel('Shelf', [
            ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
            ('label', models.CharField(max_length=40)),
        ]),"""
COLUMN_THEN_CLASH = """migrations.AddField('book', 'online_note', models.TextField(null=True)),
        migrations.CreateModel('Clash', [
            ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
            ('name', models.CharField(max_length=40)),
        ], options={'db_table': 'online_clash'}),"""


def connect(database):
    if database.engine == "postgresql":
        import psycopg
        return psycopg.connect(host=database.host, port=database.port, user=database.user,
                               dbname=database.name, password=database.password or None, autocommit=True)
    import pymysql
    return pymysql.connect(host=database.host, port=int(database.port), user=database.user,
                           password=database.password or "", database=database.name, autocommit=True)


def execute(database, sql):
    connection = connect(database)
    try:
        cursor = connection.cursor()
        cursor.execute(sql)
        return cursor.fetchall() if cursor.description else None
    finally:
        connection.close()


class Writer(threading.Thread):
    """The application, writing while the migrate runs: one INSERT into books_book every 20 ms
    (autocommit), each counted once it committed."""

    def __init__(self, database):
        threading.Thread.__init__(self, daemon=True)
        self.database, self.written, self.error = database, 0, None
        self.done = threading.Event()

    def run(self):
        try:
            connection = connect(self.database)
            try:
                cursor = connection.cursor()
                while not self.done.is_set():
                    cursor.execute("INSERT INTO books_book (title, isbn, cover, slug, pages) "
                                   "VALUES ('written online', '', '', '', 1)")
                    self.written += 1
                    time.sleep(0.02)
            finally:
                connection.close()
        except Exception as error:  # reported by the test
            self.error = error

    def stop(self):
        self.done.set()
        self.join(60)
        assert self.error is None, self.error
        return self.written


def prepared(database, tmp_path, migrations, model_source="", field=None):
    project = demo.copy_demo(tmp_path)
    demo.manage(project, database, "migrate")
    fill_books(project, database)
    if field:
        demo._add_model_field(project, field)
    if model_source:
        with open(os.path.join(project, "books", "models.py"), "a") as handle:
            handle.write(model_source)
    names = []
    for operations in migrations:
        names.append(demo._write_migration(project, "%s_online" % demo.next_number(project),
                                           demo.leaf_migration(project), operations))
    return project, ["books." + name for name in names]


def migrate(project, database, tmp_path, check_mode=False, online=True, **options):
    return run_module("django_migrate_guarded", demo.module_args(
        project, database, backup_dir=str(tmp_path / "backups"), online=online, **options),
        check=check_mode)


def migrate_while_writing(project, database, tmp_path):
    """(the online migrate's result, rows the writer committed from before it to after it)."""
    writer = Writer(database)
    writer.start()
    try:
        time.sleep(0.3)
        result = migrate(project, database, tmp_path)
        time.sleep(0.3)
    finally:
        written = writer.stop()
    return result, written


def tables(database):
    if database.engine == "postgresql":
        sql = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    else:
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
    return sorted(row[0] for row in execute(database, sql))


@pytest.mark.parametrize("fixture", ENGINES)
def test_a_failed_online_migrate_is_undone_and_keeps_every_row_written_meanwhile(fixture, request, tmp_path):
    database = request.getfixturevalue(fixture)
    project, (new_table, failing) = prepared(
        database, tmp_path, [NEW_TABLE, COLUMN_THEN_CLASH], MODELS,
        field="online_note = models.TextField(null=True)")
    # The table the second migration's CreateModel trips over, made outside Django.
    execute(database, "CREATE TABLE online_clash (id integer PRIMARY KEY)")
    cols_before, applied_before, rows_before = columns(database)
    tables_before = tables(database)

    plan = migrate(project, database, tmp_path, check_mode=True)
    assert not plan.get("failed"), plan.get("msg")
    assert plan["online_blockers"] == [], plan["online_blockers"]

    result, written = migrate_while_writing(project, database, tmp_path)

    assert result.get("failed"), result
    message = result["msg"]
    assert "migration %s failed" % failing in message, message
    assert "undone by Django's reverse operations" in message and "proven" in message, message
    assert result["restored"] is False and result["database_as_before"] is True and result["online"] is True
    undone = result["undone"]
    if database.engine == "mysql":
        # No transactional DDL: the failed migration's AddField stayed, and was reversed first.
        assert undone == ["%s (1 of 2 operations)" % failing, new_table], undone
    else:  # its transaction rolled back: only the completed migration is reversed
        assert undone == [new_table], undone
    # Independently: schema and migrations as before, and every row is there - the ones before
    # the run and each one the writer committed during it.
    cols_after, applied_after, rows_after = columns(database)
    assert cols_after == cols_before and "online_note" not in cols_after
    assert applied_after == applied_before
    assert tables(database) == tables_before and "books_shelf" not in tables_before
    assert written > 10, "the writer wrote only %d rows" % written
    assert rows_after == rows_before + written, (rows_before, written, rows_after)
    assert result["rows_written_meanwhile"]["books_book"] > 0
    assert os.path.exists(result["backup"]["path"])  # kept, not used


@pytest.mark.parametrize("fixture", ENGINES)
def test_an_online_migrate_runs_beside_the_writes(fixture, request, tmp_path):
    database = request.getfixturevalue(fixture)
    project, (new_table,) = prepared(database, tmp_path, [NEW_TABLE], SHELF_ONLY)
    rows_before = columns(database)[2]
    result, written = migrate_while_writing(project, database, tmp_path)
    assert not result.get("failed"), result.get("msg")
    assert [step["migration"] for step in result["applied"]] == [new_table]
    assert "books_shelf" in tables(database)
    assert columns(database)[2] == rows_before + written and written > 10

    again = migrate(project, database, tmp_path)
    assert not again.get("failed") and again["changed"] is False, again


@pytest.mark.parametrize("fixture", ENGINES)
def test_online_refuses_what_the_running_code_would_trip_over(fixture, request, tmp_path):
    database = request.getfixturevalue(fixture)
    project = demo.copy_demo(tmp_path)
    demo.manage(project, database, "migrate")
    # Drop a column the running code still selects: incompatible.
    models_py = os.path.join(project, "books", "models.py")
    with open(models_py) as handle:
        source = handle.read()
    with open(models_py, "w") as handle:
        handle.write(source.replace('    slug = models.SlugField(max_length=200, blank=True, default="")\n', ""))
    name = demo._write_migration(project, "%s_drop_slug" % demo.next_number(project),
                                 demo.leaf_migration(project), "migrations.RemoveField('book', 'slug'),")
    before = columns(database)

    plan = migrate(project, database, tmp_path, check_mode=True, online=False)
    assert any(item.startswith("books.%s Remove field slug" % name) for item in plan["online_blockers"]), (
        plan.get("msg"), plan["online_blockers"])

    result = migrate(project, database, tmp_path, allow_data_loss=True)
    assert result.get("failed"), result
    assert "online: true, but 1 operation(s) need the application stopped" in result["msg"], result["msg"]
    assert "books.%s Remove field slug from book on books_book is data_loss" % name in result["msg"]
    assert result["database_changed"] is False and result["backup"] is None
    assert columns(database) == before
    assert not (tmp_path / "backups").exists() or not os.listdir(str(tmp_path / "backups"))


# --- deploy.yml in online mode (local connection; the SSH fleet is tests/field) ---------------


ONLINE_NOTE = "0006_online_note"


def online_release_repo(tmp_path, failing=False):
    """release-1 (tagged) and release-2: a nullable column and a new table - both safe for the
    running code; with ``failing`` release-2's migration also creates a table that exists."""
    from test_playbooks import commit
    import subprocess

    repo = demo.copy_demo(tmp_path / "src")
    with open(os.path.join(repo, ".gitignore"), "w") as handle:
        handle.write("__pycache__/\n*.pyc\ndb.sqlite3*\nmedia/uploads/\n")
    subprocess.run(["git", "init", "--quiet", "--initial-branch=main", repo], check=True)
    shas = {"release-1": commit(repo, "release-1", tag="release-1")}
    demo._add_model_field(repo, "online_note = models.TextField(null=True)")
    source = MODELS if failing else SHELF_ONLY
    with open(os.path.join(repo, "books", "models.py"), "a") as handle:
        handle.write(source)
    operations = ("migrations.AddField('book', 'online_note', models.TextField(null=True)),\n        "
                  + NEW_TABLE + ("\n        " + COLUMN_THEN_CLASH.split("),\n", 1)[1] if failing else ""))
    demo._write_migration(repo, ONLINE_NOTE, demo.leaf_migration(repo), operations)
    shas["release-2"] = commit(repo, "release-2", tag="release-2")
    return repo, shas


def online_fleet(db, tmp_path, apps, failing=False, **extra):
    from test_playbooks import App, inventory

    repo, shas = online_release_repo(tmp_path, failing)
    fleet = [App("app%d" % n, tmp_path, db, repo) for n in (1, 2, 3)]
    apps.extend(fleet)
    fleet[0].running("release-1")
    for app in fleet[1:]:
        app.running("release-1", migrate=False, data=False)
    hosts = dict((app.name, app.hostvars(**extra.get(app.name, {}))) for app in fleet)
    return fleet, shas, inventory(tmp_path, {"django": hosts})


def windows(report):
    return sorted((epoch(h["stopped_at"]), epoch(h["started_at"]), h["host"])
                  for h in report["hosts"] if h["stopped_at"])


def epoch(stamp):
    import calendar
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))


def test_deploy_of_a_compatible_release_runs_online_and_rolls_hosts_one_at_a_time(postgres_database, tmp_path, apps):
    from test_playbooks import playbook, recap, reports

    db = postgres_database
    fleet, shas, inv = online_fleet(db, tmp_path, apps)
    rc, output = playbook("deploy", inv, tmp_path)

    assert rc == 0, output[-5000:]
    assert "mode: online" in output
    [report] = reports(fleet[0])
    assert report["result"] == "succeeded" and report["mode"] == "online" and report["mode_reasons"] == []
    assert [s["migration"] for s in report["migrations"][0]["applied"]] == ["books." + ONLINE_NOTE]
    assert [h["migrated_here"] for h in report["hosts"]] == [True, False, False]
    # The migration ran while every host served (no host was stopped before it), then each host
    # was restarted on its own: no two hosts down at the same time.
    migrated = report["migrations"][0]
    assert migrated["service_window"] is None or migrated["service_window"] == []
    spans = windows(report)
    assert [host for _a, _b, host in spans] == ["app1", "app2", "app3"], spans
    for (_a, end, _h), (start, _b, _g) in zip(spans, spans[1:]):
        assert end <= start + 1, spans  # second resolution in the report
    for app in fleet:
        assert app.get("/health/") == (200, "ok")
        assert app.head_revision() == shas["release-2"]
    assert "online_note" in columns(db)[0]
    assert all(counts["failed"] == 0 for counts in recap(output).values())

    # Nothing left to do: nothing is stopped or reloaded.
    rc, output = playbook("deploy", inv, tmp_path)
    assert rc == 0, output[-3000:]
    assert all(counts["changed"] == 0 for counts in recap(output).values()), recap(output)


def test_an_online_deploy_whose_migration_fails_stops_nothing_and_keeps_the_old_code(mysql_database, tmp_path, apps):
    from test_playbooks import playbook, reports

    db = mysql_database
    fleet, shas, inv = online_fleet(db, tmp_path, apps, failing=True)
    execute(db, "CREATE TABLE online_clash (id integer PRIMARY KEY)")
    before = columns(db)
    rc, output = playbook("deploy", inv, tmp_path)

    assert rc != 0, output[-3000:]
    [report] = reports(fleet[0])
    assert report["result"] == "failed" and report["mode"] == "online"
    assert "undone by Django's reverse operations" in report["message"], report["message"]
    assert all(h["service"] == "never stopped" for h in report["hosts"]), report["hosts"]
    assert columns(db) == before
    for app in fleet:
        assert app.get("/health/") == (200, "ok")
        assert app.head_revision() == shas["release-1"]


def test_a_host_failing_its_health_check_stops_the_rollout(postgres_database, tmp_path, apps):
    from test_playbooks import playbook, reports

    db = postgres_database
    # app2 answers on another port than the one its health check asks: it "fails" after its restart.
    fleet, shas, inv = online_fleet(db, tmp_path, apps, app2={
        "django_migrate_health_url": "http://127.0.0.1:1/health/", "django_migrate_health_retries": 1,
        "django_migrate_health_delay": 1, "django_migrate_health_timeout": 2})
    rc, output = playbook("deploy", inv, tmp_path)

    assert rc != 0, output[-3000:]
    [report] = reports(fleet[0])
    assert report["mode"] == "online"
    assert "rollout stopped at app2" in report["message"], report["message"]
    assert "previous code was put back" in report["message"], report["message"]
    revisions = [app.head_revision() for app in fleet]
    assert revisions == [shas["release-2"], shas["release-1"], shas["release-1"]], revisions
    from test_playbooks import wait_for
    for app in fleet:
        wait_for(app.url("/health/"))
        assert app.get("/health/") == (200, "ok")  # every host serves, old or new code
    hosts = dict((h["host"], h) for h in report["hosts"])
    assert [hosts[name]["revision_after"] for name in ("app1", "app2", "app3")] == revisions
    assert "online_note" in columns(db)[0]  # the database stays migrated: the old code works on it


# --- a split deploy's stages (the module; the playbook over SSH is tests/field) ----------------

DROP_SLUG = "migrations.RemoveField('book', 'slug'),"


def without_slug(project):
    models_py = os.path.join(project, "books", "models.py")
    with open(models_py) as handle:
        source = handle.read()
    with open(models_py, "w") as handle:
        handle.write(source.replace('    slug = models.SlugField(max_length=200, blank=True, default="")\n', ""))


@pytest.mark.parametrize("fixture", ENGINES)
def test_the_expand_stage_runs_only_what_the_previous_code_survives_and_the_contract_stage_the_rest(
        fixture, request, tmp_path):
    database = request.getfixturevalue(fixture)
    project, (table, drop) = prepared(database, tmp_path, [NEW_TABLE, DROP_SLUG],
                                      SHELF_ONLY)
    without_slug(project)
    plan = migrate(project, database, tmp_path, check_mode=True, online=False, allow_data_loss=True)
    assert plan["stages"] == {"expand": [table], "contract": [drop], "blockers": []}, plan.get("stages")

    early = migrate(project, database, tmp_path, stage="contract", allow_data_loss=True)
    assert early.get("failed") and "the expand migrations %s are not applied" % table in early["msg"], early
    assert "slug" in columns(database)[0]

    expand = migrate(project, database, tmp_path, stage="expand")
    assert not expand.get("failed"), expand.get("msg")
    assert [step["migration"] for step in expand["applied"]] == [table]
    cols, applied, _rows = columns(database)
    assert "slug" in cols and ("books", drop.split(".")[1]) not in applied and "books_shelf" in tables(database)

    contract = migrate(project, database, tmp_path, stage="contract", allow_data_loss=True)
    assert not contract.get("failed"), contract.get("msg")
    assert [step["migration"] for step in contract["applied"]] == [drop]
    assert "slug" not in columns(database)[0]


@pytest.mark.parametrize("fixture", ["postgres_database"])
def test_a_plan_whose_expand_step_depends_on_a_removal_cannot_be_split(fixture, request, tmp_path):
    database = request.getfixturevalue(fixture)
    project, (drop, table) = prepared(database, tmp_path, [DROP_SLUG, NEW_TABLE],
                                      SHELF_ONLY)
    without_slug(project)
    plan = migrate(project, database, tmp_path, check_mode=True, online=False, allow_data_loss=True)
    assert plan["stages"]["blockers"] == [
        "%s depends on %s, which may only run once no host runs the previous code: the plan cannot be split"
        % (table, drop)], plan["stages"]
    refused = migrate(project, database, tmp_path, stage="expand")
    assert refused.get("failed") and "cannot be split" in refused["msg"] and refused["database_changed"] is False
