#!/usr/bin/env python3
"""P6 (issue 18): the downtime of a backward-compatible release, online against the stop window.

Not a test: a script a person runs. Per engine (the local PostgreSQL and MariaDB servers) and per
run, a fresh fleet: THREE app hosts (local connection) on ONE database, each a checkout of the
release repository of tests/integration/test_online.py (release-1; release-2 adds a nullable
column and a new table: safe for the running code) served by gunicorn (2 workers, not
preload_app; ``django_migrate_reload_command`` = HUP to its master), release-1 running with the
demo data. A poller (tests/integration/poller.py: a child process, one thread per host, every
100 ms a GET of /health/ on a new connection, 10 s timeout) runs through the whole
``ansible-playbook playbooks/deploy.yml`` to release-2. The sides:

* ``online``: ``django_migrate_deploy_mode: auto`` - the report must say ``mode: online`` (the
  guarded migrate with ``online: true`` while the application serves, then the code rolled out
  one host at a time with a graceful reload, health-checked per host);
* ``stop``: ``django_migrate_deploy_mode: stop`` - the stop window, every host stopped around
  the migration (the figure of P4 fleet, here on local connections).

Per run: the mode from the report, requests sent and failed per host and in all (with why they
failed), each host's longest unavailability the poller saw (its down intervals), the time two or
more hosts were down together (overlaps), the report's fleet ``downtime_seconds`` (first stop to
last start; None when no host was stopped), the per-host windows of the report, the request
latencies (max, p99, the slowest requests: gunicorn's HUP leaves requests waiting in the listen
queue until the new workers have imported Django), the playbook's wall time and the load
average before and after. Pairs run in rotating order (paired.py).

    .venv/bin/python benchmarks/zero_downtime.py --repeat 3          # JSON to benchmarks/results/
    .venv/bin/python benchmarks/zero_downtime.py --engines mysql --repeat 1 --json /tmp/p6.json
    .venv/bin/python benchmarks/zero_downtime.py --render benchmarks/results/p6-zero-downtime-<date>.json

Everything it creates is removed at the end, also when a run fails or the script is interrupted
(Ctrl-C, SIGTERM, SIGHUP): the app servers stopped, the databases dropped, the work directory
removed; a playbook still running is ended with its whole process group.
"""

import argparse
import collections
import json
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from paired import REPO, log, machine, rendered, rotated, run_pairs, stop_on_signals, table, write_json

from ansible_run import ROOT, _bin, ansible_env  # noqa: E402 - tests/integration/
from databases import create_mysql, create_postgres, drop_mysql, drop_postgres  # noqa: E402
from poller import Poller  # noqa: E402
from test_online import online_release_repo  # noqa: E402
from test_playbooks import App, inventory, reports  # noqa: E402

ENGINES = {"postgresql": (create_postgres, drop_postgres), "mysql": (create_mysql, drop_mysql)}
HOSTS = ("app1", "app2", "app3")
SIDES = {"online": "auto", "stop": "stop"}  # side -> django_migrate_deploy_mode
SETTLE = 1.0  # seconds polled before the playbook starts and after it ended
SLOW_MS = 500.0  # a request slower than this is listed (when, which host, how long)

# What is alive right now, for the cleanup of an interrupted or failed run.
LIVE = {"apps": [], "databases": [], "dirs": [], "playbook": None}


# --- setup and cleanup ------------------------------------------------------------------------


def fleet(engine, work):
    """A fresh fleet: database, release repository, three gunicorn hosts on release-1 (app1
    migrated with the demo data), the inventory. Not timed."""
    create, drop = ENGINES[engine]
    tmp = pathlib.Path(tempfile.mkdtemp(dir=work, prefix="%s-" % engine))
    LIVE["dirs"].append(str(tmp))
    db = create()
    LIVE["databases"].append((db, drop))
    repo, shas = online_release_repo(tmp)
    apps = [App(name, tmp, db, repo, server="gunicorn") for name in HOSTS]
    LIVE["apps"].extend(apps)
    apps[0].running("release-1")
    for app in apps[1:]:
        app.running("release-1", migrate=False, data=False)
    path = inventory(tmp, {"django": dict((app.name, app.hostvars()) for app in apps)})
    log("fleet: %s database %s, hosts %s in %s" % (engine, db.name, ", ".join(
        "%s:%d" % (app.name, app.port) for app in apps), tmp))
    return {"engine": engine, "db": db, "drop": drop, "tmp": tmp, "apps": apps, "shas": shas,
            "inventory": path}


def teardown(context):
    """Stop the servers, drop the database, remove the run's directory (each step on its own)."""
    for app in context["apps"]:
        try:
            app.stop()
        finally:
            if app in LIVE["apps"]:
                LIVE["apps"].remove(app)
    try:
        context["drop"](context["db"])
    finally:
        LIVE["databases"] = [entry for entry in LIVE["databases"] if entry[0] is not context["db"]]
        shutil.rmtree(str(context["tmp"]), ignore_errors=True)
        if str(context["tmp"]) in LIVE["dirs"]:
            LIVE["dirs"].remove(str(context["tmp"]))


def cleanup_everything():
    """What is still alive after a failure or an interruption."""
    if LIVE["apps"] or LIVE["databases"]:
        log("cleaning up: servers %s, databases %s" % (
            ", ".join(app.name for app in LIVE["apps"]) or "none",
            ", ".join(db.name for db, _drop in LIVE["databases"]) or "none"))
    proc = LIVE["playbook"]
    if proc is not None and proc.poll() is None:
        end_group(proc)
    for app in list(LIVE["apps"]):
        try:
            app.stop()
        except Exception as error:  # noqa: B902 - go on with the rest
            log("could not stop %s: %s" % (app.name, error))
    LIVE["apps"] = []
    for db, drop in list(LIVE["databases"]):
        try:
            drop(db)
        except Exception as error:  # noqa: B902
            log("could not drop %s: %s" % (db.name, error))
    LIVE["databases"] = []
    for path in list(LIVE["dirs"]):
        shutil.rmtree(path, ignore_errors=True)
    LIVE["dirs"] = []


def end_group(proc):
    """SIGTERM to the playbook's process group (ansible-playbook and its workers), SIGKILL after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


# --- one run ----------------------------------------------------------------------------------


def run_playbook(context, mode):
    """ansible-playbook playbooks/deploy.yml with django_migrate_deploy_mode ``mode`` (in an
    extra-vars file, as test_playbooks.playbook does; its own process group, so that an
    interrupted benchmark can end it with its workers). Returns (rc, output)."""
    vars_file = str(context["tmp"] / ("extra-%d.json" % time.time_ns()))
    with open(vars_file, "w") as handle:
        json.dump({"django_migrate_deploy_mode": mode}, handle)
    argv = [_bin("ansible-playbook"), "-i", context["inventory"], os.path.join(ROOT, "playbooks", "deploy.yml"),
            "-e", "@" + vars_file]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=ansible_env(), cwd=ROOT, start_new_session=True)
    LIVE["playbook"] = proc
    try:
        output, _unused = proc.communicate(timeout=900)
    except BaseException:
        end_group(proc)
        raise
    finally:
        LIVE["playbook"] = None
    return proc.returncode, output


def percentile(values, fraction):
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def loadavg():
    return [round(v, 2) for v in os.getloadavg()]


def measured(context, side):
    """One deploy of release-2 under the poller; the figures of the run. The fleet is torn down
    afterwards, whatever happened."""
    try:
        return deploy_once(context, side)
    finally:
        teardown(context)


def deploy_once(context, side):
    apps = context["apps"]
    urls = dict((app.name, app.url("/health/")) for app in apps)
    load_before = loadavg()
    with Poller(urls, expect="ok") as poller:
        time.sleep(SETTLE)
        began = time.time()
        rc, output = run_playbook(context, SIDES[side])
        ended = time.time()
        time.sleep(SETTLE)
    load_after = loadavg()
    result = poller.result
    with open(str(context["tmp"] / "deploy.log"), "w") as handle:
        handle.write(output)
    if rc != 0:
        raise RuntimeError("%s deploy (%s) failed, rc %s:\n%s" % (side, context["engine"], rc, output[-4000:]))
    [report] = reports(apps[0])
    revisions = dict((app.name, app.head_revision()) for app in apps)
    if any(rev != context["shas"]["release-2"] for rev in revisions.values()):
        raise RuntimeError("a host is not on release-2 after the deploy: %s" % revisions)
    if side == "online" and report["mode"] != "online":
        raise RuntimeError("auto mode did not deploy online: mode %r, reasons %s" % (
            report["mode"], report["mode_reasons"]))

    counts = result.counts()
    hosts = {}
    latencies_all = []
    slow = []
    reasons = collections.Counter()
    for host, rows in sorted(result.requests.items()):
        downs = result.down_intervals(host)
        latencies = [r.ms for r in rows]
        latencies_all.extend(latencies)
        for request in rows:
            if not request.ok:
                reasons[request.reason] += 1
            if request.ms >= SLOW_MS:
                slow.append({"host": host, "at": round(request.at - began, 3), "ms": request.ms,
                             "ok": request.ok, "reason": request.reason})
        hosts[host] = dict(
            counts[host],
            p50_ms=percentile(latencies, 0.5), p99_ms=percentile(latencies, 0.99),
            down_intervals=[[round(a - began, 3), round(b - began, 3)] for a, b in downs],
            longest_down_seconds=round(max([b - a for a, b in downs] or [0.0]), 3),
            down_seconds=round(sum(b - a for a, b in downs), 3))
    overlaps = result.overlaps()
    migration = (report.get("migrations") or [{}])[0]
    return {
        "side": side,
        "deploy_mode_var": SIDES[side],
        "mode": report["mode"],
        "mode_reasons": report["mode_reasons"],
        "result": report["result"],
        "requests": sum(h["requests"] for h in hosts.values()),
        "failed": sum(h["failed"] for h in hosts.values()),
        "failed_reasons": dict(reasons),
        "hosts": hosts,
        "longest_host_down_seconds": max(h["longest_down_seconds"] for h in hosts.values()),
        "overlap_seconds": round(sum(o["seconds"] for o in overlaps), 3),
        "overlaps": [{"from": round(o["from"] - began, 3), "to": round(o["to"] - began, 3),
                      "seconds": o["seconds"], "hosts": o["hosts"]} for o in overlaps],
        "max_latency_ms": max(latencies_all or [0]),
        "p99_latency_ms": percentile(latencies_all, 0.99),
        "slow_requests": sorted(slow, key=lambda r: r["at"]),
        "poller": {"interval": result.interval, "timeout": result.timeout, "realtime": result.realtime,
                   "seconds": round(result.stopped - result.started, 2),
                   "late": result.late},
        "report_downtime_seconds": report["downtime_seconds"],
        "report_hosts": [dict((k, h.get(k)) for k in ("host", "service", "stopped_at", "started_at",
                                                      "downtime_seconds", "answered_after_seconds",
                                                      "migrated_here")) for h in report["hosts"]],
        "migrate_duration_seconds": migration.get("duration_seconds"),
        "migrated": [step.get("migration") for step in migration.get("applied") or []],
        "playbook_seconds": round(ended - began, 2),
        "load_before": load_before,
        "load_after": load_after,
        "seconds": round(ended - began, 3),
    }


# --- summary and rendering --------------------------------------------------------------------


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def summarize(pairs):
    result = {}
    for side in SIDES:
        runs = [pair[side] for pair in pairs if side in pair]
        if not runs:
            continue
        result[side] = {
            "runs": len(runs),
            "modes": sorted(set(r["mode"] for r in runs)),
            "requests": sum(r["requests"] for r in runs),
            "failed": sum(r["failed"] for r in runs),
            "failed_per_run": [r["failed"] for r in runs],
            "longest_host_down_seconds": spread([r["longest_host_down_seconds"] for r in runs]),
            "overlap_seconds": spread([r["overlap_seconds"] for r in runs]),
            # None: no host was stopped in any run (the report's downtime_seconds is None then)
            "report_downtime_seconds": spread([r["report_downtime_seconds"] for r in runs]),
            "runs_with_a_host_stopped": sum(1 for r in runs if r["report_downtime_seconds"] is not None),
            "max_latency_ms": spread([r["max_latency_ms"] for r in runs]),
            "playbook_seconds": spread([r["playbook_seconds"] for r in runs]),
        }
    online = result.get("online")
    if online:
        result["goal"] = "online: 0 failed requests, no host unavailable, no hosts down together"
        result["goal_met"] = (online["failed"] == 0 and online["longest_host_down_seconds"]["max"] == 0
                              and online["overlap_seconds"]["max"] == 0 and online["modes"] == ["online"])
    return result


def fmt_spread(value, digits=2):
    if value is None:
        return "-"
    form = "%%.%df" % digits
    if value["min"] == value["max"]:
        return form % value["median"]
    return (form + " (" + form + "-" + form + ")") % (value["median"], value["min"], value["max"])


def render(data):
    rows = []
    for engine, block in data["engines"].items():
        s = block["summary"]
        for side in SIDES:
            if side not in s:
                continue
            x = s[side]
            rows.append([engine, side, ", ".join(x["modes"]), "%d of %d (%s)" % (
                x["failed"], x["requests"], " / ".join(str(n) for n in x["failed_per_run"])),
                fmt_spread(x["longest_host_down_seconds"]), fmt_spread(x["overlap_seconds"]),
                fmt_spread(x["report_downtime_seconds"]) if x["report_downtime_seconds"] else "none (no host stopped)",
                fmt_spread(x["max_latency_ms"], 0),
                fmt_spread(x["playbook_seconds"], 1)])
    print(table(["engine", "side", "mode (report)", "failed requests (per run)",
                 "longest host unavailability s", "hosts down together s", "fleet downtime (report) s",
                 "max request latency ms", "playbook wall s"], rows))
    print()
    rows = []
    for engine, block in data["engines"].items():
        for index, pair in enumerate(block["pairs"], 1):
            for side in SIDES:
                if side not in pair:
                    continue
                r = pair[side]
                rows.append([engine, index, side, r["mode"], r["failed"], r["requests"],
                             " / ".join("%.2f" % r["hosts"][h]["longest_down_seconds"] for h in sorted(r["hosts"])),
                             "%.2f" % r["overlap_seconds"],
                             "none" if r["report_downtime_seconds"] is None else r["report_downtime_seconds"],
                             " / ".join("%.0f" % r["hosts"][h]["max_ms"] for h in sorted(r["hosts"])),
                             r["playbook_seconds"], "%s / %s" % (r["load_before"][0], r["load_after"][0])])
    print(table(["engine", "pair", "side", "mode", "failed", "requests",
                 "longest unavailability app1/app2/app3 s", "down together s", "fleet downtime s",
                 "max latency app1/app2/app3 ms", "playbook s", "load before / after (1 min)"], rows))
    for engine, block in data["engines"].items():
        for index, pair in enumerate(block["pairs"], 1):
            for side in SIDES:
                r = pair.get(side)
                if r and r["failed_reasons"]:
                    print("%s pair %d %s failed: %s" % (engine, index, side, r["failed_reasons"]))


def default_json():
    day = time.strftime("%Y-%m-%d", time.gmtime())
    path = os.path.join(REPO, "benchmarks", "results", "p6-zero-downtime-%s.json" % day)
    suffix = 2
    while os.path.exists(path):
        path = os.path.join(REPO, "benchmarks", "results", "p6-zero-downtime-%s-r%d.json" % (day, suffix))
        suffix += 1
    return path


def git_facts():
    def out(*args):
        return subprocess.run(["git", "-C", REPO] + list(args), capture_output=True, text=True,
                              check=False).stdout.rstrip()
    dirty = [line[3:] for line in out("status", "--porcelain", "--", "plugins", "roles", "playbooks",
                                      "tests/integration").splitlines()]
    return {"commit": out("rev-parse", "--short", "HEAD"), "uncommitted_product_files": dirty}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engines", default="postgresql,mysql")
    parser.add_argument("--json", help="default: benchmarks/results/p6-zero-downtime-<date>.json")
    parser.add_argument("--render", help="print the tables of a results file, run nothing")
    args = parser.parse_args()
    if rendered(args, render):
        return 0
    out = args.json or default_json()
    stop_on_signals()

    data = {"benchmark": "P6 (issue 18): downtime of a backward-compatible release", "machine": machine(),
            **git_facts(), "command": " ".join(["benchmarks/zero_downtime.py"] + sys.argv[1:]),
            "hosts": list(HOSTS), "server": "gunicorn (2 workers, reload = HUP to the master)",
            "connection": "local", "sides": SIDES, "settle_seconds": SETTLE,
            "measured": "poller (tests/integration/poller.py): GET /health/ per host every 100 ms, "
                        "new connection, 10 s timeout, from 1 s before the playbook to 1 s after; "
                        "deploy report: mode, downtime_seconds, hosts",
            "engines": {}}
    work = tempfile.mkdtemp(prefix="dbsafe-bench-p6-")
    LIVE["dirs"].append(work)
    try:
        for engine in args.engines.split(","):
            sides = dict((side, (lambda context, s=side: measured(context, s))) for side in SIDES)
            block = data["engines"].setdefault(engine, {"pairs": []})

            def setup(_name, e=engine):
                return fleet(e, work)
            # run_pairs returns all pairs at the end; write after every pair instead, one pair at a time.
            for index in range(args.repeat):
                order = rotated(list(SIDES), index)
                pair = run_pairs(dict((n, sides[n]) for n in order), 1, setup=setup,
                                 label="P6 %s, repetition %d/%d," % (engine, index + 1, args.repeat))[0]
                pair["order"] = order
                block["pairs"].append(pair)
                for side in order:
                    r = pair[side]
                    log("  %s %s: mode %s, failed %d of %d, longest unavailability %.2f s, down together "
                        "%.2f s, fleet downtime %s s, max latency %.0f ms, playbook %.1f s, load %s -> %s" % (
                            engine, side, r["mode"], r["failed"], r["requests"], r["longest_host_down_seconds"],
                            r["overlap_seconds"], r["report_downtime_seconds"], r["max_latency_ms"],
                            r["playbook_seconds"], r["load_before"][0], r["load_after"][0]))
                block["summary"] = summarize(block["pairs"])
                data["load_average_at_end"] = loadavg()
                write_json(out, data)  # rewritten after every pair: an interrupted run keeps its figures
    finally:
        cleanup_everything()
    render(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
