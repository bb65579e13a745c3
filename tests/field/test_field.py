"""Issue 13, item 1: the playbooks as operations teams run them - over SSH, ``become`` to an
unprivileged app user through sudo, three app hosts on ONE database with a real password, on
PostgreSQL (an own cluster with scram-sha-256) and MariaDB - and item 2: no secret in any
command line, in the ``-vvv`` output, in the sudo log or in a report, for every playbook run.

Each test asserts what issue 13 asks for, not what the playbooks do today. The secret checks
of all runs are asserted per playbook at the end (test_no_secret_anywhere) and written to
build/reliability/field.json.
"""
import json
import os
import re
import secrets
import shutil
import subprocess
import time

import pytest

import fleet as field
import harness as r4
from ansible_run import ROOT, _bin, ansible_env, run_module
from poller import Poller
from runner_double import execute, query_value
from test_playbooks import SUBTITLE, free_port, recap
from ansible_collections.dbsafe.django.plugins.module_utils.snapshots import diff_snapshots

ENGINES = ["postgresql", "mysql"]
FLEET = ("app1", "app2", "app3")


def snapshot(db):
    return r4.snapshot(db)


def pids(fleet, names=FLEET):
    return dict((name, fleet.apps[name].pid()) for name in names)


def assert_all_answer(fleet, names=FLEET):
    down = [name for name in names if not fleet.apps[name].answers(within=30)]
    assert not down, "not answering after the playbook: %s" % down


# --- deploy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_deploy_brings_every_host_to_release_2(engine, fleets, request):
    """release-1 -> release-2 on app1..3 (PostgreSQL fleet: pipelining on; MariaDB fleet:
    pipelining off, Ansible hands the module files to the app user with setfacl)."""
    fleet = fleets(engine).prepare("release-1")
    before = pids(fleet)
    inventory = fleet.inventory({"django": FLEET})

    run = fleet.playbook("deploy", inventory, request.node.name)

    assert run.rc == 0, run.tail()
    for name in FLEET:
        app = fleet.apps[name]
        assert app.head_revision() == fleet.shas["release-2"], name
        assert app.pid() != before[name], "%s was not restarted" % name
    assert "books." + SUBTITLE in fleet.apps["app1"].applied()
    assert_all_answer(fleet)
    assert run.reports, "no report written"
    report = run.reports[-1]
    assert report["result"] == "succeeded"
    assert [h["host"] for h in report["hosts"]] == list(FLEET)
    if fleet.pipelining:
        assert_fleet_downtime_bounded(report)
    fleet.settled("release-2")


def test_a_project_behind_a_command_prefix_migrates_in_the_stop_window(fleets, request):
    """The project reached through django_migrate_command_prefix, as in a compose service (here
    /usr/bin/env, which keeps the file system): the preflight cannot plan the wanted revision
    where the project runs, so the deploy takes the stop window and migrates after the code
    switch (issue 20: it planned the running code, found nothing and switched without migrating)."""
    fleet = fleets("postgresql").prepare("release-1")
    inventory = fleet.inventory({"django": FLEET}, dict(
        (name, {"django_migrate_command_prefix": ["/usr/bin/env"]}) for name in FLEET))

    run = fleet.playbook("deploy", inventory, request.node.name)

    assert run.rc == 0, run.tail()
    assert "books." + SUBTITLE in fleet.apps["app1"].applied()
    for name in FLEET:
        assert fleet.apps[name].head_revision() == fleet.shas["release-2"], name
    assert_all_answer(fleet)
    report = run.reports[-1]
    assert report["result"] == "succeeded" and report["mode"] == "stop", report.get("mode")
    assert any("known only after the code switch" in reason for reason in report["mode_reasons"]), report["mode_reasons"]
    fleet.settled("release-2")


# Issue 13, item 7: the fleet's window holds the parallel stop, the code switch, the ONE guarded
# migrate and the start - nothing that grows with the number of tasks or hosts. The goal is
# downtime <= the guarded migrate's own duration + 3 s (over SSH, pipelining on); the published
# figure is benchmarks/fleet.py's (docs/benchmarks.md, "P4 fleet"), measured without -vvv and the
# argv sampler. Here both run, and other suites share the 2 cores: the difference was +2.8 s
# at load 2, +10.9 s at load 5-6 (the benchmark: +2.1 to +8.7 s at load 2.4-9.2). The bound
# catches gross regressions only - a window that grows by several module tasks (1-3 s of
# start-up each here) or takes the hosts one after another - it does not prove the goal.
FLEET_DOWNTIME_BOUND = 20.0


def assert_fleet_downtime_bounded(report):
    downtime = report["downtime_seconds"]
    duration = report["migrations"][0]["duration_seconds"]
    windows = dict((h["host"], h["downtime_seconds"]) for h in report["hosts"])
    assert downtime <= duration + FLEET_DOWNTIME_BOUND, (
        "fleet downtime %.2f s > the guarded migrate's %.2f s + %.0f s (per host: %s; migrate "
        "timings: %s)" % (downtime, duration, FLEET_DOWNTIME_BOUND, windows,
                          report["migrations"][0]["timings"]))


@pytest.mark.parametrize("engine", ENGINES)
def test_rollback_unapplies_and_brings_the_code_back_on_every_host(engine, fleets, request):
    fleet = fleets(engine).prepare("release-2")
    inventory = fleet.inventory({"django": FLEET})

    run = fleet.playbook("rollback", inventory, request.node.name, rollback_app="books",
                         rollback_to="0005", rollback_allow_data_loss=True,
                         rollback_revision="release-1")

    assert run.rc == 0, run.tail()
    assert "books." + SUBTITLE not in fleet.apps["app1"].applied()
    for name in FLEET:
        assert fleet.apps[name].head_revision() == fleet.shas["release-1"], name
    assert_all_answer(fleet)
    assert run.reports, "no report written"
    assert run.reports[-1]["result"] == "succeeded"
    fleet.settled("release-1")


@pytest.mark.parametrize("engine", ENGINES)
def test_deploy_with_a_failing_migration_restores_and_restarts_every_host(engine, fleets, request):
    fleet = fleets(engine).prepare("release-1")
    before = snapshot(fleet.db)
    inventory = fleet.inventory({"django": FLEET},
                                dict((name, {"django_migrate_git_version": "release-3"}) for name in FLEET))

    run = fleet.playbook("deploy", inventory, request.node.name)

    assert run.rc != 0, run.tail()
    assert "migration books.%s failed" % fleet.failing in run.output, run.tail()
    assert diff_snapshots(before, snapshot(fleet.db)) == []
    for name in FLEET:
        assert fleet.apps[name].head_revision() == fleet.shas["release-1"], name
    assert_all_answer(fleet)
    fleet.settled("release-1")


@pytest.mark.parametrize("engine", ENGINES)
def test_a_host_unreachable_before_the_downtime_stops_nothing(engine, fleets, request):
    """app3 points at a closed port: the run fails naming app3, no host was stopped, the
    database is untouched; a report, if written, does not call app3 stopped."""
    fleet = fleets(engine).prepare("release-1")
    before_pids = pids(fleet, ("app1", "app2"))
    before = snapshot(fleet.db)
    inventory = fleet.inventory({"django": FLEET}, {"app3": {"ansible_port": free_port()}})

    run = fleet.playbook("deploy", inventory, request.node.name)

    assert run.rc != 0, run.tail()
    assert re.search(r"app3.*UNREACHABLE|unreachable.*app3", run.output, re.I | re.S), run.tail()
    assert pids(fleet, ("app1", "app2")) == before_pids, "a reachable host was stopped"
    assert_all_answer(fleet, ("app1", "app2"))
    for name in ("app1", "app2"):
        assert fleet.apps[name].head_revision() == fleet.shas["release-1"], name
    assert diff_snapshots(before, snapshot(fleet.db)) == []
    for report in run.reports:
        for host in report["hosts"]:
            assert host.get("stopped_at") is None, "the report says %s was stopped" % host["host"]
    fleet.settled("release-1")


@pytest.mark.parametrize("engine", ["postgresql"])  # the report's logic is the engine's no business
def test_a_host_unreachable_after_the_preflight_is_reported_as_never_stopped(engine, fleets, request):
    """app3 answers the preflight, then becomes unreachable when the downtime play begins (its
    ssh goes through a proxy that refuses from then on). The run fails; app3, never stopped,
    still runs release-1; the database is untouched (app3's old code must not meet a migrated
    schema) and app1, app2 run release-1 again; the report calls app3 unreachable, not stopped,
    and leaves no host stopped (issue 13, items 4 and 6)."""
    fleet = fleets(engine).prepare("release-1")
    app3_pid = fleet.apps["app3"].pid()
    before = snapshot(fleet.db)
    flag = os.path.join(fleet.dir, "app3-unreachable")
    if os.path.exists(flag):
        os.remove(flag)
    inventory = fleet.inventory({"django": FLEET}, {"app3": field.breakable_hostvars(fleet.harness, flag)},
                                name="inventory-breakable.yml")

    run = fleet.playbook("deploy", inventory, request.node.name,
                         when_printed=("PLAY [Deploy | Downtime", lambda: open(flag, "w").close()))

    assert run.rc != 0, run.tail()
    assert os.path.exists(flag), "the downtime play never began:\n" + run.tail()
    assert fleet.apps["app3"].pid() == app3_pid and fleet.apps["app3"].answers(within=30)
    assert_all_answer(fleet)
    for name in ("app1", "app2"):
        assert fleet.apps[name].head_revision() == fleet.shas["release-1"], name
    assert diff_snapshots(before, snapshot(fleet.db)) == []
    assert run.reports, "no report written:\n" + run.tail()
    report = run.reports[-1]
    hosts = dict((h["host"], h) for h in report["hosts"])
    assert hosts["app3"].get("stopped_at") is None, hosts["app3"]
    assert str(hosts["app3"].get("service", "")).startswith("unreachable"), hosts["app3"]
    assert not [h for h in report["hosts"] if "LEFT STOPPED" in str(h.get("service", ""))], report["hosts"]
    fleet.settled("release-1")


@pytest.mark.parametrize("engine", ENGINES)
def test_reset_on_a_protected_host_is_refused_and_changes_nothing(engine, fleets, request):
    fleet = fleets(engine).prepare("release-1")
    before = snapshot(fleet.db)
    before_pids = pids(fleet)

    run = fleet.playbook("reset", restore_inventory(fleet), request.node.name, reset_hosts="app1",
                         reset_confirm="app1", reset_mode="schema", dbsafe_protected=False)

    assert run.rc != 0, run.tail()
    assert "Refused: app1 is protected" in run.output, run.tail()
    assert diff_snapshots(before, snapshot(fleet.db)) == []
    assert pids(fleet) == before_pids
    fleet.settled("release-1")


# --- restore_from_prod ---------------------------------------------------------------------


def restore_inventory(fleet, dev_extra=None):
    """The layout of inventories/demo: environments are groups, the group django holds them."""
    return fleet.inventory({"production": FLEET, "development": ["dev"]}, {"dev": dev_extra or {}},
                           name="inventory-envs.yml", parents={"django": ["production", "development"]})


def environments_only_inventory(fleet):
    """Environments as groups and no group django."""
    return fleet.inventory({"production": FLEET, "development": ["dev"]}, name="inventory-envs-only.yml")


def add_book(app, title):
    app.manage("shell", "-c", "from books.models import Book\nBook.objects.create(title=%r)" % title)


@pytest.mark.parametrize("engine", ENGINES)
def test_restore_from_prod_takes_the_fleets_migrate_host_into_development(engine, fleets, request):
    """Production is a fleet of three (restore_from=production, the default): its migrate host
    (app1) is backed up, dev gets its data, production is only read."""
    fleet = fleets(engine).prepare("release-1", dev_version="release-1")
    prod, dev = fleet.apps["app1"], fleet.apps["dev"]
    add_book(prod, "Only in production")
    add_book(dev, "Only on the laptop")
    prod_before = snapshot(fleet.db)
    prod_pids = pids(fleet)

    run = fleet.playbook("restore_from_prod", restore_inventory(fleet), request.node.name)

    assert run.rc == 0, run.tail()
    assert "dev now has app1's data" in run.output, run.tail()
    assert diff_snapshots(prod_before, snapshot(fleet.db)) == []
    assert pids(fleet) == prod_pids, "production was stopped"
    titles = dev.get("/books/")[1]
    assert "Only in production" in titles and "Only on the laptop" not in titles
    assert dev.head_revision() == fleet.shas["release-1"]
    assert dev.answers(within=30)
    fleet.settled(None, None)  # production has an extra book now


@pytest.mark.parametrize("engine", ENGINES)
def test_restore_from_prod_with_a_failing_dev_migration_keeps_dev_running_and_restorable(
        engine, fleets, request):
    """The developer's branch (release-3) has a migration that fails: the run fails, the
    developer's app runs afterwards, and the developer's own database (as it was before) can be
    restored from a backup the run names."""
    fleet = fleets(engine).prepare("release-1", dev_version="release-2")
    dev = fleet.apps["dev"]
    add_book(dev, "Only on the laptop")
    dev._app(["git", "-C", dev.project, "checkout", "--quiet", "release-3"])
    dev.stop()
    dev.start()
    dev_before = snapshot(fleet.dev_db)

    # restore_from names the host: this case is about the failure after the stop, not about
    # choosing among production's hosts (the test above).
    run = fleet.playbook("restore_from_prod", restore_inventory(fleet), request.node.name,
                         restore_from="app1")

    assert run.rc != 0, run.tail()
    assert dev.answers(within=30), "the developer's app is not running after the failed restore"
    # The backup of what the restore overwrote, as the run names it (not the guarded migrate's
    # backup, which holds production's data).
    named = sorted(set(path.rstrip(".") for path in re.findall(
        r"(?:safety backup|before the restore is in)[^/]{0,40}(" + re.escape(dev.backups) + r"/[^\s'\",]+)",
        run.output) if os.path.exists(path.rstrip("."))))
    assert named, "no backup of the developer's own database is named in the output:\n" + run.tail()
    restored = run_module("db_backup", dict(fleet.dev_db.connection(), state="restore", src=named[-1],
                                            backup_dir=os.path.dirname(named[-1])))
    assert not restored["failed"], restored.get("msg")
    assert diff_snapshots(dev_before, snapshot(fleet.dev_db)) == []
    fleet.settled("release-1", None)


# --- drift_check ---------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_drift_check_over_ssh_proves_the_fleet_clean_then_names_the_drifted_host(engine, fleets, request):
    """drift_check.yml on the inventory written for deploy.yml (the role's variables): over
    SSH + sudo every host is checked against its migrations in a scratch database of the app's
    own user; then a column added by hand is found and the run fails naming the hosts."""
    fleet = fleets(engine).prepare("release-1")
    inventory = fleet.inventory({"django": FLEET})
    before = snapshot(fleet.db)
    before_pids = pids(fleet)

    clean = fleet.playbook("drift_check", inventory, request.node.name + "-clean")

    assert clean.rc == 0, clean.tail()
    for name in FLEET:
        assert re.search(r"clean.{0,200}%s" % name, clean.output, re.S), clean.tail()
    assert diff_snapshots(before, snapshot(fleet.db)) == []
    assert pids(fleet) == before_pids, "a drift check restarted an app"

    execute(fleet.db, "ALTER TABLE books_book ADD COLUMN made_by_hand integer NULL;")
    try:
        drifted = fleet.playbook("drift_check", inventory, request.node.name + "-drifted")
    finally:
        execute(fleet.db, "ALTER TABLE books_book DROP COLUMN made_by_hand;")

    assert drifted.rc != 0, drifted.tail()
    assert "made_by_hand" in drifted.output, drifted.tail()
    assert re.search(r"Schema drift on 3 host\(s\): app1, app2, app3", drifted.output), drifted.tail()
    assert pids(fleet) == before_pids
    fleet.settled("release-1")


# --- host patterns ---------------------------------------------------------------------------


def test_deploy_limit_to_an_environment_group_deploys_it(fleets, request):
    """`deploy.yml -l production` on an inventory laid out as inventories/demo (environments
    are groups, the group django holds them): production's hosts are deployed, dev is not
    touched (issue 13, item 3)."""
    fleet = fleets("postgresql").prepare("release-1")

    run = fleet.playbook("deploy", restore_inventory(fleet), request.node.name, limit="production")

    assert run.rc == 0, run.tail()
    for name in FLEET:
        assert fleet.apps[name].head_revision() == fleet.shas["release-2"], name
    assert "books." + SUBTITLE in fleet.apps["app1"].applied()
    assert_all_answer(fleet)
    assert run.reports and "dev" not in [h["host"] for h in run.reports[-1]["hosts"]]
    fleet.settled("release-2")


@pytest.mark.parametrize("args", [
    {"limit": "nosuchgroup"},
    {"deploy_hosts": "nosuchgroup"},
    {"deploy_hosts": "production", "limit": "development"},
    {"limit": "production", "inventory": "environments only"},
], ids=["limit-matches-nothing", "deploy_hosts-matches-nothing", "limit-excludes-deploy_hosts",
        "no-group-django"])
def test_a_pattern_matching_no_host_fails_loudly(args, fleets, request):
    fleet = fleets("postgresql")
    state = (fleet.state, fleet.dev_state)
    before = dict((name, fleet.apps[name].pid()) for name in FLEET)
    args = dict(args)
    limit = args.pop("limit", None)
    inventory = environments_only_inventory(fleet) if args.pop("inventory", None) else restore_inventory(fleet)
    pattern = args.get("deploy_hosts", "django" if limit == "production" else limit)

    run = fleet.playbook("deploy", inventory, request.node.name, limit=limit, **args)

    assert run.rc != 0, "exit 0 having done nothing:\n" + run.tail()
    assert pattern in run.output, run.tail()
    assert not re.search(r"^skipping: no hosts matched", run.output, re.M), run.tail()
    assert dict((name, fleet.apps[name].pid()) for name in FLEET) == before
    fleet.settled(*state)  # nothing was touched


# --- online deploys (issue 18) ---------------------------------------------------------------
#
# release-online (on release-2): a nullable column (books_book.edition) and a new table
# (books_shelf) - operations safe for the running code - and a page /release/ that says which
# release's code serves. release-contract (on release-online): drops the column again
# (RemoveField: the running code would break, its data goes). Both on a branch of their own: main
# and the other tests' tags stay as they are.
#
# Here, after the host patterns: the PostgreSQL fleet is on release-2 already (the --limit deploy),
# and no test after these prepare()s a fleet again - the fewest rebuilds of a fleet (the MariaDB
# fleet's one, from release-1). app1..3 serve with gunicorn in these tests only.

ONLINE_MIGRATION = "0007_book_edition_shelf"
CONTRACT_MIGRATION = "0008_remove_book_edition"
EDITION = "    edition = models.IntegerField(blank=True, null=True)\n"
SHELF = """

class Shelf(models.Model):
    name = models.CharField(max_length=40)
"""
RELEASE_VIEW = """

RELEASE = "%s"


def release(request):
    \"\"\"Which release's code serves this request (the field harness's online deploys).\"\"\"
    return HttpResponse(RELEASE, content_type="text/plain")
"""
MIGRATION = """from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("books", "%s"),
    ]

    operations = [
%s
    ]
"""
ONLINE_OPERATIONS = """        migrations.AddField(
            model_name="book",
            name="edition",
            field=models.IntegerField(blank=True, null=True),
        ),
        migrations.CreateModel(
            name="Shelf",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=40)),
            ],
        ),"""
CONTRACT_OPERATIONS = """        migrations.RemoveField(
            model_name="book",
            name="edition",
        ),"""


def _edit(path, old, new):
    with open(path) as handle:
        source = handle.read()
    assert old in source, "%s: %r not found" % (path, old)
    with open(path, "w") as handle:
        handle.write(source.replace(old, new, 1))


def online_releases(fleet):
    """Tag release-online and release-contract in the fleet's release repository (once per
    fleet); returns the fleet's shas."""
    if "release-contract" in fleet.shas:
        return fleet.shas
    repo = fleet.repo
    books = os.path.join(repo, "books")
    migrations_dir = os.path.join(books, "migrations")
    field.run(["chown", "-R", "0:0", repo])  # the app user's: git refuses another owner's repository
    field.git(repo, "checkout", "--quiet", "-b", "online", "release-2")
    _edit(os.path.join(books, "models.py"), "    title = models.CharField(max_length=200)\n",
          "    title = models.CharField(max_length=200)\n" + EDITION)
    with open(os.path.join(books, "models.py"), "a") as handle:
        handle.write(SHELF)
    with open(os.path.join(books, "views.py"), "a") as handle:
        handle.write(RELEASE_VIEW % "release-online")
    _edit(os.path.join(repo, "demo", "urls.py"), '    path("health/", views.health, name="health"),\n',
          '    path("health/", views.health, name="health"),\n'
          '    path("release/", views.release, name="release"),\n')
    with open(os.path.join(migrations_dir, ONLINE_MIGRATION + ".py"), "w") as handle:
        handle.write(MIGRATION % (SUBTITLE, ONLINE_OPERATIONS))
    fleet.shas["release-online"] = field.commit(repo, "release-online: a nullable column and a table",
                                                tag="release-online")
    _edit(os.path.join(books, "models.py"), EDITION, "")
    _edit(os.path.join(books, "views.py"), 'RELEASE = "release-online"', 'RELEASE = "release-contract"')
    with open(os.path.join(migrations_dir, CONTRACT_MIGRATION + ".py"), "w") as handle:
        handle.write(MIGRATION % (ONLINE_MIGRATION, CONTRACT_OPERATIONS))
    fleet.shas["release-contract"] = field.commit(repo, "release-contract: drops the column again",
                                                  tag="release-contract")
    field.git(repo, "checkout", "--quiet", "main")
    fleet.harness.users.own(repo)
    return fleet.shas


def serve_with_gunicorn(fleet, request):
    """app1..3 serve with gunicorn (restarted with it where runserver runs) and the role gets
    their reload command; after the test the fleet's hosts are runserver hosts again for the
    other tests (a gunicorn still running is stopped by its pid file, like any server, by the
    next prepare())."""
    def back():
        for app in fleet.fleet():
            app.server = "runserver"
    request.addfinalizer(back)
    for app in fleet.fleet():
        app.serve_with("gunicorn")
        assert app.answers(within=30), "%s does not answer under gunicorn" % app.name


def deploy_modes(report):
    """Every ``mode`` the report states (its own and each database's or migration's)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "mode" and isinstance(value, str):
                    found.append(value)
                elif key not in ("risk", "risks"):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk(report)
    return found


def pollers(fleet, names=FLEET):
    """Pollers of app1..3 for while a playbook runs: /health/ every 100 ms (the answer "ok"),
    and /books/ - a page that reads the table the migrations change - every 500 ms."""
    health = Poller(dict((name, fleet.apps[name].url("/health/")) for name in names), expect="ok")
    books = Poller(dict((name, fleet.apps[name].url("/books/")) for name in names), interval=0.5)
    return health, books


def born_at(pid):
    """When process ``pid`` started (epoch seconds, to a clock tick), from /proc."""
    with open("/proc/%d/stat" % pid) as handle:
        ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as handle:
        boot = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
    return boot + ticks / float(os.sysconf("SC_CLK_TCK"))


@pytest.mark.parametrize("engine", ENGINES)
def test_online_deploy_of_a_compatible_release_fails_no_request(engine, fleets, request):
    """release-2 -> release-online (a nullable column, a new table) with
    django_migrate_deploy_mode auto, app1..3 on gunicorn with their reload command: the deploy
    goes online - the migration while the application serves, then each host's code switched
    and reloaded (HUP) in turn, health-checked before the next - while a poller asks every
    host's /health/ every 100 ms (and /books/ every 500 ms): 0 failed requests, never two hosts
    down at once, no host stopped, every host serving release-online's code, the migration
    applied, the report says online (issue 18, acceptance)."""
    fleet = fleets(engine)
    shas = online_releases(fleet)
    fleet.prepare("release-2")
    serve_with_gunicorn(fleet, request)
    masters = pids(fleet)
    workers = dict((name, fleet.apps[name].workers()) for name in FLEET)
    assert all(workers.values()), workers
    inventory = fleet.inventory({"django": FLEET}, dict(
        (name, {"django_migrate_git_version": "release-online"}) for name in FLEET), name="inventory-online.yml")
    health, books = pollers(fleet)

    with health, books:
        run = fleet.playbook("deploy", inventory, request.node.name, django_migrate_deploy_mode="auto")

    seen = health.result
    run.note(poll={"health": seen.counts(), "books": books.result.counts(), "overlaps": seen.overlaps(),
                   "realtime": seen.realtime})
    assert run.rc == 0, run.tail()
    assert not seen.failed() and not books.result.failed(), "requests failed during the online deploy:\n%s\n%s" % (
        seen.describe(), books.result.describe())
    assert not seen.overlaps(), seen.describe()
    for figures in seen.counts().values():  # it asked all along: every 100 ms, a slow answer aside
        assert figures["requests"] >= 10 and figures["max_gap_ms"] < 12000, seen.describe()
    for name in FLEET:
        app = fleet.apps[name]
        assert app.head_revision() == shas["release-online"], name
        assert app.pid() == masters[name], "%s was restarted, not reloaded" % name
        assert app.answers(30, "/release/", "release-online"), "%s does not serve release-online's code" % name
        assert not set(app.workers()) & set(workers[name]), "%s: a worker of the old code still runs" % name
    assert "books." + ONLINE_MIGRATION in fleet.apps["app1"].applied()
    assert query_value(fleet.db, "SELECT COUNT(*) FROM books_shelf") == "0"
    assert query_value(fleet.db, "SELECT COUNT(edition) FROM books_book") == "0"
    # One host at a time: the hosts' new workers were born seconds apart (a rollout in parallel
    # reloads them all within a few hundred ms).
    reloaded = sorted(min(born_at(pid) for pid in fleet.apps[name].workers()) for name in FLEET)
    assert all(b - a >= 0.5 for a, b in zip(reloaded, reloaded[1:])), "reloaded together: %s" % reloaded
    assert run.reports, "no report written"
    report = run.reports[-1]
    assert report["result"] == "succeeded", report
    modes = deploy_modes(report)
    assert modes and set(modes) == {"online"}, "the report's modes: %s" % modes
    for host in report["hosts"]:
        assert host["stopped_at"] is None, "the report says %s was stopped: %s" % (host["host"], host)
    fleet.settled("release-online")


def test_a_release_dropping_a_column_splits_and_drops_it_after_the_rollout(fleets, request):
    """release-online -> release-contract (a RemoveField) with django_migrate_deploy_mode auto
    and the reload command set: the drop would vanish under the running code, so the deploy
    SPLITS (issue 18, item 3) - nothing to expand, the rollout host by host, then the contract
    stage drops the column once every host runs the new code: 0 failed requests, no host
    stopped, the column dropped after the last host's reload, the report says split and names
    the contract migration. Then the pollers' own check: app3 stopped for a moment after the
    deploy is seen down (so the 0 means something). PostgreSQL only: the choice is not the
    engine's business."""
    fleet = fleets("postgresql")
    shas = online_releases(fleet)
    fleet.prepare("release-online")
    serve_with_gunicorn(fleet, request)
    masters = pids(fleet)
    inventory = fleet.inventory({"django": FLEET}, dict(
        (name, {"django_migrate_git_version": "release-contract"}) for name in FLEET), name="inventory-online.yml")
    health, books = pollers(fleet)

    with health, books:
        run = fleet.playbook("deploy", inventory, request.node.name, django_migrate_deploy_mode="auto",
                             django_migrate_allow_data_loss=True)
        deployed = time.time()
        # The control: one host really down for a moment.
        fleet.apps["app3"].stop()
        time.sleep(0.6)
        fleet.apps["app3"].start()
        assert fleet.apps["app3"].answers(30, "/health/", "ok"), "app3 did not come back"

    seen = health.result
    run.note(poll={"health": seen.counts(), "books": books.result.counts(), "overlaps": seen.overlaps(),
                   "realtime": seen.realtime})
    assert run.rc == 0, run.tail()
    assert run.reports, "no report written"
    report = run.reports[-1]
    assert report["result"] == "succeeded", report
    assert report["mode"] == "split", "the report's mode: %s" % report["mode"]
    assert any(CONTRACT_MIGRATION in reason for reason in report["mode_reasons"]), report["mode_reasons"]
    assert [m.get("stage") for m in report["migrations"]] == ["contract"], report["migrations"]
    during = [r for poll in (seen, books.result) for rows in poll.failed().values() for r in rows if r.at < deployed]
    assert not during, "requests failed during the split deploy:\n%s\n%s" % (seen.describe(), books.result.describe())
    assert sorted(seen.failed()) == ["app3"], "the poller missed app3's stop:\n" + seen.describe()
    for host in report["hosts"]:
        assert host["stopped_at"] is None and host["reloaded_at"], "%s: %s" % (host["host"], host)
    dropped = float(query_value(fleet.db, "SELECT extract(epoch FROM applied) FROM django_migrations "
                                          "WHERE app = 'books' AND name = '%s'" % CONTRACT_MIGRATION))
    last_reload = max(host["reloaded_at"] for host in report["hosts"])
    assert dropped > last_reload, "the column was dropped at %s, before the last host's reload at %s" % (
        dropped, last_reload)
    assert query_value(fleet.db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'books_book' "
                                 "AND column_name = 'edition'") == "0"
    for name in FLEET:
        app = fleet.apps[name]
        assert app.head_revision() == shas["release-contract"], name
        assert app.answers(30, "/release/", "release-contract"), "%s does not serve release-contract's code" % name
    assert fleet.apps["app1"].pid() == masters["app1"], "app1 was restarted, not reloaded"
    fleet.settled("release-contract")


# --- a virtualenv per release (issue 19, item 1), over SSH with become ------------------------


class ReleaseVenvApp(field.FieldApp):
    """A host whose server runs on <releases>/current/bin/python once the role manages its venvs
    (the first start, before any deploy, on the hosts' Python)."""

    def __init__(self, *args, **kwargs):
        field.FieldApp.__init__(self, *args, **kwargs)
        self.releases = os.path.join(self.home, "releases")
        self.link = os.path.join(self.releases, "current")
        self.server_python = self.python

    def start_command(self):
        command = field.FieldApp.start_command(self)
        command[command.index("--exec") + 1] = self.server_python
        return command

    def hostvars(self, **extra):
        self.server_python = os.path.join(self.link, "bin", "python")
        host = field.FieldApp.hostvars(self, **extra)
        host.update(django_migrate_requirements="requirements.txt", django_migrate_releases_path=self.releases)
        return host

    def running_python(self):
        with open("/proc/%d/cmdline" % self.pid(), "rb") as handle:
            return handle.read().split(b"\0")[0].decode()


def release_branch(fleet, python):
    """release-2v: release-2 with a requirements.txt (the hosts' packages, pinned, and one more);
    release-3v: other requirements and a migration that fails. A branch of their own: main and the
    other tests' tags stay as they are."""
    repo = fleet.repo
    pins = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    wanted = [line for line in pins.splitlines() if line.split("==")[0].lower() in
              [name.lower() for name in field.APP_PACKAGES]]
    requirements = "\n".join(sorted(wanted) + [RELEASE_PACKAGE]) + "\n"
    field.run(["chown", "-R", "0:0", repo])  # the app user's: git refuses another owner's repository
    field.git(repo, "checkout", "--quiet", "-b", "release-venvs", "release-2")
    with open(os.path.join(repo, "requirements.txt"), "w") as handle:
        handle.write(requirements)
    shas = {"release-2v": field.commit(repo, "release-2v: its requirements", tag="release-2v")}
    with open(os.path.join(repo, "requirements.txt"), "w") as handle:
        handle.write(requirements + "# release-3v\n")
    failing = field.demo.add_failing_migration(repo, "runsql")
    shas["release-3v"] = field.commit(repo, "release-3v: new requirements, a migration that fails",
                                      tag="release-3v")
    field.git(repo, "checkout", "--quiet", "main")
    fleet.harness.users.own(repo)
    return shas, failing


RELEASE_PACKAGE = "iniconfig==2.3.1"  # tiny, pinned in requirements/tools.txt
BUILD_TASK = "Preflight | Build the wanted revision's virtualenv"


def task_status(output, task):
    match = re.search(re.escape(task) + r".*?\n(ok|changed|failed|fatal|skipping): \[", output, re.S)
    return match.group(1) if match else None


def test_release_venvs_are_built_by_the_app_user_over_ssh(fleets, request):
    """The preflight builds the wanted revision's venv on the host as the app user (become over
    sudo), the window switches the `current` link and the server starts on it; the same revision
    again builds nothing; a failed release switches back to the running release's venv. PostgreSQL
    only: the venv does not depend on the engine. On the fleet's dev database (its password is
    scanned like the others'), so the fleet itself is untouched."""
    fleet = fleets("postgresql")
    users = fleet.harness.users
    shas, failing = release_branch(fleet, fleet.harness.python)
    fleet_state = fleet.state  # the fleet's hosts and database are not touched here
    fleet.apps["dev"].stop()  # the dev database is this test's now (dev is made again when needed)
    fleet.server.recreate(fleet.dev_db)
    app = ReleaseVenvApp("venv1", fleet, fleet.dev_db, version="release-2v")
    fleet.apps["venv1"] = app
    request.addfinalizer(lambda: fleet.apps.pop("venv1", None) and app.stop())
    app.fresh("release-1", migrate=True, data=True)
    inventory = fleet.inventory({"django": ["venv1"]}, name="inventory-venv.yml")

    run = fleet.playbook("deploy", inventory, request.node.name)

    assert run.rc == 0, run.tail()
    assert task_status(run.output, BUILD_TASK) == "changed", run.tail()
    venv_2 = os.readlink(app.link)
    assert os.path.dirname(venv_2) == app.releases
    for path in (app.releases, venv_2, os.path.join(venv_2, "bin", "python")):
        assert os.lstat(path).st_uid == users.uid, "%s is not the app user's" % path
    assert users.as_app([os.path.join(venv_2, "bin", "python"), "-c", "import iniconfig"], check=False).returncode == 0
    assert app.answers(within=30)
    assert app.running_python() == os.path.join(app.link, "bin", "python")
    assert app.head_revision() == shas["release-2v"]

    again = fleet.playbook("deploy", inventory, request.node.name)

    assert again.rc == 0, again.tail()
    assert task_status(again.output, BUILD_TASK) == "ok", again.tail()  # built nothing
    assert os.readlink(app.link) == venv_2
    assert [name for name in os.listdir(app.releases) if name != "current"] == [os.path.basename(venv_2)]

    inventory = fleet.inventory({"django": ["venv1"]}, {"venv1": {"django_migrate_git_version": "release-3v"}},
                                name="inventory-venv.yml")
    failed = fleet.playbook("deploy", inventory, request.node.name)

    assert failed.rc != 0, failed.tail()
    assert "migration books.%s failed" % failing in failed.output, failed.tail()
    assert task_status(failed.output, BUILD_TASK) == "changed", failed.tail()
    venvs = [name for name in os.listdir(app.releases) if name != "current"]
    assert len(venvs) == 2, venvs  # release-3v's was built, as the app user
    assert all(os.lstat(os.path.join(app.releases, name)).st_uid == users.uid for name in venvs)
    assert os.readlink(app.link) == venv_2  # switched back
    assert app.answers(within=30)
    assert app.running_python() == os.path.join(app.link, "bin", "python")
    assert app.head_revision() == shas["release-2v"]
    fleet.settled(fleet_state, dev_version=None)


# --- the local demo -----------------------------------------------------------------------------


def test_local_demo_deploy(harness, request):
    """scripts/demo's deploy (playbooks/demo.yml, inventories/demo, connection local) with a
    SECRET_KEY in django_migrate_environment, in a copy of the demo inventory (its build/demo
    goes to a directory of ours)."""
    base = os.path.join(harness.base, "local-demo")
    inventory = os.path.join(base, "inventories", "demo")
    shutil.copytree(os.path.join(ROOT, "inventories", "demo"), inventory)
    secret_key = "dbsafe-field-sk-" + secrets.token_urlsafe(24)
    extra = {"demo_port": free_port(), "django_migrate_environment": {
        "DEMO_DB_ENGINE": "sqlite", "DEMO_DB_NAME": "{{ demo_home }}/db.sqlite3",
        "DEMO_MEDIA_ROOT": "{{ demo_home }}/media", "PYTHONDONTWRITEBYTECODE": "1",
        "DEMO_SECRET_KEY": secret_key}}
    vars_file = os.path.join(base, "extra.json")
    with open(vars_file, "w") as handle:
        json.dump(extra, handle)
    argv = [_bin("ansible-playbook"), "-vvv", "-i", inventory, os.path.join(ROOT, "playbooks", "demo.yml"),
            "-e", "@" + vars_file]
    reports_dir = os.path.join(base, "build", "demo", "reports")
    try:
        run = field.scan_and_record("demo", argv, ansible_env(), ROOT, [secret_key], None, reports_dir,
                                    request.node.name, "sqlite", "local", None)
    finally:
        pidfile = os.path.join(base, "build", "demo", "prod.demo", "app.pid")
        subprocess.run(["/bin/sh", field.STOP_PIDFILE, pidfile], check=False)
    assert run.rc == 0, run.tail()
    assert all(counts["failed"] == 0 for counts in recap(run.output).values())


# --- the secret checks ----------------------------------------------------------------------


def test_the_scan_sees_a_secret_given_over_ssh_and_sudo(harness):
    """Calibration: a secret put on a command line run through ssh + sudo as the app user is
    caught by the argv sampler and in the sudo log (so 0 hits below means something)."""
    secret = "dbsafe-field-canary-" + secrets.token_hex(8)
    offset = harness.users.sudo_log_size()
    with field.TimedSampler([secret]) as sampler:
        harness.sshd.ssh("sudo -n -u %s /bin/sh -c 'sleep 0.5' %s" % (harness.users.app, secret))
    assert sampler.leaks, "the sampler missed the canary (%d samples)" % sampler.samples
    assert secret in harness.users.sudo_log_since(offset)
    assert sampler.samples >= 20, "%d passes in 0.5 s" % sampler.samples


@pytest.mark.parametrize("playbook", ["deploy", "restore_from_prod", "reset", "rollback", "drift_check",
                                      "demo"])
def test_no_secret_anywhere(playbook):
    """0 hits of a database password or the SECRET_KEY in any process's argv, the -vvv output,
    the sudo log or a report, over all runs of ``playbook`` in this session."""
    runs = [run for run in field.RUNS if run["playbook"] == playbook]
    if not runs:
        pytest.skip("no run of %s in this session" % playbook)
    leaking = ["%s (%s): %s; e.g. %s" % (run["test"], run["engine"], run["hits"],
                                         " | ".join(run["examples"][:2])) for run in runs if run["total_hits"]]
    assert not leaking, "%d of %d runs of %s leaked a secret:\n%s" % (
        len(leaking), len(runs), playbook, "\n".join(leaking))
    # A pass over /proc every 10 ms; on 2 busy cores a pass is late now and then (the figures
    # of each run are in field.json): at most 1 % of the pauses may exceed 20 ms.
    late = sum(run["gaps_over_20ms"] for run in runs)
    samples = sum(run["samples"] for run in runs)
    assert late <= samples / 100, "the argv sampler paused > 20 ms %d times in %d passes (max %.1f ms)" % (
        late, samples, max(run["max_gap_ms"] for run in runs))
