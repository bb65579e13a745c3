#!/usr/bin/env python3
"""P4 fleet (issue 13, item 7): the downtime of a fleet deploy over SSH + sudo.

Not a test: a script a person runs, as root (it brings up the field harness of tests/field:
OS users, a sudoers drop-in, an sshd on loopback, an own PostgreSQL cluster with scram
passwords). The fleet is tests/field/fleet.py's: app1, app2, app3 on ONE database, reached over
ssh as a login user who sudoes to the app user, pipelining on (the PostgreSQL fleet).

Every repetition: the fleet is put back on release-1 directly (``Fleet.prepare``: servers
stopped, database recreated, fresh checkouts, migrate + demo data on app1, servers started;
not timed), then ``ansible-playbook playbooks/deploy.yml`` release-1 -> release-2 runs (no
``-vvv``, no argv sampler: ``--watched`` runs it through the harness's ``Fleet.playbook``
instead, as the field tests do). From the run's deploy report: the fleet downtime (first stop
to last start over all hosts), the guarded migrate's own ``duration_seconds`` and
``timings``, each host's window; the difference downtime - duration is what the goal bounds
(<= 3 s). A small callback (written into the work directory, enabled for these runs only)
records when each task began on the controller, when each host's module began and returned,
and the modules' service windows (epoch seconds): the timeline says where the rest goes.

    .venv/bin/python benchmarks/fleet.py                      # 5 runs, JSON to benchmarks/results/
    .venv/bin/python benchmarks/fleet.py --repeat 3 --json /tmp/fleet.json
    .venv/bin/python benchmarks/fleet.py --render benchmarks/results/p4-fleet-2026-11-30.json

Everything is torn down as the field tests do (servers, users, sudoers file, sshd, cluster),
also when a run fails or the script is interrupted.
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from paired import REPO, log, machine, rendered, stop_on_signals, table, write_json

sys.path.insert(0, os.path.join(REPO, "tests", "field"))
import fleet as field  # noqa: E402 - tests/field/fleet.py, the field harness

from ansible_run import _bin  # noqa: E402 - tests/integration/ansible_run.py

GOAL_SECONDS = 3.0  # issue 13, item 7: fleet downtime <= the guarded migrate's duration + 3 s
FLEET = field.Fleet.HOSTS
DOWN_TASK = "Take the other app hosts of the database down"
MIGRATE_TASK = "Migrate once, inside the migrating host's own stop"
UP_TASK = "Start the other app hosts"

# An aggregate callback: controller-side times of every task and of each host's module run,
# and the service windows the modules return (no command line, no environment: no secret).
TIMELINE_CALLBACK = '''
import json
import os
import time

from ansible.plugins.callback import CallbackBase


def _name(thing):
    return thing.get_name() if thing is not None else None


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "dbsafe_fleet_timeline"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.events = []

    def _add(self, event, task=None, host=None, **extra):
        self.events.append(dict(at=time.time(), event=event, task=_name(task), host=host, **extra))

    def v2_playbook_on_play_start(self, play):
        self._add("play", name=play.get_name())

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._add("task", task)

    def v2_runner_on_start(self, host, task):
        self._add("host_start", task, host.get_name())

    def _result(self, event, result):
        data = getattr(result, "_result", None) or {}
        kept = {}
        for key in ("window", "downtime"):
            window = data.get(key)
            if isinstance(window, dict):
                kept[key] = dict((k, window.get(k)) for k in ("stopped_at", "started_at", "seconds"))
                kept[key]["steps"] = [dict((k, s.get(k)) for k in ("step", "rc", "seconds"))
                                      for s in window.get("steps") or [] if isinstance(s, dict)]
        for key in ("duration", "timings"):
            if key in data:
                kept[key] = data[key]
        kept["result_bytes"] = len(json.dumps(data, default=str))
        self._add(event, result._task, result._host.get_name(), result=kept)

    def v2_runner_on_ok(self, result):
        self._result("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result("failed", result)

    def v2_runner_on_skipped(self, result):
        self._result("skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._result("unreachable", result)

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("DBSAFE_FLEET_TIMELINE")
        if path:
            with open(path, "w") as handle:
                json.dump(self.events, handle)
'''


def loadavg():
    return [round(v, 2) for v in os.getloadavg()]


def git_facts():
    def out(*args):
        return subprocess.run(["git", "-C", REPO] + list(args), capture_output=True, text=True,
                              check=False).stdout.rstrip()  # porcelain lines start with a blank
    # The playbooks run the working tree: say which of the product's files differ from HEAD.
    dirty = [line[3:] for line in out("status", "--porcelain", "--", "plugins", "roles",
                                      "playbooks").splitlines()]
    return {"commit": out("rev-parse", "--short", "HEAD"), "uncommitted_product_files": dirty}


# --- one run --------------------------------------------------------------------------------


def timeline_phases(events, report):
    """Where the fleet's downtime went, from the callback's events (controller clock = hosts'
    clock: one machine). Returns {phase: seconds} and the windows per host, relative to the
    fleet's first stop."""

    def first(event, task, host=None):
        for item in events:
            if item["event"] == event and (item["task"] or "").find(task) >= 0 \
                    and (host is None or item["host"] == host):
                return item
        return None

    def results(task):
        return [e for e in events if e["event"] in ("ok", "failed") and task in (e["task"] or "")]

    down = [e for e in results(DOWN_TASK) if e["result"].get("window")]
    migrate = [e for e in results(MIGRATE_TASK) if e["result"].get("downtime")]
    up = [e for e in results(UP_TASK) if e["result"].get("window")]
    if not (down and migrate and up):
        return None
    mig = migrate[0]
    mwin = mig["result"]["downtime"]
    steps = dict((s["step"], s["seconds"]) for s in mwin["steps"])
    t0 = min(e["result"]["window"]["stopped_at"] for e in down)
    t_end = max(e["result"]["window"]["started_at"] for e in up)
    down_returned = max(e["at"] for e in down)
    migrate_task = first("task", MIGRATE_TASK)["at"]
    # The module's clock starts before its warm-up; its duration ends before its start command.
    module_began = mwin["started_at"] - (steps.get("start") or 0) - mig["result"]["duration"]
    up_task = first("task", UP_TASK)["at"]
    up_commands = [e["result"]["window"]["started_at"] - (
        dict((s["step"], s["seconds"]) for s in e["result"]["window"]["steps"]).get("start") or 0)
        for e in up]
    phases = [
        ("others: stop + code switch (in the module)", max(
            e["result"]["window"]["stopped_at"] + sum(s["seconds"] for s in e["result"]["window"]["steps"])
            for e in down) - t0),
        ("others: module exit, result back to the controller", down_returned - max(
            e["result"]["window"]["stopped_at"] + sum(s["seconds"] for s in e["result"]["window"]["steps"])
            for e in down)),
        ("assert task, next task (controller)", migrate_task - down_returned),
        ("guarded migrate: task start-up over SSH (to the guarded run's start)", module_began - migrate_task),
        ("guarded migrate: interpreter launch + warm-up, before its stop", mwin["stopped_at"] - module_began),
        ("guarded migrate: its own window (stop, code, migrate, start)", mwin["started_at"] - mwin["stopped_at"]),
        ("guarded migrate: session close, module exit, result back", mig["at"] - mwin["started_at"]),
        ("fail-check task, next task (controller)", up_task - mig["at"]),
        ("others: start task start-up over SSH (to the last start command)", max(up_commands) - up_task),
        ("others: the last start command", t_end - max(up_commands)),
    ]
    hosts = {}
    for e in down + up:
        window = e["result"]["window"]
        entry = hosts.setdefault(e["host"], {})
        if window.get("stopped_at"):
            entry["stopped"] = round(window["stopped_at"] - t0, 3)
        if window.get("started_at") and e in up:
            entry["started"] = round(window["started_at"] - t0, 3)
        for step in window["steps"]:
            entry[step["step"] + "_seconds"] = step["seconds"]
    hosts[mig["host"]] = dict(stopped=round(mwin["stopped_at"] - t0, 3),
                              started=round(mwin["started_at"] - t0, 3),
                              **dict((s["step"] + "_seconds", s["seconds"]) for s in mwin["steps"]))
    for entry in hosts.values():
        if "started" in entry and "stopped" in entry:
            entry["window"] = round(entry["started"] - entry["stopped"], 3)
    down_task = first("task", DOWN_TASK)["at"]
    return {"from_first_stop_to_last_start": round(t_end - t0, 3),
            # Outside the window, for comparison: the same start-up cost of a module task.
            "before_the_window": {
                "others: down task start-up over SSH (task start -> first stop)": round(t0 - down_task, 3),
                "others: stagger of the parallel stops (first -> last stop)": round(
                    max(e["result"]["window"]["stopped_at"] for e in down) - t0, 3)},
            "phases": [{"phase": name, "seconds": round(seconds, 3)} for name, seconds in phases],
            "hosts": hosts, "migrating_host": mig["host"],
            "guarded_result_bytes": mig["result"].get("result_bytes"),
            "service_result_bytes": max(e["result"].get("result_bytes") or 0 for e in down),
            "guarded_module_seconds_incl_start": round(mwin["started_at"] - module_began, 3)}


def deploy_once(fleet, inventory, work, index, watched):
    before_reports = set(glob.glob(os.path.join(fleet.reports, "*.json")))
    timeline = os.path.join(work, "timeline-%d.json" % index)
    os.environ["DBSAFE_FLEET_TIMELINE"] = timeline  # the harness's ansible_env copies os.environ
    load_before = loadavg()
    began = time.time()
    if watched:
        run = fleet.playbook("deploy", inventory, "benchmarks/fleet.py run %d" % index)
        rc, output = run.rc, run.output
    else:
        argv = [_bin("ansible-playbook"), "-i", inventory, os.path.join(REPO, "playbooks", "deploy.yml")]
        proc = subprocess.run(argv, capture_output=True, text=True, env=fleet.harness.ansible_env(),
                              cwd=REPO, timeout=900, check=False)
        rc, output = proc.returncode, proc.stdout + proc.stderr
        fleet.state = fleet.dev_state = None
    seconds = time.time() - began
    load_after = loadavg()
    with open(os.path.join(work, "deploy-%d.log" % index), "w") as handle:
        handle.write(field.mask(output, fleet.secrets))
    if rc != 0:
        raise RuntimeError("deploy run %d failed (rc %s):\n%s" % (index, rc, field.mask(output[-4000:], fleet.secrets)))
    new = sorted(set(glob.glob(os.path.join(fleet.reports, "*.json"))) - before_reports)
    if not new:
        raise RuntimeError("deploy run %d wrote no JSON report" % index)
    with open(new[-1]) as handle:
        report = json.load(handle)
    migration = report["migrations"][0]
    downtime = report["downtime_seconds"]
    duration = migration["duration_seconds"]
    with open(timeline) as handle:
        events = json.load(handle)
    return {
        "run": index,
        "result": report["result"],
        "fleet_downtime_seconds": downtime,
        "guarded_migrate_duration_seconds": duration,
        "difference_seconds": round(downtime - duration, 3),
        "goal_met": downtime <= duration + GOAL_SECONDS,
        "guarded_migrate_timings": migration["timings"],
        "guarded_migrate_service_window": migration.get("service_window"),
        "report_hosts": [dict((k, h.get(k)) for k in ("host", "service", "stopped_at", "started_at",
                                                      "downtime_seconds", "answered_after_seconds",
                                                      "migrated_here"))
                         for h in report["hosts"]],
        "timeline": timeline_phases(events, report),
        # The callback's events of the downtime play, times relative to the playbook's first play.
        "events": [dict(e, at=round(e["at"] - events[0]["at"], 3)) for e in events
                   if "Downtime" in (e.get("task") or e.get("name") or "")],
        "playbook_seconds": round(seconds, 1),
        "load_before": load_before,
        "load_after": load_after,
    }


# --- the whole benchmark ----------------------------------------------------------------------


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def summarize(runs):
    phases = {}
    for run in runs:
        for phase in (run["timeline"] or {}).get("phases", []):
            phases.setdefault(phase["phase"], []).append(phase["seconds"])
    return {
        "fleet_downtime_seconds": spread([r["fleet_downtime_seconds"] for r in runs]),
        "guarded_migrate_duration_seconds": spread([r["guarded_migrate_duration_seconds"] for r in runs]),
        "difference_seconds": spread([r["difference_seconds"] for r in runs]),
        "runs_meeting_goal": sum(1 for r in runs if r["goal_met"]),
        "goal": "fleet downtime <= guarded migrate duration + %.0f s" % GOAL_SECONDS,
        "goal_met_by_median": statistics.median(r["difference_seconds"] for r in runs) <= GOAL_SECONDS,
        "phases_median_seconds": dict((name, round(statistics.median(v), 3)) for name, v in phases.items()),
        "timings_median_seconds": dict(
            (key, round(statistics.median(r["guarded_migrate_timings"].get(key, 0) for r in runs), 3))
            for key in sorted(set(k for r in runs for k in r["guarded_migrate_timings"]))),
    }


def render(data):
    runs = data["runs"]
    print(table(["run", "fleet downtime s", "guarded migrate duration s", "difference s",
                 "goal (<= +%.0f s)" % GOAL_SECONDS, "load before/after (1 min)"],
                [[r["run"], r["fleet_downtime_seconds"], r["guarded_migrate_duration_seconds"],
                  r["difference_seconds"], "met" if r["goal_met"] else "missed",
                  "%s / %s" % (r["load_before"][0], r["load_after"][0])] for r in runs]))
    print()
    s = data["summary"]
    print(table(["", "median", "min", "max"],
                [[key, s[key]["median"], s[key]["min"], s[key]["max"]]
                 for key in ("fleet_downtime_seconds", "guarded_migrate_duration_seconds",
                             "difference_seconds")]))
    print()
    names = list(s["phases_median_seconds"])
    print(table(["phase (first stop -> last start)"] + ["run %d" % r["run"] for r in runs] + ["median"],
                [[name] + [next((p["seconds"] for p in (r["timeline"] or {}).get("phases", [])
                                 if p["phase"] == name), "") for r in runs]
                 + [s["phases_median_seconds"][name]] for name in names]))
    print()
    print("guarded migrate timings (median s): " + ", ".join(
        "%s %s" % item for item in s["timings_median_seconds"].items()))
    print()
    rows = []
    for r in runs:
        for host, w in sorted(((r["timeline"] or {}).get("hosts") or {}).items()):
            rows.append([r["run"], host, w.get("stopped"), w.get("started"), w.get("window"),
                         w.get("stop_seconds"), w.get("code_seconds"), w.get("start_seconds")])
    print(table(["run", "host", "stopped at +s", "started at +s", "window s", "stop cmd s",
                 "code cmd s", "start cmd s"], rows))


def default_json():
    day = time.strftime("%Y-%m-%d", time.gmtime())
    path = os.path.join(REPO, "benchmarks", "results", "p4-fleet-%s.json" % day)
    suffix = 2
    while os.path.exists(path):
        path = os.path.join(REPO, "benchmarks", "results", "p4-fleet-%s-r%d.json" % (day, suffix))
        suffix += 1
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--engine", choices=["postgresql", "mysql"], default="postgresql",
                        help="postgresql: pipelining on (the figure of issue 13); mysql: off")
    parser.add_argument("--watched", action="store_true",
                        help="run through the field harness's Fleet.playbook (-vvv, argv sampler)")
    parser.add_argument("--json", help="default: benchmarks/results/p4-fleet-<date>.json")
    parser.add_argument("--render", help="print the tables of a results file, run nothing")
    args = parser.parse_args()
    if rendered(args, render):
        return 0
    out = args.json or default_json()
    stop_on_signals()

    work = tempfile.mkdtemp(prefix="dbsafe-bench-fleet-")
    callbacks = os.path.join(work, "callback_plugins")
    os.makedirs(callbacks)
    with open(os.path.join(callbacks, "dbsafe_fleet_timeline.py"), "w") as handle:
        handle.write(TIMELINE_CALLBACK)
    os.environ.update(ANSIBLE_CALLBACK_PLUGINS=callbacks,
                      ANSIBLE_CALLBACKS_ENABLED="dbsafe_fleet_timeline")
    # The harness's files of record stay the tests' own: ours go to the work directory.
    field.RESULTS = os.path.join(work, "field.json")
    field.LOGS = os.path.join(work, "logs")

    data = {"benchmark": "P4 fleet (issue 13, item 7)", "machine": machine(), **git_facts(),
            "engine": args.engine, "hosts": list(FLEET), "watched": args.watched,
            "connection": "ssh + sudo (become_user: the app user), loopback sshd",
            "command": " ".join(["benchmarks/fleet.py"] + sys.argv[1:]),
            "measured": "deploy report: downtime_seconds (first stop -> last start over all hosts), "
                        "migrations[0].duration_seconds; timeline: a controller callback",
            "runs": []}
    harness = field.Harness()
    fleet = None
    try:
        log("bringing up the field harness (users, sshd, %s)" % args.engine)
        harness.start()
        server = harness.postgres() if args.engine == "postgresql" else harness.mysql()
        fleet = field.Fleet(harness, args.engine, server)
        data["pipelining"] = fleet.pipelining
        inventory = fleet.inventory({"django": FLEET})
        for index in range(1, args.repeat + 1):
            began = time.time()
            fleet.state = None  # always made again: the database, the checkouts, the servers
            fleet.prepare("release-1")
            log("run %d/%d: fleet on release-1 (%.1f s, not counted); deploying" % (
                index, args.repeat, time.time() - began))
            run = deploy_once(fleet, inventory, work, index, args.watched)
            data["runs"].append(run)
            log("run %d: fleet downtime %.2f s, guarded migrate %.2f s, difference %+.2f s (%s), "
                "playbook %.1f s, load %s -> %s" % (
                    index, run["fleet_downtime_seconds"], run["guarded_migrate_duration_seconds"],
                    run["difference_seconds"], "met" if run["goal_met"] else "missed",
                    run["playbook_seconds"], run["load_before"][0], run["load_after"][0]))
            data["summary"] = summarize(data["runs"])
            data["load_average_at_end"] = loadavg()
            write_json(out, data)  # rewritten after every run: an interrupted run keeps its figures
    finally:
        log("tearing down (servers, users, sudoers, sshd, cluster)")
        try:
            if fleet is not None:
                fleet.close()
        finally:
            harness.close()
            subprocess.run(["rm", "-rf", work], check=False)
    if data["runs"]:
        render(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
