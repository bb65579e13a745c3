"""The field harness: the playbooks run the way operations teams run them.

What it brings up (tests/field/conftest.py makes it once per session):

- two OS users with random names: a LOGIN user that ssh reaches with a key of ours and that may
  ``sudo`` (no password) to an APP user, who owns the checkouts, the backups, the media and the
  app processes; a sudoers drop-in /etc/sudoers.d/<random> that also sends the sudo log of the
  login user to a file of ours (``Defaults:<login> logfile=..., loglinelen=0``);
- a real ``sshd`` on 127.0.0.1 and a free port, with its own config and host key;
- a virtualenv of the system Python (/usr/bin/python3) with Django and the database drivers,
  readable by the app user (the project's .venv points into /root, which the app user cannot
  enter): it is the hosts' ``ansible_python_interpreter`` and the project's Python;
- databases with a password the server checks: an own PostgreSQL cluster (initdb + pg_ctl as the
  postgres OS user, scram-sha-256 for every TCP connection) and a MariaDB user of the local server;
- per engine a fleet: app1, app2, app3 (and dev, a developer's host), all ``ansible_host=127.0.0.1``
  on that sshd, each with its own checkout of a release repository and its own app server
  (manage.py runserver, stopped and started by the role's stop/start commands; or, for a test that
  asks for it with ``serve_with("gunicorn")``, gunicorn, which the role's reload command reloads
  gracefully by HUP); app1..3 share ONE database, dev has its own.

Every playbook run goes through :meth:`Fleet.playbook`: ``ansible-playbook -vvv`` while an argv
sampler reads /proc/*/cmdline every few ms; the output, the sudo log and the reports are then
searched for the secrets (database passwords, the SECRET_KEY). The figures of each run go to
build/reliability/field.json (see :func:`write_results`).
"""
import glob
import hashlib
import json
import os
import pwd
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
from ansible_run import ROOT, ansible_env, _bin
from databases import LiveDatabase, create_mysql, drop_mysql, mysql_admin_sql
from test_playbooks import App, GIT_IDENTITY, commit, free_port, git, release_repo, wait_for

sys.path.insert(0, os.path.join(ROOT, "tests", "reliability"))
import harness  # noqa: E402 - the argv sampler of R4 (tests/reliability/harness.py)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SSHD = "/usr/sbin/sshd"
SUDO = "/usr/bin/sudo"
SETFACL = "/usr/bin/setfacl"
START_STOP_DAEMON = "/sbin/start-stop-daemon"
PG_BIN = os.environ.get("DBSAFE_FIELD_PG_BIN", "/usr/lib/postgresql/15/bin")
SYSTEM_PYTHON = os.environ.get("DBSAFE_FIELD_PYTHON", "/usr/bin/python3")
RESULTS = os.environ.get("DBSAFE_FIELD_RESULTS", os.path.join(ROOT, "build", "reliability", "field.json"))
LOGS = os.environ.get("DBSAFE_FIELD_LOGS", os.path.join(ROOT, "build", "field", "logs"))
STOP_PIDFILE = os.path.join(ROOT, "tests", "integration", "stop_pidfile.sh")
RELOAD_PIDFILE = os.path.join(ROOT, "tests", "integration", "reload_pidfile.sh")
# The packages the hosts' Python needs (the demo project, the database drivers, gunicorn and its
# one dependency), pinned as in the project's own lock file.
APP_PACKAGES = ("Django", "asgiref", "sqlparse", "psycopg", "psycopg-binary", "PyMySQL",
                "typing_extensions", "gunicorn", "packaging")
MASK = "<SECRET>"
INTERVAL = 0.010  # a pass over every /proc/*/cmdline starts every 10 ms (or at once after a slow one)


def missing(message):
    """A prerequisite is missing: a failure in CI, a skip elsewhere."""
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing prerequisite is a failure)", pytrace=False)
    pytest.skip(message)


def run(argv, check=True, **kwargs):
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    proc = subprocess.run([str(a) for a in argv], check=False, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (%s):\n%s\n%s"
                             % (" ".join(map(str, argv)), proc.returncode, proc.stdout, proc.stderr))
    return proc


def random_suffix():
    return secrets.token_hex(3)


# --- OS users and sudo ------------------------------------------------------------------------


class Users:
    """The login user (ssh, sudo) and the app user (owns everything of the app)."""

    def __init__(self, base):
        suffix = random_suffix()
        self.base = base
        self.login = "dbfl_" + suffix
        self.app = "dbfa_" + suffix
        self.sudoers = "/etc/sudoers.d/dbsafe_field_" + suffix
        self.sudo_log = os.path.join(base, "sudo.log")
        self.key = os.path.join(base, "ssh", "id_login")
        self.made = []

    def create(self):
        os.makedirs(os.path.dirname(self.key), mode=0o700)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dbsafe-field", "-f", self.key])
        for name in (self.login, self.app):
            run(["useradd", "--create-home", "--home-dir", os.path.join(self.base, "home-" + name),
                 "--shell", "/bin/sh", name])
            self.made.append(name)
            run(["usermod", "-p", "*", name])  # no password, but not locked: sshd lets keys in
        keys = os.path.join(self.base, "authorized_keys")
        os.makedirs(keys, mode=0o755)
        shutil.copy(self.key + ".pub", os.path.join(keys, self.login))
        os.chmod(os.path.join(keys, self.login), 0o644)
        with open(self.sudo_log, "w"):
            pass
        os.chmod(self.sudo_log, 0o600)
        rules = ("# dbsafe.django field harness (tests/field); removed by the tests\n"
                 "Defaults:{l} logfile={log}, loglinelen=0, !syslog\n"
                 "{l} ALL=({a}) NOPASSWD: ALL\n").format(l=self.login, a=self.app, log=self.sudo_log)
        staging = os.path.join(self.base, "sudoers.tmp")
        with open(staging, "w") as handle:
            handle.write(rules)
        os.chmod(staging, 0o440)
        run(["visudo", "-cf", staging])
        shutil.move(staging, self.sudoers)
        self.app_pw = pwd.getpwnam(self.app)
        return self

    @property
    def uid(self):
        return self.app_pw.pw_uid

    @property
    def gid(self):
        return self.app_pw.pw_gid

    def own(self, *paths):
        """Give ``paths`` (recursively) to the app user."""
        for path in paths:
            run(["chown", "-R", "%s:%s" % (self.uid, self.gid), path])

    def as_app(self, argv, env=None, cwd=None, check=True, timeout=300):
        env = dict(env if env is not None else os.environ)
        env.update(HOME=self.app_pw.pw_dir, USER=self.app, LOGNAME=self.app)
        return run(argv, check=check, env=env, cwd=cwd, user=self.uid, group=self.gid,
                   extra_groups=[], timeout=timeout)

    def sudo_log_size(self):
        try:
            return os.path.getsize(self.sudo_log)
        except OSError:
            return 0

    def sudo_log_since(self, offset):
        try:
            with open(self.sudo_log, "rb") as handle:
                handle.seek(offset)
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def remove(self):
        """Kill every process of our users (by PID), remove the users and the sudoers file."""
        if os.path.exists(self.sudoers):
            os.remove(self.sudoers)
        uids = []
        for name in self.made:
            try:
                uids.append(pwd.getpwnam(name).pw_uid)
            except KeyError:
                pass
        for attempt in range(3):  # noqa: B007 - processes may fork while being killed
            pids = processes_of(uids)
            if not pids:
                break
            kill_pids(pids)
        for name in reversed(self.made):
            run(["userdel", "--force", "--remove", name], check=False)
        self.made = []


def processes_of(uids):
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat("/proc/" + entry).st_uid in uids:
                pids.append(int(entry))
        except OSError:
            pass
    return pids


def processes_matching(needle):
    """PIDs whose command line contains ``needle`` (bytes): processes of ours, by a path of ours."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as handle:
                if needle in handle.read():
                    pids.append(int(entry))
        except OSError:
            pass
    return pids


def kill_pids(pids, sig=signal.SIGKILL):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    time.sleep(0.2)


# --- sshd ---------------------------------------------------------------------------------------


class Sshd:
    """A real sshd on 127.0.0.1:<free port>, its own config and host key; stopped by PID."""

    def __init__(self, base, users):
        self.dir = os.path.join(base, "sshd")
        self.users = users
        self.port = free_port()
        self.proc = None
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        self.log = os.path.join(self.dir, "sshd.log")

    def start(self):
        os.makedirs(self.dir, mode=0o700)
        host_key = os.path.join(self.dir, "host_ed25519")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key])
        config = os.path.join(self.dir, "sshd_config")
        with open(config, "w") as handle:
            handle.write("\n".join([
                "Port %d" % self.port,
                "ListenAddress 127.0.0.1",
                "HostKey " + host_key,
                "PidFile " + os.path.join(self.dir, "sshd.pid"),
                "AuthorizedKeysFile %s/%%u" % os.path.join(self.users.base, "authorized_keys"),
                "AllowUsers " + self.users.login,
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin no",
                "UsePAM no",
                "StrictModes no",
                "MaxSessions 100",
                "MaxStartups 100:30:200",
                "LogLevel VERBOSE",
                "Subsystem sftp internal-sftp",
                ""]))
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        run([SSHD, "-t", "-f", config])
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", config], stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "w"))
        with open(host_key + ".pub") as handle:
            public = handle.read().split()
        with open(self.known_hosts, "w") as handle:
            handle.write("[127.0.0.1]:%d %s %s\n" % (self.port, public[0], public[1]))
        deadline = time.time() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise AssertionError("sshd did not start: " + open(self.log).read())
                time.sleep(0.1)
        return self

    def ssh(self, command, check=True):
        """Run ``command`` (a string) as the login user over this sshd."""
        return run(["ssh", "-p", self.port, "-i", self.users.key, "-o", "IdentitiesOnly=yes",
                    "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=" + self.known_hosts,
                    "-o", "StrictHostKeyChecking=yes", "%s@127.0.0.1" % self.users.login, command],
                   check=check, timeout=60)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- the hosts' Python ----------------------------------------------------------------------------


def app_venv():
    """A venv of /usr/bin/python3 with Django and the drivers, readable by every user.

    Cached by the pins of requirements/tools.txt in /var/tmp/dbsafe-field-venv-<hash>: made once
    per machine (a pip install from PyPI), reused afterwards.
    """
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        missing("no %s for the hosts' virtualenv" % SYSTEM_PYTHON)
    pins = []
    with open(os.path.join(ROOT, "requirements", "tools.txt")) as handle:
        for line in handle:
            name = line.split("==")[0].strip()
            if "==" in line and name.lower() in [p.lower() for p in APP_PACKAGES]:
                pins.append(line.strip())
    version = run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version)"]).stdout.strip()
    digest = hashlib.sha256(("\n".join(sorted(pins)) + version).encode()).hexdigest()[:12]
    venv = "/var/tmp/dbsafe-field-venv-" + digest
    python = os.path.join(venv, "bin", "python")
    if os.path.exists(os.path.join(venv, ".complete")):
        return python
    building = "%s.building-%d" % (venv, os.getpid())
    run([SYSTEM_PYTHON, "-m", "venv", building])
    proc = run([os.path.join(building, "bin", "pip"), "install", "--quiet", "--disable-pip-version-check"]
               + pins, check=False, timeout=600)
    if proc.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        missing("cannot install the hosts' packages (%s): %s" % (" ".join(pins), proc.stderr[-2000:]))
    # The venv's scripts name its own path: make it again at the final place (cheap from pip's cache).
    shutil.rmtree(building)
    run([SYSTEM_PYTHON, "-m", "venv", venv])
    run([os.path.join(venv, "bin", "pip"), "install", "--quiet", "--disable-pip-version-check"] + pins,
        timeout=600)
    run(["chmod", "-R", "a+rX", venv])
    open(os.path.join(venv, ".complete"), "w").close()
    return python


# --- databases with a password the server checks ----------------------------------------------


class PgCluster:
    """An own PostgreSQL cluster: scram-sha-256 for every TCP connection (the system cluster
    trusts everyone), trust only on its own socket for the postgres admin."""

    def __init__(self, base):
        self.dir = os.path.join(base, "pg")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.started = False

    def _as_postgres(self, argv, **kwargs):
        pw = pwd.getpwnam("postgres")
        return run(argv, user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], cwd=self.dir,
                   env=dict(os.environ, HOME=self.dir), **kwargs)

    def start(self):
        if not os.path.exists(os.path.join(PG_BIN, "initdb")):
            missing("no PostgreSQL server binaries in %s" % PG_BIN)
        os.makedirs(self.dir, mode=0o700)
        pw = pwd.getpwnam("postgres")
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._as_postgres([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "postgres",
                           "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                           "--no-sync", "--no-instructions"])
        self._as_postgres([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l",
                           os.path.join(self.dir, "server.log"), "-w", "-t", "60", "-o",
                           "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off "
                           "-c password_encryption=scram-sha-256" % (self.port, self.dir), "start"])
        self.started = True
        return self

    def sql(self, sql, database="postgres"):
        return run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", self.dir, "-p",
                    self.port, "-U", "postgres", "-d", database], input=sql).stdout

    def create(self):
        name = "dbf_" + secrets.token_hex(5)
        password = "pw-" + secrets.token_urlsafe(18)
        self.sql("CREATE ROLE %s LOGIN CREATEDB PASSWORD '%s';\n" % (name, password))
        self.sql("CREATE DATABASE %s OWNER %s;\n" % (name, name))
        return LiveDatabase("postgresql", name, "127.0.0.1", self.port, name, password)

    def recreate(self, db):
        """Drop ``db`` (and every scratch database named after it) and create it empty again."""
        for name in self.sql("SELECT datname FROM pg_database WHERE datname LIKE '%s%%';" % db.name).split():
            self.sql('DROP DATABASE IF EXISTS "%s" WITH (FORCE);\n' % name)
        self.sql("CREATE DATABASE %s OWNER %s;\n" % (db.name, db.user))

    def stop(self):
        if self.started:
            self._as_postgres([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", "immediate",
                               "-w", "stop"], check=False)
            self.started = False


class MariaDB:
    """Users with a password on the local MariaDB (it checks them); dropped afterwards."""

    def __init__(self):
        self.made = []

    def create(self):
        db = create_mysql()
        self.made.append(db)
        return db

    def recreate(self, db):
        names = mysql_admin_sql("SELECT schema_name FROM information_schema.schemata "
                                "WHERE schema_name LIKE '%s%%';\n" % db.name).split()
        for name in names:
            mysql_admin_sql("DROP DATABASE IF EXISTS `%s`;\n" % name)
        mysql_admin_sql("CREATE DATABASE `%s` CHARACTER SET utf8mb4;\n" % db.name)

    def stop(self):
        for db in self.made:
            drop_mysql(db)
        self.made = []


# --- the argv sampler, timed ----------------------------------------------------------------------


class TimedSampler(harness.ArgvSampler):
    """tests/reliability/harness.ArgvSampler (every /proc/*/cmdline read in a loop; leaks,
    samples, seen and the pauses between passes as there), run at a real-time priority: on 2
    busy cores (ansible, sshd, the databases, the app servers) a normal thread waits 50-250 ms
    for a core now and then."""

    def __init__(self, secrets_):
        super().__init__(secrets_, interval=INTERVAL)
        self.realtime = False

    def _loop(self):
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))  # this thread only
            self.realtime = True
        except (OSError, AttributeError):
            pass
        super()._loop()


# --- the results ---------------------------------------------------------------------------------

RUNS = []
STARTED = time.time()


def write_results():
    """build/reliability/field.json: every playbook run with its secret-scan figures, and the
    figures added up per playbook (see docs/development.md, "The field harness")."""
    per_playbook = {}
    for entry in RUNS:
        total = per_playbook.setdefault(entry["playbook"], {
            "runs": 0, "samples": 0, "max_gap_ms": 0.0, "gaps_over_20ms": 0, "seconds": 0.0,
            "hits": {"cmdline": 0, "vvv_output": 0, "sudo_log": 0, "reports": 0}, "total_hits": 0})
        total["runs"] += 1
        total["samples"] += entry["samples"]
        total["seconds"] = round(total["seconds"] + entry["seconds"], 1)
        total["max_gap_ms"] = max(total["max_gap_ms"], entry["max_gap_ms"])
        total["gaps_over_20ms"] += entry["gaps_over_20ms"]
        for source, count in entry["hits"].items():
            total["hits"][source] += count
        total["total_hits"] += entry["total_hits"]
    data = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(STARTED)),
            "seconds": round(time.time() - STARTED),
            "command": "scripts/test field (pytest tests/field)",
            "commit": run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], check=False).stdout.strip(),
            "secrets": "the database passwords and the SECRET_KEY (DEMO_SECRET_KEY) given in "
                       "django_migrate_environment",
            "sources": {"cmdline": "/proc/*/cmdline of every process, sampled during the run",
                        "vvv_output": "ansible-playbook -vvv output",
                        "sudo_log": "the login user's sudo log (Defaults logfile)",
                        "reports": "the deploy reports written during the run"},
            "runs": RUNS, "playbooks": per_playbook}
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)


def mask(text, secrets_):
    for secret in secrets_:
        if secret:
            text = text.replace(secret, MASK)
    return text


class PlaybookRun:
    def __init__(self, rc, output, entry):
        self.rc = rc
        self.output = output
        self.entry = entry
        self.recorded = None

    def note(self, **figures):
        """Add ``figures`` to this run's entry in build/reliability/field.json (e.g. what a
        poller saw while it ran)."""
        if self.recorded is not None:
            self.recorded.update(figures)
            write_results()

    @property
    def hits(self):
        return self.entry["total_hits"]

    def tail(self, chars=6000):
        return mask(self.output[-chars:], self.entry["_secrets"])


def scan_and_record(name, argv, env, cwd, secrets_, users, reports_dir, test, engine, connection,
                    pipelining, timeout=900, when_printed=None):
    """Run ``argv`` (ansible-playbook) watched for ``secrets_``; returns a PlaybookRun.

    ``when_printed``: (text, action) - ``action()`` is called as soon as the output shows
    ``text`` (e.g. a play's banner), while the run goes on."""
    secrets_ = [s for s in secrets_ if s]
    offset = users.sudo_log_size() if users else 0
    before = set(glob.glob(os.path.join(reports_dir, "*"))) if reports_dir else set()
    begin = time.time()
    os.makedirs(LOGS, exist_ok=True)
    raw = os.path.join(LOGS, ".running-%d.log" % os.getpid())  # two harness runs may coexist
    # The output goes to a file, not a pipe: this process then only waits (no reading loop
    # competing with the sampler thread).
    with open(os.open(raw, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600), "w+") as sink:
        with TimedSampler(secrets_) as sampler:
            child = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=cwd)
            if when_printed:
                text, action = when_printed
                with open(raw) as follower:
                    seen = ""
                    while child.poll() is None and text not in seen:
                        seen = seen[-len(text):] + follower.read()
                        time.sleep(0.01)
                    if text in seen:
                        action()
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            proc = subprocess.CompletedProcess(argv, child.returncode)
        sink.seek(0)
        output = sink.read()
    os.remove(raw)
    seconds = time.time() - begin
    sudo_log = users.sudo_log_since(offset) if users else ""
    report_text = ""
    new_reports = []
    for path in sorted(set(glob.glob(os.path.join(reports_dir, "*"))) - before) if reports_dir else []:
        with open(path, errors="replace") as handle:
            text = handle.read()
        report_text += text
        if path.endswith(".json"):
            try:
                new_reports.append(json.loads(text))
            except ValueError:
                pass
    leaks = sorted(set(sampler.leaks))
    hits = {"cmdline": len(leaks),
            "vvv_output": sum(output.count(s) for s in secrets_),
            "sudo_log": sum(sudo_log.count(s) for s in secrets_),
            "reports": sum(report_text.count(s) for s in secrets_)}
    examples = []
    for source, text in (("cmdline", "\n".join(leaks)), ("vvv_output", output), ("sudo_log", sudo_log)):
        for line in text.splitlines():
            if any(s in line for s in secrets_):
                examples.append("%s: %s" % (source, mask(line.strip(), secrets_)[:300]))
                break
    log = os.path.join(LOGS, "%03d-%s-%s-%s.log" % (len(RUNS) + 1, engine, name, test.replace("/", "_")))
    with open(log, "w") as handle:
        handle.write("$ %s\nrc=%s\n\n%s\n\n--- sudo log ---\n%s" % (
            " ".join(argv), proc.returncode, mask(output, secrets_), mask(sudo_log, secrets_)))
    entry = {"test": test, "engine": engine, "playbook": name, "connection": connection,
             "pipelining": pipelining, "args": " ".join(a for a in argv[1:] if not a.startswith("@")),
             "rc": proc.returncode, "seconds": round(seconds, 1), "samples": sampler.samples,
             "processes_seen": len(sampler.seen), "max_gap_ms": round(sampler.max_gap * 1000, 1),
             "gaps_over_20ms": sampler.gaps_over_20ms,
             "hits": hits, "total_hits": sum(hits.values()), "examples": examples[:4],
             # what the run's reports say of the downtime (issue 13, item 7: the fleet's window)
             "report_downtime_seconds": [r.get("downtime_seconds") for r in new_reports],
             "log": os.path.relpath(log, ROOT)}
    RUNS.append(entry)
    write_results()
    recorded = entry
    entry = dict(entry, _secrets=secrets_)
    result = PlaybookRun(proc.returncode, output, entry)
    result.recorded = recorded  # the run's entry in RUNS (field.json): note() adds figures to it
    result.reports = new_reports  # the reports (JSON) this run wrote, oldest first
    return result


# --- the apps and the fleet ----------------------------------------------------------------------


class FieldApp(App):
    """tests/integration's App on a host reached over SSH + sudo: everything it has belongs to
    the app user, its project runs with the hosts' Python."""

    def __init__(self, name, fleet, db, version="release-2", server="runserver"):
        super().__init__(name, _PathLike(fleet.dir), db, fleet.repo, version=version, server=server)
        self.fleet = fleet
        self.reports = fleet.reports
        self.python = fleet.harness.python
        self.stop_script = fleet.harness.stop_script
        self.reload_script = fleet.harness.reload_script
        fleet.harness.users.own(self.home)

    def env(self):
        return dict(super().env(), DEMO_SECRET_KEY=self.fleet.secret_key)

    def start_command(self):
        return self.daemon_command(self.python)

    def stop_command(self):
        return ["/bin/sh", self.stop_script, self.pidfile]

    def hostvars(self, **extra):
        harness_ = self.fleet.harness
        host = super().hostvars()
        del host["ansible_connection"]
        host.update({
            "ansible_host": "127.0.0.1",
            "ansible_port": harness_.sshd.port,
            "ansible_user": harness_.users.login,
            "ansible_ssh_private_key_file": harness_.users.key,
            "ansible_ssh_common_args": "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes "
                                       "-o IdentitiesOnly=yes" % harness_.sshd.known_hosts,
            "ansible_become": True,
            "ansible_become_method": "sudo",
            "ansible_become_user": harness_.users.app,
            "ansible_python_interpreter": self.python,
            "ansible_pipelining": self.fleet.pipelining,
            "django_migrate_python": self.python,
        })
        host.update(extra)
        return host

    # -- the world before a playbook, made as the app user -------------------------------------

    def _app(self, argv, **kwargs):
        return self.fleet.harness.users.as_app(argv, **kwargs)

    def fresh(self, version, migrate=False, data=False, serve=True):
        """Stop the server, a new checkout of ``version``, media, optionally migrate and load the
        demo data, start the server. Backups stay."""
        self.stop()
        for path in (self.project, self.media, os.path.join(self.home, ".app.preflight")):
            shutil.rmtree(path, ignore_errors=True)
        self._app(["git", "clone", "--quiet", self.repo, self.project])
        self._app(["git", "-C", self.project] + GIT_IDENTITY + ["checkout", "--quiet", version])
        return self.provision(migrate, data, serve)

    def owned(self, path):
        self.fleet.harness.users.own(path)

    def manage(self, *args):
        env = demo.manage_env(self.project, self.db, dict(self.env(), DEMO_MEDIA_ROOT=self.media))
        return self._app([self.python, "manage.py"] + [str(a) for a in args], env=env, cwd=self.project)

    def start(self):
        self._app(self.start_command(), env=dict(os.environ, **self.env()))
        wait_for(self.url("/health/"))

    def stop(self):
        self._app(self.stop_command(), check=False)

    def answers(self, within=0, path="/health/", text="ok"):
        """The server answers ``path`` 200 with exactly ``text`` (now, or within ``within``
        seconds: a start command returns before the server listens)."""
        deadline = time.time() + within
        while True:
            try:
                if self.get(path) == (200, text):
                    return True
            except OSError:
                pass
            if time.time() >= deadline:
                return False
            time.sleep(0.25)

    def head_revision(self):
        return self._app(["git", "-C", self.project, "rev-parse", "HEAD"]).stdout.strip()

    def applied(self):
        proc = self.manage("showmigrations", "--list", "--no-color", "books")
        return ["books." + name for name, done in demo.parse_showmigrations(proc.stdout).get("books", [])
                if done]


class _PathLike(str):
    """A str that App's constructor can use like tmp_path (``tmp_path / name``)."""

    def __truediv__(self, other):
        return _PathLike(os.path.join(self, other))


class Fleet:
    """app1..app3 sharing one database, and dev with its own, on one engine."""

    HOSTS = ("app1", "app2", "app3")

    def __init__(self, harness_, engine, server):
        self.harness = harness_
        self.engine = engine
        self.server = server
        self.dir = os.path.join(harness_.base, "fleet-" + engine)
        os.makedirs(self.dir, mode=0o755)
        self.reports = os.path.join(self.dir, "reports")
        os.makedirs(self.reports, mode=0o700)
        self.secret_key = "dbsafe-field-sk-" + secrets.token_urlsafe(24)
        self.db = server.create()
        self.dev_db = server.create()
        repo_parent = os.path.join(self.dir, "src")
        os.makedirs(repo_parent)
        self.repo, self.shas = release_repo(_PathLike(repo_parent))
        # release-3 (branch failing): release-2 + a migration that fails; main stays release-2.
        git(self.repo, "checkout", "--quiet", "-b", "failing")
        self.failing = demo.add_failing_migration(self.repo, "runsql")
        self.shas["release-3"] = commit(self.repo, "release-3: a migration that fails", tag="release-3")
        git(self.repo, "checkout", "--quiet", "main")
        harness_.users.own(self.repo)
        self.apps = {name: FieldApp(name, self, self.db) for name in self.HOSTS}
        self.apps["dev"] = FieldApp("dev", self, self.dev_db, version="release-2")
        self.runs = []
        self.state = None  # the version the fleet is known to be on (see prepare), else None
        self.dev_state = None
        self.pipelining = engine == "postgresql"  # MariaDB's fleet: pipelining off, files by acl

    @property
    def secrets(self):
        return [self.db.password, self.dev_db.password, self.secret_key]

    def fleet(self):
        return [self.apps[name] for name in self.HOSTS]

    def prepare(self, version="release-1", dev_version=None):
        """The fleet on ``version``, its database migrated with the demo data, every server
        running; dev (when ``dev_version``) likewise on its own database. What a test left so
        (:meth:`settled`), with every server answering, is not made again."""
        if not (self.state == version and all(app.answers() for app in self.fleet())):
            for app in self.fleet():
                app.stop()
            self.server.recreate(self.db)
            for index, app in enumerate(self.fleet()):
                app.fresh(version, migrate=index == 0, data=index == 0)
            self.state = version
        if dev_version and not (self.dev_state == dev_version and self.apps["dev"].answers()):
            self.apps["dev"].stop()
            self.server.recreate(self.dev_db)
            self.apps["dev"].fresh(dev_version, migrate=True, data=True)
            self.dev_state = dev_version
        return self

    def settled(self, version=None, dev_version=None):
        """A test's playbook left the fleet (and dev) as prepare() would."""
        self.state = version
        self.dev_state = dev_version

    def inventory(self, groups, hostvars=None, name="inventory.yml", parents=None):
        """{group: [host, ...]} (and {parent group: [child group, ...]}) -> an inventory file
        (0600: it holds the passwords)."""
        hostvars = hostvars or {}
        data = {"all": {"children": {}}}
        for parent, children in (parents or {}).items():
            data["all"]["children"][parent] = {"children": dict((child, None) for child in children)}
        for group, hosts in groups.items():
            data["all"]["children"][group] = {"hosts": dict(
                (host, self.apps[host].hostvars(**hostvars.get(host, {}))) for host in hosts)}
        path = os.path.join(self.dir, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            json.dump(data, handle, indent=1)
        return path

    def playbook(self, name, inventory_path, test, limit=None, timeout=900, when_printed=None,
                 **extra_vars):
        self.state = self.dev_state = None
        vars_file = os.path.join(self.dir, "extra-%d.json" % time.time_ns())
        with open(os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            json.dump(extra_vars, handle)
        argv = [_bin("ansible-playbook"), "-vvv", "-i", inventory_path,
                os.path.join(ROOT, "playbooks", name + ".yml"), "-e", "@" + vars_file]
        if limit:
            argv += ["-l", limit]
        result = scan_and_record(name, argv, self.harness.ansible_env(), ROOT, self.secrets,
                                 self.harness.users, self.reports, test, self.engine, "ssh+sudo",
                                 self.pipelining, timeout=timeout, when_printed=when_printed)
        self.runs.append(result)
        return result

    def close(self):
        for app in self.apps.values():
            app.stop()


PROXY = """import os, socket, sys, threading, time
# ssh ProxyCommand of the field harness: after a second, refuse when the flag file exists (the
# host has become unreachable), else connect to the sshd and pass the bytes both ways.
flag, port = sys.argv[1], int(sys.argv[2])
time.sleep(1.0)
if os.path.exists(flag):
    sys.exit("dbsafe field proxy: this host is unreachable now")
sock = socket.create_connection(("127.0.0.1", port))
def upstream():
    while True:
        data = os.read(0, 65536)
        if not data:
            sock.shutdown(socket.SHUT_WR)
            return
        sock.sendall(data)
threading.Thread(target=upstream, daemon=True).start()
while True:
    data = sock.recv(65536)
    if not data:
        break
    os.write(1, data)
"""


def breakable_hostvars(harness_, flag):
    """Host vars that reach the sshd through a proxy that refuses once ``flag`` exists: the
    host goes unreachable in the middle of a run. No ssh master connection is shared (the
    aliases all are login@127.0.0.1:port, one ControlPath)."""
    proxy = os.path.join(harness_.base, "proxy.py")
    if not os.path.exists(proxy):
        with open(proxy, "w") as handle:
            handle.write(PROXY)
    return {"ansible_ssh_args": "-o ControlMaster=no",
            "ansible_ssh_common_args": "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes "
                                       "-o ProxyCommand='%s %s %s %d'" % (harness_.sshd.known_hosts, sys.executable,
                                                                          proxy, flag, harness_.sshd.port)}


class Harness:
    """Everything of one session: users, sshd, the hosts' Python, the engines' servers."""

    def __init__(self):
        self.base = None
        self.users = None
        self.sshd = None
        self.pg = None
        self.mariadb = None
        self.python = None
        self.stop_script = None
        self.reload_script = None

    def start(self):
        for path, what in ((SSHD, "openssh-server"), (SUDO, "sudo"), (SETFACL, "acl"),
                           (START_STOP_DAEMON, "start-stop-daemon")):
            if not os.path.exists(path):
                missing("%s is not installed (%s): the field harness needs it (.ci/run installs it)"
                        % (path, what))
        if os.geteuid() != 0:
            missing("the field harness makes OS users, a sudoers file and an sshd: it runs as root")
        self.base = tempfile.mkdtemp(prefix="dbsafe-field-")
        os.chmod(self.base, 0o755)
        self.python = app_venv()
        # The checkout may be where the app user cannot read (under /root): its commands' scripts are copied.
        self.stop_script = os.path.join(self.base, "stop_pidfile.sh")
        shutil.copy(STOP_PIDFILE, self.stop_script)
        os.chmod(self.stop_script, 0o755)
        self.reload_script = os.path.join(self.base, "reload_pidfile.sh")
        shutil.copy(RELOAD_PIDFILE, self.reload_script)
        os.chmod(self.reload_script, 0o755)
        self.users = Users(self.base).create()
        self.sshd = Sshd(self.base, self.users).start()
        self.cp_dir = os.path.join(self.base, "cp")
        os.makedirs(self.cp_dir, mode=0o700)
        return self

    def ansible_env(self):
        return ansible_env({"ANSIBLE_SSH_CONTROL_PATH_DIR": self.cp_dir,
                            "ANSIBLE_LOCAL_TEMP": os.path.join(self.base, "ansible-local"),
                            "ANSIBLE_HOST_KEY_CHECKING": "True",
                            "ANSIBLE_TIMEOUT": "10",
                            "ANSIBLE_FORCE_COLOR": "0"})

    def postgres(self):
        if self.pg is None:
            self.pg = PgCluster(self.base).start()
        return self.pg

    def mysql(self):
        if self.mariadb is None:
            try:
                mysql_admin_sql("SELECT 1;")
            except Exception as error:  # noqa: B902 - the server's absence is the message
                missing("MariaDB unavailable: %s" % error)
            self.mariadb = MariaDB()
        return self.mariadb

    def close(self):
        errors = []
        # ssh master connections of ansible (ControlPersist) live in our control path dir.
        if self.base:
            kill_pids(processes_matching(self.cp_dir.encode()) if getattr(self, "cp_dir", None) else [])
        for step in (lambda: self.users and self.users.remove(),
                     lambda: self.sshd and self.sshd.stop(),
                     lambda: self.pg and self.pg.stop(),
                     lambda: self.mariadb and self.mariadb.stop()):
            try:
                step()
            except Exception as error:  # noqa: B902 - clean up all, then report
                errors.append(error)
        if self.base and not os.environ.get("DBSAFE_FIELD_KEEP"):
            shutil.rmtree(self.base, ignore_errors=True)
        if errors:
            raise errors[0]
