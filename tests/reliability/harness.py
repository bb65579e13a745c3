"""Helpers of the reliability suite: module runs watched for secrets (R4), the before/after
proofs (the engines' own snapshots and file trees), process trees to kill, tool wrappers.
"""
import hashlib
import json
import os
import signal
import stat
import threading
import time

import demo
from ansible_run import run_module
from runner_double import engine_of

ENGINES = ("sqlite", "postgresql", "mysql")


def prepared(db, tmp_path):
    """A demo copy fully migrated with the demo data (authors, books, a few rows each)."""
    project = demo.copy_demo(tmp_path)
    demo.manage(project, db, "migrate", "--no-input", "--verbosity", "0")
    demo.manage(project, db, "loaddata", "demo", "--verbosity", "0")
    return project


def guarded(db, project, tmp_path, test, env=None, **extra):
    """django_migrate_guarded on ``project``, watched (R4); backups in tmp_path/backups."""
    extra.setdefault("backup_dir", str(tmp_path / "backups"))
    extra.setdefault("lock_timeout", 30)
    return watched_run(db, "django_migrate_guarded",
                       demo.module_args(project, db, **extra), test, env=env)


# Every module run on a database with a password: (engine, kind, test, problems).
_SECRET_RUNS = []
SAMPLER_STATS = {"samples": 0, "processes_seen": 0}
CLIENT_NAMES = ("psql", "pg_dump", "pg_restore", "mariadb", "mariadb-dump", "mysql", "mysqldump",
                "zstd", "gzip", "manage.py")


class ArgvSampler:
    """Reads every process's argv (/proc/*/cmdline) in a loop while a run goes on and keeps
    each argv that contains one of ``secrets``."""

    def __init__(self, secrets, interval=0.005):
        self.secrets = [s.encode() for s in secrets if s]
        self.interval = interval
        self.leaks = []
        self.samples = 0
        self.seen = set()
        self._ours = {}  # pid -> below this process? (asked once per client process)
        self.max_gap = 0.0  # the longest pause between the starts of two passes
        self.gaps_over_20ms = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        if self.secrets:
            self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        SAMPLER_STATS["samples"] += self.samples
        SAMPLER_STATS["processes_seen"] += len(self.seen)
        return False

    def clients(self):
        """The database and compression tools seen running below this process: proof the
        sampler saw the run (not the clients of a test running beside it)."""
        names = set()
        for pid, argv in self.seen:
            name = _client_name(argv)
            if name and self._ours.get(pid):
                names.add(name)
        return sorted(names)

    def _loop(self):
        me = str(os.getpid())
        previous = None
        while not self._stop.is_set():
            began = time.monotonic()
            if previous is not None:
                gap = began - previous  # from the start of one pass to the start of the next
                self.max_gap = max(self.max_gap, gap)
                if gap > 0.020:
                    self.gaps_over_20ms += 1
            previous = began
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or pid == me:
                    continue
                try:
                    with open("/proc/%s/cmdline" % pid, "rb") as handle:
                        argv = handle.read()
                except OSError:
                    continue
                self.seen.add((pid, argv[:80]))
                if pid not in self._ours and _client_name(argv):
                    self._ours[pid] = is_below(int(pid), int(me))
                if any(secret in argv for secret in self.secrets):
                    self.leaks.append(argv.replace(b"\0", b" ").decode("utf-8", "replace"))
            self.samples += 1
            # A pass starts every ``interval`` seconds, at once after a pass that took longer.
            time.sleep(max(0.0, self.interval - (time.monotonic() - began)))


def _client_name(argv):
    """The name in CLIENT_NAMES that an argv runs (its program or script), else None."""
    for part in argv.split(b"\0")[:2]:
        name = os.path.basename(part).decode("utf-8", "replace")
        if name in CLIENT_NAMES:
            return name
    return None


def kind_of(module, args):
    if module == "db_backup":
        return "backup %s" % args.get("state", "dump")
    return {"django_migrate_guarded": "guarded migrate", "django_schema_drift": "drift check",
            "django_showmigrations": "showmigrations"}.get(module, module)


def watched_run(db, module, args, test, **kwargs):
    """run_module with the argv sampler on, then the R4 checks of what came back: the password
    in no argv, no result, no output; backups 0600 in 0700 directories."""
    password = getattr(db, "password", "")
    with ArgvSampler([password]) as sampler:
        result = run_module(module, args, **kwargs)
    if password:
        problems = ["password in the argv of: %s" % leak[:200] for leak in sampler.leaks[:3]]
        if password in json.dumps(result, default=str):
            problems.append("password in the task result or output")
        backup = result.get("backup") if isinstance(result.get("backup"), dict) else None
        if backup and backup.get("path") and os.path.exists(backup["path"]):
            problems += private_mode_problems(backup["path"])
        _SECRET_RUNS.append({"engine": db.engine, "kind": kind_of(module, args), "test": test,
                             "problems": problems, "samples": sampler.samples,
                             "clients": sampler.clients()})
    return result


def private_mode_problems(path):
    problems = []
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode != 0o600:
        problems.append("%s is %o, not 600" % (path, mode))
    directory = os.path.dirname(path)
    mode = stat.S_IMODE(os.stat(directory).st_mode)
    if mode != 0o700:
        problems.append("%s is %o, not 700" % (directory, mode))
    return problems


def secret_cases():
    """One R4 case per watched run."""
    rows = []
    for run in _SECRET_RUNS:
        rows.append({
            "requirement": "R4", "engine": run["engine"], "status": "failed" if run["problems"] else "held",
            "case": "%s (%s)" % (run["kind"], run["test"]),
            "message": "; ".join(run["problems"]) or
            "argv of all processes sampled %d times (clients seen: %s): no password; result "
            "and output clean; backups 0600 in 0700" % (run["samples"],
                                                        ", ".join(run["clients"]) or "none"),
            "test": run["test"], "seconds": None})
    return rows


# -- proofs ------------------------------------------------------------------------------------

def snapshot(db):
    return engine_of(db).snapshot(content=True)


def tree(*directories):
    """{path: sha256 or 'dir'} of everything under ``directories`` (bytecode left out)."""
    files = {}
    for directory in directories:
        directory = str(directory)
        if not os.path.exists(directory):
            files[directory] = "absent"
            continue
        for root, dirs, names in os.walk(directory):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in dirs:
                files[os.path.join(root, name)] = "dir %o" % stat.S_IMODE(
                    os.stat(os.path.join(root, name)).st_mode)
            for name in names:
                path = os.path.join(root, name)
                with open(path, "rb") as handle:
                    files[path] = hashlib.sha256(handle.read()).hexdigest()
    return files


# -- processes ---------------------------------------------------------------------------------

def parent_of(pid):
    """The parent pid of ``pid`` (OSError once it is gone)."""
    with open("/proc/%d/stat" % pid) as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def state_of_process(pid):
    """The state letter of ``pid`` (R, S, D, T, Z, ...), None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def is_below(pid, root):
    """Whether ``pid`` runs below ``root`` (its child, grandchild, ...). Under pytest-xdist a
    test only ever touches processes below its own worker, never another test's."""
    try:
        while pid > 1:
            pid = parent_of(pid)
            if pid == root:
                return True
    except (OSError, ValueError, IndexError):
        pass
    return False


def descendants(pid):
    """The pids of all processes below ``pid``."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_everything_below(pid):
    """SIGKILL every process below ``pid`` at once: a run dying as if its host crashed."""
    killed = descendants(pid)
    for child in killed:
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            pass
    return killed


def wait_for_file(path, seconds=180):
    deadline = time.time() + seconds
    while not os.path.exists(path):
        if time.time() > deadline:
            raise AssertionError("%s never appeared" % path)
        time.sleep(0.05)


# -- tool wrappers (fault 4) -------------------------------------------------------------------

def wrap_tool(directory, name, real, mode):
    """Put ``name`` into ``directory`` (to go first on PATH): it runs ``real`` and then
    ``mode`` = 'exit' exits 3 after the complete output; 'killed' passes the first 2 KiB and
    then is killed (SIGKILL), the stream cut short; 'lies' passes all but the last 256 bytes
    of what it writes and exits 0, as if it had finished."""
    os.makedirs(str(directory), exist_ok=True)
    path = os.path.join(str(directory), name)
    if mode == "exit":
        body = '"%s" "$@"\necho "dbsafe fault: %s failed" >&2\nexit 3\n' % (real, name)
    elif mode == "killed":
        body = ('"%s" "$@" | head -c 2048\necho "dbsafe fault: %s cut short" >&2\n'
                'kill -KILL $$\n' % (real, name))
    elif mode == "lies":
        # Only the writing call lies; a compressor's test/decompress calls (-t, -d) are the
        # real tool, as the checker would be on a real machine.
        body = ('case " $* " in *" -t "*|*" -d "*) exec "%s" "$@" ;; esac\n'
                '"%s" "$@" | head -c -256\nexit 0\n' % (real, real))
    else:
        raise ValueError(mode)
    with open(path, "w") as handle:
        handle.write("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return path
