"""The playbooks users run, for real: ansible-playbook against hosts on this machine.

Every host is a local connection with its own copy of the demo project (a git checkout of a
release repository), its own media directory and an app server (``manage.py runserver`` on a
free loopback port, started and stopped by the role through start-stop-daemon), on real SQLite,
PostgreSQL and MariaDB databases.

The release repository: release-1 is examples/demo; release-2 (main) adds
books.0006_book_subtitle (a field with a default: no data loss).
"""
import calendar
import glob
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

import demo
from ansible_run import ROOT, ansible_env, _bin
from databases import ServerUnavailable, create_postgres, create_sqlite, drop_postgres
from runner_double import engine_of, execute
from ansible_collections.dbsafe.django.plugins.module_utils.snapshots import diff_snapshots

PYTHON = demo.default_python()
START_STOP_DAEMON = "/sbin/start-stop-daemon"
STOP_PIDFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stop_pidfile.sh")
RELOAD_PIDFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reload_pidfile.sh")
# The app servers a host can run: Django's runserver (the default), or gunicorn (`python -m
# gunicorn demo.wsgi`, not preload_app: a HUP to the master makes new workers that import the
# code on disk - the graceful reload of an online deploy's rollout, issue 18).
SERVERS = ("runserver", "gunicorn")
GUNICORN_WORKERS = 2
GIT_IDENTITY = ["-c", "user.name=dbsafe tests", "-c", "user.email=tests@example.invalid"]
SUBTITLE = "0006_book_subtitle"
SUBTITLE_MIGRATION = '''from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("books", "0005_remove_book_notes"),
    ]

    operations = [
        migrations.AddField(
            model_name="book",
            name="subtitle",
            field=models.CharField(blank=True, default="", max_length=200),
        ),
    ]
'''

pytestmark = pytest.mark.skipif(not os.path.exists(START_STOP_DAEMON),
                                reason="the app servers are run with start-stop-daemon")


# --- The release repository -------------------------------------------------------------------


def git(repo, *args):
    proc = subprocess.run(["git", "-C", str(repo)] + GIT_IDENTITY + [str(a) for a in args],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError("git %s failed: %s" % (" ".join(map(str, args)), proc.stderr))
    return proc.stdout.strip()


def commit(repo, message, tag=None):
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--message", message)
    if tag:
        git(repo, "tag", tag)
    return git(repo, "rev-parse", "HEAD")


def release_repo(tmp_path):
    """A git repository of the demo project: release-1 (tagged) and release-2 on main.

    Returns (path, {"release-1": sha, "release-2": sha}).
    """
    repo = demo.copy_demo(tmp_path / "src")
    with open(os.path.join(repo, ".gitignore"), "w") as handle:
        handle.write("__pycache__/\n*.pyc\ndb.sqlite3*\nmedia/uploads/\n")
    subprocess.run(["git", "init", "--quiet", "--initial-branch=main", repo], check=True)
    shas = {"release-1": commit(repo, "release-1", tag="release-1")}
    with open(os.path.join(demo.migrations_dir(repo), SUBTITLE + ".py"), "w") as handle:
        handle.write(SUBTITLE_MIGRATION)
    models = os.path.join(repo, "books", "models.py")
    with open(models) as handle:
        source = handle.read()
    anchor = "    title = models.CharField(max_length=200)\n"
    assert anchor in source
    with open(models, "w") as handle:
        handle.write(source.replace(
            anchor, anchor + '    subtitle = models.CharField(max_length=200, blank=True, default="")\n'))
    shas["release-2"] = commit(repo, "release-2", tag="release-2")
    return repo, shas


# --- Hosts, app servers, inventories --------------------------------------------------------


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class App:
    """One app host: a checkout, a media directory, backups and an app server."""

    def __init__(self, name, tmp_path, db, repo, version="main", port=None, server="runserver"):
        if server not in SERVERS:
            raise ValueError("server must be one of %s, not %r" % (SERVERS, server))
        self.name = name
        self.server = server
        self.reload_script = RELOAD_PIDFILE
        self.home = str(tmp_path / name)
        os.makedirs(self.home)
        self.db = db
        self.repo = repo
        self.version = version
        self.port = port or free_port()
        self.project = os.path.join(self.home, "app")
        self.media = os.path.join(self.home, "media")
        self.backups = os.path.join(self.home, "backups")
        self.pidfile = os.path.join(self.home, "app.pid")
        self.reports = str(tmp_path / "reports")

    def env(self):
        env = dict(self.db.demo_env(), DEMO_MEDIA_ROOT=self.media, PYTHONDONTWRITEBYTECODE="1")
        return env

    def start_command(self):
        return self.daemon_command(PYTHON)

    def daemon_command(self, python):
        """start-stop-daemon runs the app server (:meth:`server_argv`) on ``python`` in the
        background, in the project's directory: its pid - gunicorn's master's - in the pid file
        before the command returns, its output in app.log."""
        return [START_STOP_DAEMON, "--start", "--background", "--make-pidfile", "--pidfile",
                self.pidfile, "--chdir", self.project, "--output",
                os.path.join(self.home, "app.log"), "--exec", python, "--"] + self.server_argv()

    def server_argv(self):
        if self.server == "gunicorn":
            return ["-m", "gunicorn", "--bind", "127.0.0.1:%d" % self.port, "--workers", str(GUNICORN_WORKERS),
                    "--chdir", self.project, "demo.wsgi"]
        return ["manage.py", "runserver", "127.0.0.1:%d" % self.port, "--noreload"]

    def stop_command(self):
        return ["/bin/sh", STOP_PIDFILE, self.pidfile]

    def reload_command(self):
        """The graceful reload: HUP to gunicorn's master, sent by reload_pidfile.sh (the
        environment, secrets included, comes from the role, never on this command line);
        runserver has none ([])."""
        if self.server == "gunicorn":
            return ["/bin/sh", self.reload_script, self.pidfile]
        return []

    def hostvars(self, **extra):
        host = {
            "ansible_connection": "local",
            "ansible_python_interpreter": PYTHON,
            "django_migrate_project_path": self.project,
            "django_migrate_python": PYTHON,
            "django_migrate_environment": self.env(),
            "django_migrate_git_repo": self.repo,
            "django_migrate_git_version": self.version,
            "django_migrate_backup_dir": self.backups,
            "django_migrate_media_root": self.media,
            "django_migrate_report_dir": self.reports,
            "django_migrate_health_url": "http://127.0.0.1:%d/health/" % self.port,
            "django_migrate_health_content": "ok",
            "django_migrate_start_command": self.start_command(),
            "django_migrate_stop_command": self.stop_command(),
            "django_migrate_status_command": [START_STOP_DAEMON, "--status", "--pidfile", self.pidfile],
            "django_migrate_reset_fixtures": ["demo"],
        }
        if self.reload_command():
            host["django_migrate_reload_command"] = self.reload_command()
        host.update(extra)
        return host

    # -- the world before the playbook ---------------------------------------------------

    def checkout(self, version):
        subprocess.run(["git", "clone", "--quiet", self.repo, self.project], check=True)
        git(self.project, "checkout", "--quiet", version)

    def manage(self, *args):
        return demo.manage(self.project, self.db, *args, env={"DEMO_MEDIA_ROOT": self.media})

    def running(self, version, migrate=True, data=True, serve=True):
        """Check out ``version``, migrate it, load the demo data and media, start the server."""
        self.checkout(version)
        return self.provision(migrate, data, serve)

    def provision(self, migrate=True, data=True, serve=True):
        """The checkout's media, optionally migrated with the demo data, the server started."""
        shutil.copytree(os.path.join(demo.DEMO_DIR, "media"), self.media,
                        ignore=shutil.ignore_patterns("uploads"))
        self.owned(self.media)
        if migrate:
            self.manage("migrate", "--no-input", "--verbosity", "0")
        if data:
            self.manage("loaddata", "demo", "--verbosity", "0")
        if serve:
            self.start()
        return self

    def owned(self, path):
        """Hook: a host whose app runs as another user hands ``path`` over to it."""

    def start(self):
        subprocess.run(self.start_command(), check=True, env=dict(os.environ, **self.env()))
        wait_for(self.url("/health/"))

    def stop(self):
        subprocess.run(self.stop_command(), check=False, capture_output=True)

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def get(self, path):
        with urllib.request.urlopen(self.url(path), timeout=10) as response:
            return response.status, response.read().decode()

    def head_revision(self):
        return git(self.project, "rev-parse", "HEAD")

    def pid(self):
        """The app server's pid (gunicorn's master) from the pid file, or None."""
        try:
            with open(self.pidfile) as handle:
                return int(handle.read().strip())
        except (OSError, ValueError):
            return None

    def serving(self):
        """Which server runs (``gunicorn``, ``runserver``), by its command line; None when none."""
        argv = process_argv(self.pid())
        if "-m" in argv and "gunicorn" in argv:
            return "gunicorn"
        if "runserver" in argv:
            return "runserver"
        return None

    def workers(self):
        """The pids of gunicorn's workers (the master's children), sorted."""
        return children(self.pid()) if self.pid() else []

    def serve_with(self, server):
        """Serve with ``server`` from now on; restarted with it when it is not what runs."""
        if server not in SERVERS:
            raise ValueError("server must be one of %s, not %r" % (SERVERS, server))
        self.server = server
        if self.serving() != server:
            self.stop()
            self.start()
        return self


def process_argv(pid):
    """The command line of process ``pid`` as a list of str ([] when it is gone or a zombie)."""
    if not pid:
        return []
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return [part.decode("utf-8", "replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        return []


def children(pid):
    """The pids whose parent is ``pid`` (from /proc/*/stat), sorted."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after its end
        fields = stat[stat.rindex(b")") + 2:].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def wait_for(url, seconds=30):
    deadline = time.time() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def second_postgres():
    try:
        db = create_postgres()
    except ServerUnavailable as error:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("postgresql server unavailable: %s" % error, pytrace=False)
        pytest.skip("postgresql server unavailable: %s" % error)
    yield db
    drop_postgres(db)


def inventory(tmp_path, groups, hostvars=None, groupvars=None):
    """An inventory file: {group: {host: vars}}; returns its path (0600: it holds passwords)."""
    data = {"all": {"children": {}}}
    for group, hosts in groups.items():
        data["all"]["children"][group] = {"hosts": hosts, "vars": (groupvars or {}).get(group, {})}
    path = str(tmp_path / "inventory.yml")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        json.dump(data, handle, indent=1)  # JSON is YAML
    return path


def playbook(name, inventory_path, tmp_path, timeout=900, env=None, **extra_vars):
    """Run playbooks/<name>.yml; returns (rc, output). Extra vars go in a file, not argv."""
    vars_file = str(tmp_path / ("extra-%s-%d.json" % (name, time.time_ns())))
    with open(vars_file, "w") as handle:
        json.dump(extra_vars, handle)
    argv = [_bin("ansible-playbook"), "-i", inventory_path, os.path.join(ROOT, "playbooks", name + ".yml"),
            "-e", "@" + vars_file]
    proc = subprocess.run(argv, capture_output=True, text=True, env=ansible_env(env), cwd=ROOT,
                          timeout=timeout, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def recap(output):
    """{host: {ok: n, changed: n, failed: n, ...}} from the PLAY RECAP."""
    result = {}
    for line in output.split("PLAY RECAP")[-1].splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[1] == ":":
            result[parts[0]] = dict((k, int(v)) for k, v in (p.split("=") for p in parts[2:]))
    return result


def reports(app, name="deploy"):
    paths = sorted(glob.glob(os.path.join(app.reports, name + "-*.json")))
    result = []
    for path in paths:
        with open(path) as handle:
            result.append(json.load(handle))
        assert os.path.exists(path[:-len(".json")] + ".md"), path
    return result


def applied(app):
    """The migrations the database has applied, as 'app.name', from the project's view."""
    return sorted("%s.%s" % (label, name)
                  for label, migrations in demo.showmigrations(app.project, app.db).items()
                  for name, done in migrations if done)


def snapshot(db):
    return engine_of(db).snapshot()


def tree(directory):
    """{relative path: sha256} of the files under ``directory``."""
    files = {}
    for root, _dirs, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                files[os.path.relpath(path, directory)] = hashlib.sha256(handle.read()).hexdigest()
    return files


def books(app):
    return app.get("/books/")[1].splitlines()


# --- Tests ---------------------------------------------------------------------------------


def test_failing_migration_is_restored_and_the_service_comes_back(mysql_database, tmp_path, apps):
    """MariaDB (DDL is not transactional): release-3 adds a field, then fails. The guarded
    migrate restores the database; every host puts its code back and starts again; the play
    fails with the module's message; the report says so."""
    repo, shas = release_repo(tmp_path)
    failing = demo.add_failing_migration(repo, "runsql")
    shas["release-3"] = commit(repo, "release-3: a migration that fails", tag="release-3")
    app = App("app1", tmp_path, mysql_database, repo, version="release-3")
    apps.append(app)
    app.running("release-1")
    before = snapshot(mysql_database)

    rc, output = playbook("deploy", inventory(tmp_path, {"django": {"app1": app.hostvars()}}), tmp_path)

    assert rc != 0, output
    assert "Migrate once, inside the migrating host's own stop, code switch and start" in output
    assert "Deploy failed on app1: migration books.%s failed" % failing in output, output[-3000:]
    assert "was restored and verified" in output
    assert diff_snapshots(before, snapshot(mysql_database)) == []
    assert app.head_revision() == shas["release-1"]
    assert app.get("/health/") == (200, "ok")
    assert "A Wizard of Earthsea" in books(app)
    [report] = reports(app)
    assert report["result"] == "failed"
    assert "restored and verified" in report["message"]
    assert report["migrations"][0]["restored"] is True and report["migrations"][0]["failed"] is True
    assert report["migrations"][0]["plan"] == ["books." + SUBTITLE, "books." + failing]
    assert len(report["migrations"][0]["backup"]["sha256"]) == 64
    host = report["hosts"][0]
    assert host["revision_before"] == shas["release-1"] and host["revision_after"] == shas["release-1"]
    assert host["downtime_seconds"] > 0


def test_restore_from_prod_gives_the_developer_productions_data_and_media(
        postgres_database, second_postgres, tmp_path, apps):
    """PostgreSQL: production runs release-2, the developer's code is release-1 (so the
    production's books.0006 is a ghost for it). After the playbook the developer's database
    and media equal production's, production is unchanged, and the ghost is reported; with
    restore_fresh=false nothing at all is written on production."""
    repo, shas = release_repo(tmp_path)
    prod = App("prod", tmp_path, postgres_database, repo)
    dev = App("dev", tmp_path, second_postgres, repo, version="release-1")
    apps.extend([prod, dev])
    prod.running("main")
    prod.manage("shell", "-c", "from books.models import Book\nBook.objects.create(title='Only in production')")
    os.makedirs(os.path.join(prod.media, "uploads"))
    with open(os.path.join(prod.media, "uploads", "scan.txt"), "w") as handle:
        handle.write("uploaded in production\n")
    dev.running("release-1")
    dev.manage("shell", "-c", "from books.models import Book\nBook.objects.create(title='Only on the laptop')")
    with open(os.path.join(dev.media, "stale.txt"), "w") as handle:
        handle.write("the developer's old file\n")
    inv = inventory(tmp_path, {"production": {"prod": prod.hostvars(django_migrate_backup_media=True)},
                               "development": {"dev": dev.hostvars()}})
    prod_before = snapshot(postgres_database)
    prod_media = tree(prod.media)

    # A production host is never the target, whatever the variables say.
    rc, output = playbook("restore_from_prod", inv, tmp_path, restore_from="dev", restore_to="prod",
                          dbsafe_protected=False)
    assert rc != 0 and "prod is protected (group production)" in output, output[-3000:]
    assert not os.path.exists(dev.backups)

    controller_tmp = tmp_path / "controller-tmp"
    controller_tmp.mkdir()
    rc, output = playbook("restore_from_prod", inv, tmp_path, env={"TMPDIR": str(controller_tmp)})

    assert rc == 0, output[-5000:]
    assert diff_snapshots(prod_before, snapshot(postgres_database)) == []
    assert tree(prod.media) == prod_media
    assert diff_snapshots(prod_before, snapshot(second_postgres)) == []
    assert tree(dev.media) == prod_media
    assert "ghosts (applied in production, unknown to this code): books.%s" % SUBTITLE in output
    assert "Only in production" in books(dev) and "Only on the laptop" not in books(dev)
    assert dev.head_revision() == shas["release-1"]  # the developer's code is left alone
    assert os.listdir(controller_tmp) == []  # the fetched copy is gone

    # By choice the newest existing backup instead: production is then only read.
    prod_backups = sorted(os.listdir(prod.backups))
    dev.manage("shell", "-c", "from books.models import Book\nBook.objects.filter(title='Only in production').delete()")
    assert "Only in production" not in books(dev)
    rc, output = playbook("restore_from_prod", inv, tmp_path, restore_fresh=False)
    assert rc == 0, output[-5000:]
    assert sorted(os.listdir(prod.backups)) == prod_backups
    assert diff_snapshots(prod_before, snapshot(second_postgres)) == []
    assert "Only in production" in books(dev)


def test_reset_is_refused_on_production_and_wipes_development(tmp_path, apps):
    """SQLite: refused on a production host and on a dbsafe_protected host even with
    -e dbsafe_protected=false, refused without the confirmation; on development (a project in
    a virtualenv) the data goes, the fixtures come back, a backup was taken first."""
    repo, _shas = release_repo(tmp_path)
    hosts = {}
    for name in ("prod", "guarded", "dev"):
        app = App(name, tmp_path, demo_sqlite(tmp_path, name), repo)
        hosts[name] = app
        apps.append(app)
        if name != "dev":  # refused before anything is read: a stand-in database file will do
            with open(app.db.name, "wb") as handle:
                handle.write(os.urandom(4096))
            continue
        app.checkout("main")
        os.makedirs(app.media)
        app.manage("migrate", "--no-input", "--verbosity", "0")
        app.manage("loaddata", "demo", "--verbosity", "0")
        app.manage("shell", "-c", "from books.models import Book\nBook.objects.create(title='Written by hand')")
    # dev reaches its project through its virtualenv, the others through the interpreter.
    inv = inventory(tmp_path, {
        "production": {"prod": hosts["prod"].hostvars()},
        "development": {"guarded": hosts["guarded"].hostvars(dbsafe_protected=True),
                        "dev": hosts["dev"].hostvars(django_migrate_python="",
                                                     django_migrate_virtualenv=os.path.dirname(os.path.dirname(PYTHON)))},
    })
    untouched = dict((name, file_sha256(app.db.name)) for name, app in hosts.items())

    for target, reason in (("prod", "group production"), ("guarded", "dbsafe_protected: true")):
        rc, output = playbook("reset", inv, tmp_path, reset_hosts=target, reset_confirm=target,
                              dbsafe_protected=False, reset_mode="schema")
        assert rc != 0 and "Refused: %s is protected (%s" % (target, reason) in output, output[-3000:]
    rc, output = playbook("reset", inv, tmp_path, reset_hosts="dev")
    assert rc != 0 and "Refused: resetting dev wipes its database" in output, output[-3000:]
    assert dict((name, file_sha256(app.db.name)) for name, app in hosts.items()) == untouched

    rc, output = playbook("reset", inv, tmp_path, reset_hosts="dev", reset_confirm="dev")

    assert rc == 0, output[-5000:]
    titles = demo.django_json(hosts["dev"].project, hosts["dev"].db,
                              "from books.models import Book\nresult = sorted(Book.objects.values_list('title', flat=True))")
    assert "Written by hand" not in titles and "A Wizard of Earthsea" in titles
    assert len(glob.glob(os.path.join(hosts["dev"].backups, "*.sqlite.*[!n]"))) >= 1  # not .json
    assert file_sha256(hosts["prod"].db.name) == untouched["prod"]
    assert file_sha256(hosts["guarded"].db.name) == untouched["guarded"]


@pytest.mark.parametrize("engine", ["postgres", "mysql"])
def test_reset_schema_drops_and_recreates_the_database(engine, request, tmp_path, apps):
    """schema mode: a table made by hand is gone (every object in the database was dropped;
    the database itself stays), every migration is applied again, the fixtures are loaded."""
    db = request.getfixturevalue(engine + "_database")
    repo, _shas = release_repo(tmp_path)
    dev = App("dev", tmp_path, db, repo)
    apps.append(dev)
    dev.running("main", serve=False)
    execute(db, "CREATE TABLE stray_by_hand (id integer);\n")
    # No app server here (the service steps are the data mode's and the deploys' business).
    inv = inventory(tmp_path, {"development": {"dev": dev.hostvars(
        django_migrate_start_command=[],
        django_migrate_stop_command=[], django_migrate_status_command=[])}})

    rc, output = playbook("reset", inv, tmp_path, reset_hosts="dev", reset_confirm="dev", reset_mode="schema")

    assert rc == 0, output[-5000:]
    assert "stray_by_hand" not in snapshot(db)["schema"]
    assert "books." + SUBTITLE in applied(dev)
    assert demo.migrate_plan(dev.project, db) == []
    titles = demo.django_json(dev.project, db, "from books.models import Book\n"
                                               "result = list(Book.objects.values_list('title', flat=True))")
    assert "A Wizard of Earthsea" in titles


def test_fleet_of_three_app_hosts_migrates_once(postgres_database, tmp_path, apps):
    """Three app hosts and the database host: every service is stopped before the migration,
    the migration runs exactly once (on app1), then the services start; the verification runs
    one host at a time."""
    db = postgres_database
    repo, shas = release_repo(tmp_path)
    fleet = [App("app%d" % n, tmp_path, db, repo) for n in (1, 2, 3)]
    apps.extend(fleet)
    fleet[0].running("release-1")
    for app in fleet[1:]:
        app.running("release-1", migrate=False, data=False)
    # The app hosts take the database from the database host's variables.
    hosts = {}
    for app in fleet:
        hosts[app.name] = app.hostvars(django_migrate_environment=(
            "{{ hostvars[groups['databases'][0]].demo_db_env"
            " | combine({'DEMO_MEDIA_ROOT': '%s', 'PYTHONDONTWRITEBYTECODE': '1'}) }}" % app.media))
    inv = inventory(tmp_path, {"django": hosts,
                               "databases": {"db1": {"ansible_connection": "local", "demo_db_env": db.demo_env()}}})

    rc, output = playbook("deploy", inv, tmp_path, deploy_serial=1)

    assert rc == 0, output[-5000:]
    rows = execute(db, "SELECT count(*), extract(epoch FROM max(applied)) FROM django_migrations "
                       "WHERE app = 'books' AND name = '%s';\n" % SUBTITLE).split("|")
    assert int(rows[0]) == 1
    migrated_at = float(rows[1])
    [report] = reports(fleet[0])
    assert report["result"] == "succeeded"
    assert report["migrations"][0]["host"] == "app1"
    assert [s["migration"] for s in report["migrations"][0]["applied"]] == ["books." + SUBTITLE]
    assert [h["host"] for h in report["hosts"]] == ["app1", "app2", "app3"]
    assert [h["migrated_here"] for h in report["hosts"]] == [True, False, False]
    for host in report["hosts"]:
        assert host["revision_before"] == shas["release-1"] and host["revision_after"] == shas["release-2"]
        assert epoch(host["stopped_at"]) <= migrated_at <= epoch(host["started_at"]) + 1
        assert host["downtime_seconds"] > 0 and not host["problems"]
    assert len(glob.glob(os.path.join(fleet[0].backups, "*.json"))) == 1
    assert not os.path.exists(fleet[1].backups) and not os.path.exists(fleet[2].backups)
    for app in fleet:
        assert app.get("/health/") == (200, "ok")
        assert app.head_revision() == shas["release-2"]
    assert all(counts["failed"] == 0 for counts in recap(output).values())


def test_rollback_needs_the_acknowledgement_then_unapplies_with_a_backup(tmp_path, apps):
    """SQLite, the project reached through a command prefix (as for a compose service)."""
    repo, _shas = release_repo(tmp_path)
    app = App("app1", tmp_path, demo_sqlite(tmp_path, "app1"), repo)
    apps.append(app)
    app.running("main")
    inv = inventory(tmp_path, {"django": {"app1": app.hostvars(django_migrate_command_prefix=["/usr/bin/env"])}})

    rc, output = playbook("rollback", inv, tmp_path, rollback_app="books", rollback_to="0005")
    assert rc != 0 and "rollback_allow_data_loss=true" in output, output[-3000:]
    assert "books." + SUBTITLE in applied(app)

    rc, output = playbook("rollback", inv, tmp_path, rollback_app="books", rollback_to="0005",
                          rollback_allow_data_loss=True)

    assert rc == 0, output[-5000:]
    assert "books." + SUBTITLE not in applied(app)
    [report] = reports(app, "rollback")
    assert report["result"] == "succeeded"
    assert report["migrations"][0]["plan"] == ["books." + SUBTITLE]
    assert os.path.isfile(report["migrations"][0]["backup"]["path"])
    assert app.get("/health/") == (200, "ok")


# --- small helpers -------------------------------------------------------------------------


def demo_sqlite(tmp_path, name):
    directory = tmp_path / ("db-" + name)
    directory.mkdir()
    return create_sqlite(directory)


def file_sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def epoch(stamp):
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
