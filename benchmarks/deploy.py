#!/usr/bin/env python3
"""Deploy benchmarks P1, P2 and P4 (issue 8): launches, guarded overhead, downtime.

Not a test: a script a person runs. Everything is made in a temporary directory (removed at
the end) from the demo project (examples/demo) with the release repository the playbook tests
use: release-1 = the demo, release-2 = release-1 + books.0006_book_subtitle (one pending
migration). SQLite databases; the app server is ``manage.py runserver`` run by
start-stop-daemon, exactly as in inventories/demo and tests/integration/test_playbooks.py.

* P2 guarded overhead: ``GuardedMigrate.run()`` (the code ``django_migrate_guarded`` runs:
  facts, preflight, lock, snapshot, verified backup, migrate, verification; in-process, so
  Ansible's own per-task cost is not part of it) against the same work done bare: the raw
  dump (``sqlite3 .backup`` + the same compressor) and ``manage.py migrate``; on the demo
  data and on a generated large data set (``--large-rows`` extra books). Paired, rotating
  order, each run on a fresh copy of the same database file.
* P1 launches and P4 downtime: a real ``ansible-playbook playbooks/deploy.yml`` run against a
  fresh app host at release-1 (with data, server running) against a shell script doing the
  manual runbook in its order (stop, pull, showmigrations, backup, migrate, showmigrations,
  makemigrations --dry-run, start) on an identical host. Both use as the project's python a
  wrapper script that logs each start (P1). Downtime = start command done - stop begun; for
  the deploy it comes from the deploy report.

    .venv/bin/python benchmarks/deploy.py --repeat 5 --json /tmp/deploy.json
    .venv/bin/python benchmarks/deploy.py --only p2 --large-rows 1000000
"""

import argparse
import glob
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time

from paired import REPO, log, machine, run_command, run_pairs, summary, table, verdict, write_json

import demo  # tests/integration/demo.py
from databases import create_sqlite
from test_playbooks import START_STOP_DAEMON, App, inventory, playbook, release_repo, wait_for

from ansible_collections.dbsafe.django.plugins.module_utils.guard import GuardedMigrate, GuardOptions
from ansible_collections.dbsafe.django.plugins.module_utils.project import DjangoProject
from ansible_collections.dbsafe.django.plugins.module_utils.runner import Runner

PYTHON = demo.default_python()
PROJECT_APPS = 50  # P2's generated project, as P5's
COMPRESSORS = {"zstd": ["zstd", "-q", "--rm"], "gzip": ["gzip"], "none": None}

# A python that logs each start (epoch seconds, then the first arguments), then becomes the
# real interpreter (exec: same pid, stdin and exit status).
WRAPPER = """#!/bin/bash
printf '%%s %%s %%s\\n' "$EPOCHREALTIME" "$1" "${2:0:40}" >> %(log)s
exec %(python)s "$@"
"""


def write_wrapper(directory):
    log_path = os.path.join(directory, "launches.log")
    path = os.path.join(directory, "python")
    with open(path, "w") as handle:
        handle.write(WRAPPER % {"log": log_path, "python": PYTHON})
    os.chmod(path, 0o755)
    return path, log_path


def launches(log_path):
    """The logged starts: [{"at": epoch, "what": "introspect" | "manage.py <command>"}]."""
    if not os.path.exists(log_path):
        return []
    found = []
    with open(log_path) as handle:
        for line in handle:
            at, first, second = (line.rstrip("\n").split(" ", 2) + ["", ""])[:3]
            what = "introspect (dbsafe)" if first == "-c" else "%s %s" % (first, second)
            found.append({"at": float(at), "what": what.strip()})
    return found


# --- P2: the guarded migrate against the bare dump + migrate ---------------------------------


def add_books(path, rows):
    """``rows`` more books (about 120 bytes each) straight into the SQLite file."""
    conn = sqlite3.connect(path)
    try:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO books_book (title, isbn, cover, pages, slug, author_id) "
            "SELECT 'Generated book number ' || i || ' of the benchmark, a longer title', "
            "substr('978' || (1000000000 + i), 1, 13), '', i % 900, 'generated-book-' || i, "
            "NULL FROM n", (rows,))
        conn.commit()
    finally:
        conn.close()


class GuardedOverhead:
    """One data set: a template database at release-1 and the release-2 project."""

    def __init__(self, work, repo, name, extra_rows):
        self.work = os.path.join(work, name)
        os.makedirs(self.work)
        self.project = repo  # the repository's working tree is release-2 (main)
        template_app = App("template", _Dir(self.work), create_sqlite(self.work), repo,
                           version="release-1")
        template_app.running("release-1", serve=False)
        self.template = template_app.db.name
        if extra_rows:
            add_books(self.template, extra_rows)
        self.db = create_sqlite(os.path.join(self.work, "run"))
        os.makedirs(os.path.dirname(self.db.name))
        self.backups = os.path.join(self.work, "backups")
        self.env = dict(self.db.demo_env(), DEMO_MEDIA_ROOT=template_app.media,
                        PYTHONDONTWRITEBYTECODE="1")
        self.size = os.path.getsize(self.template)
        self.compression = None
        self.expected = ["books.0006_book_subtitle"]

    def fresh(self, _name):
        for path in glob.glob(self.db.name + "*"):
            os.unlink(path)
        shutil.copyfile(self.template, self.db.name)
        shutil.rmtree(self.backups, ignore_errors=True)

    def guarded(self, _context):
        runner = Runner(run_command)
        project = DjangoProject(runner, self.project, python=PYTHON, environment=self.env)
        guard = GuardedMigrate(project, runner, GuardOptions(backup_dir=self.backups))
        started = time.perf_counter()
        result = guard.run()
        seconds = time.perf_counter() - started
        assert result["changed"] and sorted(s["migration"] for s in result["applied"]) == \
            self.expected, result
        self.compression = result["backup"]["compression"]
        return {"seconds": seconds, "timings": dict(guard.timings), "launches": result["launches"]}

    def bare(self, _context):
        os.makedirs(self.backups, mode=0o700)
        dump = os.path.join(self.backups, "raw.sqlite3")
        timings = {}
        started = time.perf_counter()
        subprocess.run(["sqlite3", self.db.name, ".backup '%s'" % dump], check=True)
        compressor = COMPRESSORS[self.compression or "zstd"]
        if compressor:
            subprocess.run(compressor + [dump], check=True)
        timings["dump"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        subprocess.run([PYTHON, "manage.py", "migrate", "--no-input"], cwd=self.project,
                       env=dict(os.environ, **self.env), check=True, capture_output=True)
        timings["migrate"] = round(time.perf_counter() - started, 3)
        return {"timings": timings}


class GeneratedProjectOverhead(GuardedOverhead):
    """P5's generated project (``apps`` apps, ``total`` migrations, one model per app), its
    template database migrated for real up to each app's second-to-last migration: the
    guarded and the bare side both apply the ``apps`` last ones."""

    MIGRATE_TO = """import os, sys
sys.path.insert(0, os.getcwd())
import django
django.setup()
from django.core.management import call_command
for app, name in %r:
    call_command("migrate", app, name, verbosity=0)
"""

    def __init__(self, work, name, apps, total):  # pylint: disable=super-init-not-called
        from facts import generate  # benchmarks/facts.py, P5's generator

        self.work = os.path.join(work, name)
        os.makedirs(self.work)
        self.project, rows = generate(self.work, apps, total)
        by_app = {}
        for app, migration in rows:
            by_app.setdefault(app, []).append(migration)
        self.template = os.path.join(self.work, "template.sqlite3")
        self.db = create_sqlite(os.path.join(self.work, "run"))
        os.makedirs(os.path.dirname(self.db.name))
        self.env = {"BENCH_DB": self.template, "PYTHONDONTWRITEBYTECODE": "1",
                    "DJANGO_SETTINGS_MODULE": "benchsite.settings"}
        targets = sorted((app, names[-2]) for app, names in by_app.items())
        subprocess.run([PYTHON, "-c", self.MIGRATE_TO % (targets,)], cwd=self.project,
                       env=dict(os.environ, **self.env), check=True)
        self.env["BENCH_DB"] = self.db.name
        self.backups = os.path.join(self.work, "backups")
        self.size = os.path.getsize(self.template)
        self.compression = None
        self.expected = sorted("%s.%s" % (app, names[-1]) for app, names in by_app.items())


class _Dir(str):
    """A str path that App can use like pytest's tmp_path (``tmp / name``)."""

    def __truediv__(self, other):
        return _Dir(os.path.join(self, other))


def measure_p2(work, repo, args):
    results = {}
    for name, rows in (("demo", 0), ("large", args.large_rows), ("project", args.project_migrations)):
        if name != "demo" and not rows:
            continue
        if name == "project":
            log("P2 project: generating %d apps, %d migrations, migrating the template"
                % (PROJECT_APPS, rows))
            data = GeneratedProjectOverhead(work, name, PROJECT_APPS, rows)
        else:
            log("P2 %s: preparing the template database (%d extra books)" % (name, rows))
            data = GuardedOverhead(work, repo, name, rows)
        data.fresh(None)
        data.guarded(None)  # warm-up: page cache, bytecode, and which compression ours uses
        pairs = run_pairs({"guarded": data.guarded, "bare": data.bare}, args.repeat,
                          setup=data.fresh, label="P2 %s" % name)
        results[name] = dict(summary(pairs, "guarded", "bare"), pairs=pairs,
                             database_bytes=data.size, extra_rows=rows if name == "large" else 0,
                             migrations=rows if name == "project" else None,
                             pending=len(data.expected), compression=data.compression)
    return results


# --- P1 + P4: deploy.yml against the manual runbook -------------------------------------------


MANUAL_RUNBOOK = """#!/bin/bash
# The manual runbook, in its order. Times in epoch seconds go to $TIMES.
set -euo pipefail
cd "$PROJECT"
echo "stop $EPOCHREALTIME" >> "$TIMES"
"${STOP[@]}"
git fetch --quiet origin && git checkout --quiet origin/main
"$PY" manage.py showmigrations > /dev/null
mkdir -p -m 0700 "$BACKUPS"
sqlite3 "$DEMO_DB_NAME" ".backup '$BACKUPS/manual.sqlite3'"
zstd -q --rm "$BACKUPS/manual.sqlite3"
"$PY" manage.py migrate --no-input > /dev/null
"$PY" manage.py showmigrations > /dev/null
"$PY" manage.py makemigrations --dry-run --check > /dev/null
"${START[@]}"
echo "start $EPOCHREALTIME" >> "$TIMES"
"""


class DeployRuns:
    def __init__(self, work, repo):
        self.work = work
        self.repo = repo
        self.count = 0

    def fresh_host(self, side):
        """A new app host at release-1 with the demo data, its server answering."""
        self.count += 1
        home = os.path.join(self.work, "%s-%d" % (side, self.count))
        os.makedirs(home)
        app = App("app", _Dir(home), create_sqlite(home), self.repo, version="main")
        app.running("release-1")
        wrapper, log_path = write_wrapper(app.home)
        return {"app": app, "home": home, "wrapper": wrapper, "log": log_path}

    def deploy(self, context):
        app = context["app"]
        hostvars = app.hostvars(django_migrate_python=context["wrapper"])
        inv = inventory(_Dir(context["home"]), {"django": {"app1": hostvars}})
        try:
            started = time.perf_counter()
            rc, output = playbook("deploy", inv, _Dir(context["home"]))
            wall = time.perf_counter() - started
        finally:
            app.stop()
        if rc != 0:
            raise RuntimeError("deploy.yml failed:\n%s" % output[-4000:])
        report = sorted(glob.glob(os.path.join(app.reports, "deploy-*.json")))[-1]
        with open(report) as handle:
            data = json.load(handle)
        host = data["hosts"][0]
        started_at = launches(context["log"])
        migration = data.get("migration") or {}
        return {"seconds": host["downtime_seconds"], "wall": round(wall, 3),
                "launches": len(started_at), "launched": [x["what"] for x in started_at],
                "module_seconds": migration.get("duration_seconds"),
                "timings": migration.get("timings")}

    def manual(self, context):
        app = context["app"]
        script = os.path.join(context["home"], "runbook.sh")
        with open(script, "w") as handle:
            handle.write(MANUAL_RUNBOOK)
        times = os.path.join(context["home"], "times")
        env = dict(os.environ, **app.env())
        env.update(PROJECT=app.project, TIMES=times, PY=context["wrapper"],
                   BACKUPS=app.backups, DEMO_MEDIA_ROOT=app.media)
        argv = ["bash", "-c", 'STOP=("${@:1:%d}"); START=("${@:%d}"); source "%s"'
                % (len(app.stop_command()), len(app.stop_command()) + 1, script), "runbook"]
        try:
            subprocess.run(argv + app.stop_command() + app.start_command(), env=env, check=True)
            wait_for(app.url("/health/"))
        finally:
            app.stop()
        with open(times) as handle:
            stamps = dict(line.split() for line in handle)
        started_at = launches(context["log"])
        return {"seconds": float(stamps["start"]) - float(stamps["stop"]),
                "launches": len(started_at), "launched": [x["what"] for x in started_at]}


def measure_deploy(work, repo, args):
    runs = DeployRuns(work, repo)
    pairs = run_pairs({"deploy": runs.deploy, "manual": runs.manual}, args.repeat,
                      setup=runs.fresh_host, label="P1/P4")
    return {"p4": dict(summary(pairs, "deploy", "manual"), pairs=pairs),
            "p1": summary(pairs, "deploy", "manual", metric="launches")}


# --- report -----------------------------------------------------------------------------------


def markdown(results):
    out = []
    if "p1" in results:
        p1 = results["p1"]
        launched = results["p4"]["pairs"][0]
        out.append("P1 launches of the project's python per deploy (target <= 2)\n")
        out.append(table(
            ["side", "median launches", "what was started (first pair)"],
            [["deploy.yml", p1["median_ours"], ", ".join(launched["deploy"]["launched"])],
             ["manual runbook", p1["median_baseline"], ", ".join(launched["manual"]["launched"])]]))
        out.append("\nP1: %s launches: %s\n" % (p1["median_ours"], verdict(p1["median_ours"], 2)))
    if "p4" in results:
        p4 = results["p4"]
        out.append("P4 downtime, stop to start (target <= 0.5)\n")
        out.append(table(["pair", "deploy.yml s", "of which the guarded migrate s",
                          "manual runbook s", "ratio"],
                         [[i + 1, p["deploy"]["seconds"], p["deploy"].get("module_seconds"),
                           round(p["manual"]["seconds"], 2), r]
                          for i, (p, r) in enumerate(zip(p4["pairs"], p4["ratios"]))]
                         + [["median", p4["median_ours"], "", round(p4["median_baseline"], 2),
                             "**%s**" % p4["median_ratio"]]]))
        out.append("\nP4: %s\n" % verdict(p4["median_ratio"], 0.5))
    for name, p2 in sorted(results.get("p2", {}).items()):
        if p2.get("migrations"):
            out.append("P2 guarded / bare, generated project (%d migrations, %d pending; "
                       "%.1f MiB SQLite; target <= 1.15)\n"
                       % (p2["migrations"], p2["pending"], p2["database_bytes"] / 1048576.0))
        else:
            out.append("P2 guarded / bare, %s data (%.1f MiB SQLite, +%d rows; target <= 1.15)\n"
                       % (name, p2["database_bytes"] / 1048576.0, p2["extra_rows"]))
        rows = []
        for i, (p, r) in enumerate(zip(p2["pairs"], p2["ratios"])):
            phases = ", ".join("%s %.2f" % kv for kv in sorted(p["guarded"]["timings"].items()))
            rows.append([i + 1, p["guarded"]["seconds"], p["bare"]["seconds"], r, phases])
        rows.append(["median", round(p2["median_ours"], 3), round(p2["median_baseline"], 3),
                     "**%s**" % p2["median_ratio"], ""])
        out.append(table(["pair", "guarded s", "bare s", "ratio", "guarded phases (s)"], rows))
        out.append("\nP2 %s: %s\n" % (name, verdict(p2["median_ratio"], 1.15)))
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="pairs per measurement")
    parser.add_argument("--only", choices=["p2", "deploy"], help="only P2, or only P1+P4")
    parser.add_argument("--large-rows", type=int, default=1000000,
                        help="extra books in P2's large data set (0: skip it)")
    parser.add_argument("--project-migrations", type=int, default=1000,
                        help="migrations of P2's generated project (%d apps; 0: skip it)"
                        % PROJECT_APPS)
    parser.add_argument("--json", help="write all raw results here")
    parser.add_argument("--workdir", help="parent of the temporary directory")
    args = parser.parse_args()
    if not os.path.exists(START_STOP_DAEMON):
        raise SystemExit("needs %s (the demo's app server)" % START_STOP_DAEMON)
    results = {"machine": machine(), "repeat": args.repeat}
    work = tempfile.mkdtemp(prefix="dbsafe-bench-deploy-", dir=args.workdir)
    try:
        repo, _shas = release_repo(_Dir(work))
        if args.only in (None, "p2"):
            results["p2"] = measure_p2(work, repo, args)
        if args.only in (None, "deploy"):
            results.update(measure_deploy(work, repo, args))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_json(args.json, results)
    print(markdown(results))


if __name__ == "__main__":
    main()
