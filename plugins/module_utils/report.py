# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The deploy report's data and its Markdown, from what the modules returned on each host.
Pure: the action plugin django_deploy_report gathers the inputs and writes the files."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time


def _iso(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(epoch))) if epoch else None


def _window(result):
    """The service window a module result describes (django_service's ``window``, the guarded
    migrate's ``downtime``), or {}."""
    if not isinstance(result, dict):
        return {}
    return result.get("window") or result.get("downtime") or {}


def _unreachable(entry):
    return any(isinstance(entry.get(key), dict) and entry[key].get("unreachable")
               for key in ("down", "migrate", "up", "rollout", "rollout_back"))


def _reloaded(window):
    """The rollout of an online deploy reloaded this host gracefully (it never went down)."""
    return any(step.get("step") == "reload" and step.get("rc") == 0 for step in window.get("steps") or [])


def host_report(entry):
    """One host's line: what happened to its service, its code, its checks."""
    migrate = entry.get("migrate") or {}
    rollout = _window(entry.get("rollout"))
    windows = [_window(entry.get("down")), _window(migrate), _window(entry.get("up")), rollout,
               _window(entry.get("rollout_back"))]
    stopped = [w["stopped_at"] for w in windows if w.get("stopped_at")]
    started = [w["started_at"] for w in windows if w.get("started_at")]
    stopped_at = min(stopped) if stopped else None
    started_at = max(started) if started and stopped_at else None
    if _unreachable(entry):
        service = "unreachable" + (" after it was stopped" if stopped_at else "")
    elif stopped_at is None:
        service = "reloaded, never stopped" if _reloaded(rollout) else "never stopped"
    elif started_at is None:
        service = "LEFT STOPPED"
    else:
        service = "stopped, started again"
    preflight = entry.get("preflight") or {}
    code_back = any(step.get("step") == "code_back" and step.get("rc") == 0
                    for w in windows for step in w.get("steps") or [])
    code_done = any(step.get("step") == "code" and step.get("rc") == 0
                    for w in windows for step in w.get("steps") or [])
    revision_after = preflight.get("revision_before")
    if code_done and not code_back:
        revision_after = preflight.get("revision_wanted")
    healthy = entry.get("healthy_at")
    line = {
        "host": entry["host"],
        "service": service,
        "mode": preflight.get("mode"),
        "code_switched": bool(code_done and not code_back),
        "revision_before": preflight.get("revision_before"),
        "revision_after": revision_after,
        "stopped_at": _iso(stopped_at),
        # An online rollout's graceful reload (epoch seconds: it orders the contract stage after it).
        "reloaded_at": rollout.get("reloaded_at"),
        "started_at": _iso(started_at),
        "downtime_seconds": round(started_at - stopped_at, 2) if started_at else None,
        "answered_after_seconds": (round(float(healthy) - stopped_at, 2)
                                   if healthy and stopped_at else None),
        "migrated_here": bool(migrate.get("changed")) and "plan" in migrate,
        "problems": list(entry.get("problems") or []),
        "failure": entry.get("failure"),
    }
    return line, stopped_at, started_at


def build_report(name, entries, finished, check_mode=False):
    """The report of a run over ``entries`` (one dict per host: host, active, preflight,
    down, migrate, up, problems, healthy_at, failure)."""
    lines = [host_report(entry) for entry in entries]
    hosts = [line for line, _stopped, _started in lines]
    # The migrate, and a split deploy's contract stage after the rollout.
    migrations = [migration_report(e["host"], e[key], stage) for key, stage in (("migrate", None), ("contract", "contract"))
                  for e in entries if isinstance(e.get(key), dict) and "plan" in e[key]]
    failures = sorted(set(h["failure"] for h in hosts if h["failure"]))
    failures += ["%s: %s" % (m["host"], m["msg"]) for m in migrations
                 if m["failed"] and m["msg"] not in " ".join(failures)]
    problems = ["%s: %s" % (h["host"], p) for h in hosts for p in h["problems"]]
    unreachable = [h["host"] for h in hosts if h["service"].startswith("unreachable")]
    stops = [stopped for _line, stopped, _started in lines if stopped]
    starts = [started for _line, stopped, started in lines if stopped and started]
    if failures or unreachable:
        result = "failed"
    elif problems:
        result = "failed verification"
    elif check_mode:
        result = "check mode"
    else:
        changed = stops or any(h["code_switched"] for h in hosts) or any(m["changed"] for m in migrations)
        result = "succeeded" if changed else "nothing to do"
    if failures:
        message = "; ".join(failures)
    elif unreachable:
        message = "unreachable: %s" % ", ".join(unreachable)
    elif problems:
        message = "; ".join(problems)
    else:
        message = "; ".join(m["msg"] for m in migrations)
    downtime = None
    if stops:
        downtime = round(max(starts) - min(stops), 2) if len(starts) == len(stops) else "not started"
    wanted = [(e.get("preflight") or {}).get("revision_wanted") for e in entries]
    mode, reasons = deploy_mode(entries)
    return {
        "report": name,
        "result": result,
        "message": message,
        "mode": mode,
        "mode_reasons": reasons,
        "finished": _iso(finished),
        "revision_wanted": next((w for w in wanted if w), None),
        "downtime_seconds": downtime,
        "unreachable": unreachable,
        "hosts": hosts,
        "migrations": migrations,
    }


def deploy_mode(entries):
    """(mode, reasons): "online" when every host deployed online, "stop" when every host used
    the stop window, "online and stop" for a run over several databases that differ (None: no
    preflight); the reasons are what required the stop window, once each."""
    preflights = [e.get("preflight") for e in entries if isinstance(e.get("preflight"), dict)]
    modes = sorted(set(p.get("mode") or "stop" for p in preflights))
    reasons = []
    for preflight in preflights:
        for reason in preflight.get("mode_reasons") or []:
            if reason not in reasons:
                reasons.append(reason)
    if not modes:
        return None, reasons
    return " and ".join(modes), reasons


def migration_report(host, result, stage=None):
    window = _window(result)
    return {
        "host": host,
        "stage": stage or ("expand" if result.get("stage") == "expand" else None),
        "msg": result.get("msg") or "",
        "changed": bool(result.get("changed")),
        "failed": bool(result.get("failed")),
        "restored": bool(result.get("restored")),
        # A failed run's plan is its names; a successful one's, its steps.
        "plan": [step if isinstance(step, str) else step.get("migration")
                 for step in result.get("plan") or []],
        "applied": result.get("applied") or [],
        "backup": result.get("backup"),
        "duration_seconds": result.get("duration"),
        "timings": result.get("timings") or {},
        "service_window": window.get("steps"),
        # Tables whose row count the migrate changed (a data migration's deletes, too).
        "row_changes": result.get("row_changes") or [],
        # Each pending operation's risk to its live table (risk.py); the report lists the risky ones.
        "risk": result.get("risk"),
        "risks": [item for item in result.get("risks") or [] if item.get("level") != "safe"],
        # Statements that gave up waiting for another session's lock and were tried again, and
        # who held the lock when the tries were used up.
        "lock_waits": result.get("lock_waits") or [],
        "lock_holders": result.get("lock_holders"),
        # Migrated while the application served (online.py): a failure was undone, not restored.
        "online": bool(result.get("online")),
        "undone": result.get("undone") or [],
        "rows_written_meanwhile": result.get("rows_written_meanwhile") or {},
    }


def risk_line(item):
    """One risky operation as one line: level, migration, operation, table and size, reasons."""
    size = []
    if item.get("rows") is not None:
        size.append("~%s rows" % item["rows"])
    if item.get("bytes") is not None:
        size.append("%s bytes" % item["bytes"])
    table = item.get("table") or "-"
    if size:
        table += " (%s)" % ", ".join(size)
    reasons = "; ".join(item.get("reasons") or [])
    return "- **%s** %s: %s on %s: %s" % (item.get("level"), item.get("migration"), item.get("operation"), table,
                                          reasons)


def lock_wait_lines(migration):
    """The report's lines on lock waits: each retry, and who held the lock at the end."""
    lines = []
    if migration.get("lock_waits"):
        lines += ["", "Lock waits (a statement gave up after db_lock_timeout and was tried again):", ""]
        lines += ["- %s: try %s ended with %s; tried again after %s s" % (
            wait.get("migration") or "between steps", wait.get("attempt"), wait.get("error"),
            wait.get("retry_in")) for wait in migration["lock_waits"]]
    if migration.get("lock_holders"):
        lines += ["", "Gave up waiting for a lock held by: %s" % migration["lock_holders"]]
    return lines


def _cell(value):
    text = "-" if value is None or value == "" or value == [] else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _mode_text(report):
    mode = report.get("mode")
    if mode == "online":
        return "online: migrated while the application served, the code rolled out host by host"
    if mode == "split":
        return ("online in two stages: the expand migrations while the previous code served, the rollout, "
                "then the contract stage (%s)" % "; ".join(report.get("mode_reasons") or []))
    if mode and report.get("mode_reasons"):
        return "%s: the stop window was required by %s" % (mode, "; ".join(report["mode_reasons"]))
    return mode


def render_markdown(report):
    lines = ["# %s report: %s" % (report["report"].capitalize(), report["result"]), "",
             "| | |", "| --- | --- |"]
    downtime = report["downtime_seconds"]
    for label, value in (("result", "**%s**" % report["result"]),
                         ("message", report["message"]),
                         ("finished", report["finished"]),
                         ("revision", report["revision_wanted"]),
                         ("mode", _mode_text(report)),
                         ("downtime (first stop to last start)",
                          "%s s" % downtime if isinstance(downtime, (int, float)) else downtime)):
        lines.append("| %s | %s |" % (label, _cell(value)))
    lines += ["", "## Hosts", "",
              "| host | service | revision before | revision after | stopped | started | "
              "down (s) | answered after (s) | migrated here | problems |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for h in report["hosts"]:
        lines.append("| %s |" % " | ".join(_cell(v) for v in (
            h["host"], h["service"], h["revision_before"], h["revision_after"], h["stopped_at"],
            h["started_at"], h["downtime_seconds"], h["answered_after_seconds"],
            "yes" if h["migrated_here"] else "no", "; ".join(h["problems"]))))
    for m in report["migrations"]:
        lines += ["", "## Migration%s (on %s)" % (" - %s stage" % m["stage"] if m.get("stage") else "", m["host"]),
                  "", _cell(m["msg"]), ""]
        if m["applied"]:
            lines += ["| migration | action | ok | seconds |", "| --- | --- | --- | --- |"]
            for step in m["applied"]:
                lines.append("| %s | %s | %s | %s |" % (
                    _cell(step.get("migration")), _cell(step.get("action") or "applying"),
                    "yes" if step.get("ok") else "**no**", _cell(step.get("seconds"))))
        else:
            lines.append("No migration was applied.")
        if m.get("row_changes"):
            lines += ["", "Rows changed during the migrate (the application kept writing: its rows are in these "
                      "counts):" if m.get("online") else "Rows changed by the migrate:", "",
                      "| table | rows before | rows after | change |",
                      "| --- | --- | --- | --- |"]
            for change in m["row_changes"]:
                lines.append("| %s | %s | %s | %+d |" % (
                    _cell(change.get("table")), _cell(change.get("before")),
                    _cell(change.get("after")), change.get("change") or 0))
        lines += lock_wait_lines(m)
        if m.get("risks"):
            lines += ["", "Risky operations (plan risk: **%s**):" % m.get("risk"), ""]
            lines += [risk_line(item).replace("\n", " ") for item in m["risks"]]
        if m.get("undone"):
            lines += ["", "Undone by Django's reverse operations (online, the application kept running): %s%s." % (
                ", ".join(m["undone"]), "; rows the application wrote meanwhile, kept: %s" % ", ".join(
                    "%s +%s" % item for item in sorted(m["rows_written_meanwhile"].items()))
                if m.get("rows_written_meanwhile") else "")]
        backup = m["backup"]
        lines.append("")
        if backup:
            lines.append("Backup taken before migrating: `%s` (sha256 `%s`, %s bytes)%s."
                         % (backup.get("path"), backup.get("sha256"), backup.get("size", "?"),
                            "; it was **restored** after the failure" if m["restored"] else ""))
        else:
            lines.append("No backup was taken%s." % ("" if m["changed"] else " (nothing was migrated)"))
        if m["service_window"]:
            lines += ["", "Service window on this host: " + ", ".join(
                "%s %s s%s" % (s.get("step"), s.get("seconds"),
                               "" if s.get("rc") == 0 else " (**rc %s**)" % s.get("rc"))
                for s in m["service_window"]) + "."]
        if m["timings"]:
            lines += ["", "Guarded migrate phases (s): " + ", ".join(
                "%s %s" % (k, v) for k, v in sorted(m["timings"].items())) + "."]
    return "\n".join(lines) + "\n"
