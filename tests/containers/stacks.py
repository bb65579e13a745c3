"""A compose stack for the tests: examples/compose/compose.yml, run for real with podman.

One stack is one compose project: the demo project (a git checkout on this host, bind-mounted
at /app) in the `web` service, PostgreSQL or MariaDB in `db`, both on the project's internal
network. The stack's directory holds a copy of the example's compose.yml and the `.env` beside
it (the images, the engine, the checkout, the password file), as a team's server would.

The host cannot reach the database: the network publishes no port, `db` resolves only inside
it, and - because a rootful bridge is routable from the host - the stack drops this host's own
TCP to the network's subnet (an iptables OUTPUT rule, removed at close). Only tools that run
behind `compose exec` reach the server.
"""
import json
import os
import secrets
import shutil
import socket
import subprocess
import time

from images import CONTAINERS_CONF

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EXAMPLE = os.path.join(ROOT, "examples", "compose", "compose.yml")
BIN = os.path.join(HERE, "bin")  # `docker`: podman, and `docker compose`: podman-compose

# The two command names a team types: Docker's and podman's own.
DOCKER_COMPOSE = ["docker", "compose"]
PODMAN_COMPOSE = ["podman-compose"]

# What the PostgreSQL tools read from the environment: named with -e (no value), so that
# `compose exec` passes the caller's values into the container without an argv holding them.
PG_ENVIRONMENT = ["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGCONNECT_TIMEOUT",
                  "PGAPPNAME", "PGOPTIONS", "LC_ALL"]
PORTS = {"postgresql": 5432, "mysql": 3306}
IMAGE_OF_ENGINE = {"postgresql": "postgresql", "mysql": "mariadb"}


def environment():
    """The environment podman and the compose commands run with here (tests and playbooks)."""
    return dict(os.environ, CONTAINERS_CONF=CONTAINERS_CONF, PATH=BIN + os.pathsep + os.environ["PATH"])


def run(argv, check=True, timeout=300, **kwargs):
    proc = subprocess.run(argv, capture_output=True, text=True, env=environment(), timeout=timeout,
                          check=False, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (exit %d): %s" % (" ".join(argv), proc.returncode,
                                                          (proc.stdout + proc.stderr)[-3000:]))
    return proc


class ComposeStack:
    """One compose project of the example (see the module's docstring)."""

    def __init__(self, name, tmp_path, engine, images, repo, version, compose_command=None):
        self.name = name
        self.engine = engine
        self.project = "dbsafe_t_%s_%s" % (name, secrets.token_hex(3))
        self.home = str(tmp_path / name)
        os.makedirs(self.home)
        self.app = os.path.join(self.home, "app")
        self.backups = os.path.join(self.home, "backups")
        self.reports = str(tmp_path / "reports")
        self.password = secrets.token_hex(12)
        self.password_file = os.path.join(self.home, "db_password")
        self.compose_file = os.path.join(self.home, "compose.yml")
        self.compose = list(compose_command or DOCKER_COMPOSE) + ["-f", self.compose_file, "-p", self.project]
        self.images = images
        self.repo = repo
        self.version = version
        self.subnet = None
        self.firewalled = False

    # -- the stack's life -----------------------------------------------------------------

    def up(self, version=None):
        subprocess.run(["git", "clone", "--quiet", self.repo, self.app], check=True)
        subprocess.run(["git", "-C", self.app, "checkout", "--quiet", version or self.version], check=True)
        os.makedirs(os.path.join(self.app, "media"), exist_ok=True)
        with open(os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(self.password + "\n")
        shutil.copy(EXAMPLE, self.compose_file)
        with open(os.path.join(self.home, ".env"), "w") as handle:
            handle.write("WEB_IMAGE=%s\nDB_IMAGE=%s\nDB_ENGINE=%s\nAPP_DIR=%s\nDB_PASSWORD_FILE=%s\n" % (
                self.images["web"], self.images[IMAGE_OF_ENGINE[self.engine]], self.engine, self.app,
                self.password_file))
        run(self.compose + ["up", "-d"])
        self.firewall()
        self.wait_for_database()
        return self

    def close(self):
        run(self.compose + ["down", "-v", "-t", "2"], check=False)
        if self.firewalled:
            subprocess.run(self.firewall_rule("-D"), check=False, capture_output=True)
            self.firewalled = False

    def firewall_rule(self, action):
        return ["iptables", action, "OUTPUT", "-d", self.subnet, "-p", "tcp", "-j", "DROP"]

    def firewall(self):
        network = "%s_backend" % self.project
        inspected = json.loads(run(["podman", "network", "inspect", network]).stdout)
        self.subnet = inspected[0]["subnets"][0]["subnet"]
        run(self.firewall_rule("-I"))
        self.firewalled = True

    def wait_for_database(self, seconds=90):
        ping = (["pg_isready", "-q", "-h", "127.0.0.1", "-U", "postgres"] if self.engine == "postgresql"
                else ["mariadb-admin", "-uroot", "ping", "--silent"])
        deadline = time.monotonic() + seconds
        while run(self.compose + ["exec", "-T", "db"] + ping, check=False).returncode != 0:
            if time.monotonic() > deadline:
                logs = run(self.compose + ["logs", "db"], check=False)
                raise AssertionError("the db service of %s did not start: %s" % (self.project, logs.stdout[-2000:]))
            time.sleep(0.5)

    # -- what the playbooks get -----------------------------------------------------------

    def db_command_prefix(self):
        passed = []
        if self.engine == "postgresql":
            for name in PG_ENVIRONMENT:
                passed += ["-e", name]
        return self.compose + ["exec", "-T"] + passed + ["db"]

    def hostvars(self, **extra):
        host = {
            "ansible_connection": "local",
            "ansible_python_interpreter": os.path.join(ROOT, ".venv", "bin", "python"),
            # The project as the container sees it; a one-off `run` container, because the
            # service itself is stopped while the migration runs.
            "django_migrate_project_path": "/app",
            "django_migrate_python": "/opt/venv/bin/python",
            "django_migrate_command_prefix": self.compose + ["run", "--rm", "-T", "--no-deps", "web"],
            "django_migrate_db_command_prefix": self.db_command_prefix(),
            # The checkout on this host that the web service mounts.
            "django_migrate_code_path": self.app,
            "django_migrate_git_repo": self.repo,
            "django_migrate_git_version": self.version,
            "django_migrate_backup_dir": self.backups,
            "django_migrate_report_dir": self.reports,
            "django_migrate_stop_command": self.compose + ["stop", "-t", "5", "web"],
            "django_migrate_start_command": self.compose + ["start", "web"],
            "django_migrate_status_command": self.compose + ["exec", "-T", "web", "true"],
            "django_migrate_media_root": os.path.join(self.app, "media"),
            "django_migrate_reset_fixtures": ["demo"],
        }
        host.update(extra)
        return host

    # -- looking at it --------------------------------------------------------------------

    def in_web(self, *argv):
        return run(self.compose + ["exec", "-T", "web"] + list(argv)).stdout

    def manage(self, *args):
        return self.in_web("python", "manage.py", *args)

    def sql(self, statement):
        """``statement``'s rows (tab-separated lines), as the server's superuser in `db`."""
        client = (["psql", "-X", "-q", "-At", "-U", "postgres", "-d", "shop", "-v", "ON_ERROR_STOP=1"]
                  if self.engine == "postgresql" else ["mariadb", "-uroot", "--batch", "--skip-column-names", "shop"])
        return run(self.compose + ["exec", "-T", "db"] + client, input=statement + "\n").stdout.splitlines()

    def applied(self, app="books"):
        return self.sql("SELECT name FROM django_migrations WHERE app = '%s' ORDER BY name" % app)

    def titles(self):
        return self.sql("SELECT title FROM books_book ORDER BY title")

    def leftovers(self):
        """Files of ours left in the db container: dumps, client option files."""
        found = run(self.compose + ["exec", "-T", "db", "find", "/", "-xdev", "(", "-name", "*.pgdump", "-o",
                                    "-name", "*.sql*", "-o", "-name", "dbsafe-my.*", ")", "-newer",
                                    "/usr/local/bin/dbsafe-db", "-print"]).stdout
        return found.split()

    def running(self, service="web"):
        return run(self.compose + ["exec", "-T", service, "true"], check=False).returncode == 0

    def revision(self):
        return subprocess.run(["git", "-C", self.app, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()

    def database_address(self):
        inspected = json.loads(run(["podman", "inspect", "%s_db_1" % self.project]).stdout)
        networks = inspected[0]["NetworkSettings"]["Networks"]
        return list(networks.values())[0]["IPAddress"], PORTS[self.engine]

    def unreachable_from_host(self):
        """Why this host cannot reach the database: [] when it can (a failed proof)."""
        reasons = []
        try:
            socket.getaddrinfo("db", PORTS[self.engine])
        except socket.gaierror:
            reasons.append("`db` does not resolve here")
        address, port = self.database_address()
        try:
            socket.create_connection((address, port), timeout=1).close()
        except OSError as error:
            reasons.append("%s:%d does not answer here (%s)" % (address, port, type(error).__name__))
        published = run(["podman", "port", "%s_db_1" % self.project]).stdout.strip()
        if not published:
            reasons.append("no port published")
        return reasons if len(reasons) == 3 else []
