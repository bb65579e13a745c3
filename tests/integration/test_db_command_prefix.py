"""db_command_prefix for real: a PostgreSQL 15 server reachable ONLY inside a network namespace.

The demo project runs with command_prefix [ip, netns, exec, NS] and the database tools with
db_command_prefix [ip, netns, exec, NS]: from this host 127.0.0.1:PORT refuses, so only tools
that really run inside the namespace reach the server. A backup and its restore, a guarded
migrate and the restore after a failing migrate all go through the prefix, no password shows
in any process's argv while they run, and without db_command_prefix the same backup fails with
a clear connection error. MariaDB is not repeated here: its engine builds every argv in the
same Engine.tool_argv (tests/unit/plugins/module_utils/test_db_command_prefix.py).
"""
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

import demo
from ansible_run import run_module
from databases import LiveDatabase
from ansible_collections.dbsafe.django.plugins.module_utils.connection import Connection
from ansible_collections.dbsafe.django.plugins.module_utils.engines.registry import engine_for
from ansible_collections.dbsafe.django.plugins.module_utils.snapshots import diff_snapshots

from runner_double import make_runner

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reliability"))
from harness import ArgvSampler  # noqa: E402  pylint: disable=wrong-import-position

PG_BIN = "/usr/lib/postgresql/15/bin"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(message):
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing prerequisite is a failure)", pytrace=False)
    pytest.skip(message)


def _refused(port):
    """True when nothing on this host answers at 127.0.0.1:port."""
    with socket.socket() as probe:
        probe.settimeout(2)
        try:
            probe.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def _free_port():
    for _attempt in range(50):
        port = 20000 + secrets.randbelow(20000)
        if _refused(port):
            return port
    raise AssertionError("no free port found")


class NamespacedServer:
    """A private database server inside a new network namespace, started and stopped by pid.

    A subclass sets ``engine`` and ``binary`` (the server, which must exist) and implements
    ``prepare`` (its directories), ``argv`` (its command), ``ready`` (one check),
    ``create_database`` (the test's database and password user) and ``pid_file``."""

    engine = None
    binary = None

    def __init__(self):
        self.ns = "dbsafe_t_%s" % secrets.token_hex(4)
        self.inside = ["ip", "netns", "exec", self.ns]
        self.port = _free_port()
        self.root = None
        self.proc = None
        self.db = None

    def directory(self, name, owner):
        path = os.path.join(self.root, name)
        os.mkdir(path, 0o700)
        shutil.chown(path, owner, owner)
        return path

    def start(self):
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)
        self.root = tempfile.mkdtemp(prefix="dbsafe-netns-%s-" % self.engine)
        os.chmod(self.root, 0o755)  # the server's user reaches its directories below
        self.prepare()
        with open(os.path.join(self.root, "server.log"), "wb") as log:
            self.proc = subprocess.Popen(self.inside + self.argv(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(self.root, "server.log")) as handle:
                    raise AssertionError("the namespaced %s server did not start: %s" % (self.engine, handle.read()))
            time.sleep(0.2)
        name = "dbsafe_t_%s" % secrets.token_hex(5)
        self.db = LiveDatabase(self.engine, name, "127.0.0.1", self.port, name, secrets.token_hex(12))
        self.create_database()
        return self

    def stop(self):
        if self.proc is not None:
            if os.path.exists(self.pid_file()):
                with open(self.pid_file()) as handle:
                    os.kill(int(handle.readline()), signal.SIGTERM)  # our server, by its pid
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(["ip", "netns", "del", self.ns], check=False, capture_output=True)
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)


class NamespacedPostgres(NamespacedServer):
    """PostgreSQL 15, scram passwords over TCP; the superuser over the local socket (trust)."""

    engine = "postgresql"
    binary = os.path.join(PG_BIN, "postgres")

    def prepare(self):
        self.data = self.directory("data", "postgres")
        self.sockets = self.directory("run", "postgres")
        subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(PG_BIN, "initdb"), "-D", self.data,
                        "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
                        "--encoding=UTF8", "--locale=C", "--no-sync"], check=True, capture_output=True)

    def argv(self):
        return ["runuser", "-u", "postgres", "--", self.binary, "-D", self.data, "-p", str(self.port),
                "-k", self.sockets, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]

    def ready(self):
        return subprocess.run(self.inside + [os.path.join(PG_BIN, "pg_isready"), "-q", "-h", "127.0.0.1",
                                             "-p", str(self.port)], check=False).returncode == 0

    def create_database(self):
        # The password goes on stdin, never into an argv.
        subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                        "-h", self.sockets, "-p", str(self.port), "-d", "postgres"],
                       input="CREATE ROLE {n} LOGIN PASSWORD '{p}';\nCREATE DATABASE {n} OWNER {n};\n".format(
                           n=self.db.name, p=self.db.password), text=True, check=True, capture_output=True)

    def pid_file(self):
        return os.path.join(self.root or "", "data", "postmaster.pid")


class NamespacedMariadb(NamespacedServer):
    """MariaDB, a password user over TCP; root over the local socket."""

    engine = "mysql"
    binary = "/usr/sbin/mariadbd"

    def prepare(self):
        self.data = self.directory("data", "mysql")
        self.run_dir = self.directory("run", "mysql")
        os.chmod(self.run_dir, 0o755)  # the socket, for root's setup below
        subprocess.run(["mariadb-install-db", "--no-defaults", "--datadir=%s" % self.data, "--user=mysql",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True)

    def argv(self):
        return [self.binary, "--no-defaults", "--datadir=%s" % self.data, "--port=%d" % self.port,
                "--socket=%s" % self.socket(), "--bind-address=127.0.0.1", "--user=mysql",
                "--pid-file=%s" % self.pid_file(), "--innodb-buffer-pool-size=32M", "--skip-log-bin"]

    def socket(self):
        return os.path.join(self.run_dir, "mysqld.sock")

    def ready(self):
        return subprocess.run(["mariadb-admin", "--no-defaults", "--socket=%s" % self.socket(), "-uroot",
                               "ping"], capture_output=True, check=False).returncode == 0

    def create_database(self):
        subprocess.run(["mariadb", "--no-defaults", "--socket=%s" % self.socket(), "-uroot"],
                       input="CREATE DATABASE `{n}` CHARACTER SET utf8mb4;\n"
                       "CREATE USER '{n}'@'%' IDENTIFIED BY '{p}';\n"
                       "GRANT ALL PRIVILEGES ON `{n}%`.* TO '{n}'@'%';\n".format(n=self.db.name, p=self.db.password),
                       text=True, check=True, capture_output=True)

    def pid_file(self):
        return os.path.join(self.root or "", "run", "mariadb.pid")


SERVERS = {"postgresql": NamespacedPostgres, "mysql": NamespacedMariadb}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(request):
    server_class = SERVERS[request.param]
    if os.geteuid() != 0 or not shutil.which("ip") or not os.path.exists(server_class.binary):
        _unavailable("a network namespace needs root and ip, and the %s server %s"
                     % (request.param, server_class.binary))
    namespaced = server_class()
    try:
        yield namespaced.start()
    finally:
        namespaced.stop()


def args_for(server, project, tmp_path, db_prefix=True, **extra):
    extra.setdefault("backup_dir", str(tmp_path / "backups"))
    extra.setdefault("allow_data_loss", True)
    return demo.module_args(project, server.db, command_prefix=server.inside,
                            db_command_prefix=server.inside if db_prefix else [], **extra)


def backup_args(server, project, tmp_path, db_prefix=True, **extra):
    args = args_for(server, project, tmp_path, db_prefix, **extra)
    args.pop("allow_data_loss")
    return args


def snapshot(server):
    runner = make_runner()
    runner.db_command_prefix = list(server.inside)
    return engine_for(Connection.from_params(server.db.connection()), runner).snapshot()


def ns_manage(server, project, *args):
    """manage.py inside the namespace (the only place the database is reachable)."""
    subprocess.run(server.inside + [demo.PYTHONS["5.2"], "manage.py"] + list(args), cwd=project,
                   env=demo.manage_env(project, server.db), check=True, capture_output=True, timeout=300)


def test_the_server_is_reachable_only_inside_the_namespace(server):
    assert _refused(server.port), "127.0.0.1:%d answers on this host" % server.port
    inside = subprocess.run(server.inside + [sys.executable, "-c", "import socket; socket.create_connection"
                                             "(('127.0.0.1', %d), 5).close()" % server.port],
                            capture_output=True, text=True, check=False)
    assert inside.returncode == 0, inside.stderr


def test_migrate_backup_restore_and_a_failed_migrate_go_through_the_prefix(server, tmp_path):
    project = demo.copy_demo(tmp_path)
    password = server.db.password

    # Every migration pending on an empty database: the guarded migrate backs up, locks,
    # snapshots and migrates, all through the prefixes.
    with ArgvSampler([password]) as sampler:
        migrated = run_module("django_migrate_guarded", args_for(server, project, tmp_path))
    assert not migrated["failed"], migrated.get("msg")
    assert migrated["changed"] is True and migrated["after"]["unapplied_count"] == 0
    ns_manage(server, project, "loaddata", "demo")
    loaded = snapshot(server)

    with ArgvSampler([password]) as sampler:
        dumped = run_module("db_backup", backup_args(server, project, tmp_path))
        assert not dumped["failed"], dumped.get("msg")
        ns_manage(server, project, "flush", "--no-input")
        assert diff_snapshots(loaded, snapshot(server)) != []
        restored = run_module("db_backup", backup_args(server, project, tmp_path, state="restore"))
    assert not restored["failed"], restored.get("msg")
    assert diff_snapshots(loaded, snapshot(server)) == []
    assert sampler.leaks == [], sampler.leaks[:3]
    dump_tool, client = ("pg_dump", "psql") if server.engine == "postgresql" else ("mariadb-dump", "mariadb")
    assert {dump_tool, client} <= set(sampler.clients()), sampler.clients()
    for result in (migrated, dumped, restored):
        assert password not in str(result)

    failing = demo.add_failing_migration(project, "runsql")
    with ArgvSampler([password]) as sampler:
        failed = run_module("django_migrate_guarded", args_for(server, project, tmp_path))
    assert failed["failed"] is True
    assert "books.%s" % failing in failed["msg"]
    assert "restored and verified" in failed["msg"], failed["msg"]
    assert failed["restored"] is True and failed["proven"] is True
    assert diff_snapshots(loaded, snapshot(server)) == []
    assert sampler.leaks == [], sampler.leaks[:3]


def test_without_db_command_prefix_the_backup_cannot_connect(server, tmp_path):
    project = demo.copy_demo(tmp_path)
    result = run_module("db_backup", backup_args(server, project, tmp_path, db_prefix=False))
    assert result["failed"] is True
    assert "cannot connect to %s database" % server.engine in result["msg"], result["msg"]
    assert "at 127.0.0.1:%d" % server.port in result["msg"]
    assert "reachable from this host (a server reachable only inside a container or network namespace: " \
        "set db_command_prefix)" in result["msg"]


@pytest.mark.parametrize("server", ["postgresql"], indirect=True)  # the one engine with that format
def test_the_directory_format_is_refused_through_the_prefix(server, tmp_path):
    project = demo.copy_demo(tmp_path)
    result = run_module("db_backup", backup_args(server, project, tmp_path, format="directory"))
    assert result["failed"] is True
    assert "with db_command_prefix use the custom format" in result["msg"], result["msg"]
