# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure functions over what the introspection returned. No I/O (but the machine's name for an
SQLite database's key): unit-tested without Django."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import socket

from ansible_collections.dbsafe.django.plugins.module_utils import risk
from ansible_collections.dbsafe.django.plugins.module_utils.introspect import CHECKSUM_TABLE

# The Django releases the collection is tested with (tests/integration: the demo project and
# the modules under each); outside them a warning names the range.
TESTED_DJANGO = ((3, 2), (6, 1))


def untested_django(version):
    """A warning when ``version`` (e.g. "6.2.1") is outside TESTED_DJANGO, else None."""
    match = re.match(r"(\d+)\.(\d+)", str(version or ""))
    if not match:
        return None
    parts = (int(match.group(1)), int(match.group(2)))
    low, high = TESTED_DJANGO
    if low <= parts <= high:
        return None
    return ("the project runs Django %s, outside the range this collection is tested with "
            "(Django %d.%d to %d.%d): check the results with care"
            % (version, low[0], low[1], high[0], high[1]))


# Operations that destroy data when they run forwards.
LOSSY_FORWARD_OPERATIONS = ("RemoveField", "DeleteModel")


def public_database(database, hostname=None):
    """The database entry of a result, without the password, and its ``key``: equal for two
    hosts exactly when they use the same database (an SQLite file is its machine's own)."""
    keys = ("alias", "vendor", "vendor_flavour", "ENGINE", "NAME", "HOST", "PORT", "USER")
    public = dict((key.lower(), database.get(key)) for key in keys if key in database)
    if public.get("vendor") == "sqlite":
        where = [hostname or socket.gethostname(), public.get("name")]
    else:
        where = [public.get("host") or "localhost", public.get("port") or "", public.get("name")]
    public["key"] = "|".join(str(part) for part in [public.get("vendor")] + where)
    return public


def plan_names(plan):
    """['app.0002_x', ...] in execution order; backwards steps are marked with a leading '-'."""
    return [("-" if step.get("backwards") else "") + step["migration"] for step in plan]


def _in_apps(name, apps):
    return not apps or name.split(".", 1)[0].lstrip("-") in apps


def migration_facts(result, apps=None):
    """The facts ``django_showmigrations`` returns, optionally limited to ``apps``."""
    facts = result["facts"]
    wanted = set(apps or [])
    app_entries = dict(
        (app, [{"name": m["name"], "applied": m["applied"], "applied_at": m["applied_at"]}
               for m in migrations])
        for app, migrations in facts["apps"].items()
        if not wanted or app in wanted
    )
    facts_out = {
        "django_version": result["django_version"],
        # How the project was started: through its manage.py, or the fallback (and why).
        "boot": result.get("boot"),
        "database": public_database(result["database"]),
        "apps": app_entries,
        "plan": [n for n in plan_names(facts["plan"]) if _in_apps(n, wanted)],
        "unapplied_count": sum(
            1 for migrations in app_entries.values() for m in migrations if not m["applied"]
        ),
        "ghosts": [g for g in facts["ghosts"] if _in_apps(g, wanted)],
        "conflicts": dict((a, v) for a, v in facts["conflicts"].items() if not wanted or a in wanted),
        "inconsistent": [
            i for i in facts["inconsistent"] if _in_apps(i["migration"], wanted)
        ],
        "pending_changes": dict(
            (a, v) for a, v in facts.get("pending_changes", {}).items() if not wanted or a in wanted
        ),
        # The system checks manage.py migrate runs (not per app: they gate every migrate).
        "checks": list(facts.get("checks") or []),
    }
    # What each pending operation will do to its live table (risk.py).
    facts_out["risks"] = [item for item in risk.plan_risks(facts["plan"], facts.get("server"), facts.get("table_stats"))
                          if _in_apps(item["migration"], wanted)]
    facts_out["risk"] = risk.highest([item["level"] for item in facts_out["risks"]])
    # Applied migrations changed since their checksum was recorded (introspect.checksum_facts).
    facts_out["edited"] = [name for name in edited_migrations(facts) if _in_apps(name, wanted)]
    facts_out["checksums"] = checksum_summary(facts)
    if result.get("boot_note"):
        facts_out["boot_note"] = result["boot_note"]
    return facts_out


def edited_migrations(facts):
    """'app.name' of the applied migrations whose checksum differs from the one recorded when
    they were applied (none when tracking is off or not started)."""
    return [item["migration"] for item in (facts.get("checksums") or {}).get("edited") or []]


def checksum_summary(facts):
    """Whether applied migrations are checked for edits, and how many: ``enabled`` (not
    track_checksums false), ``active`` (our table exists: a guarded migrate recorded the
    baseline), ``recorded``/``unrecorded`` (applied migrations with and without a record yet),
    ``error`` (reading failed)."""
    found = facts.get("checksums") or {}
    summary = {"enabled": bool(found.get("enabled")), "active": bool(found.get("active")),
               "table": found.get("table") or CHECKSUM_TABLE,
               "recorded": found.get("recorded", 0), "unrecorded": found.get("unrecorded", 0)}
    for key in ("error", "write_error", "errors", "written"):
        if found.get(key):
            summary[key] = found[key]
    return summary


def serious_checks(facts):
    """The system check messages that stop ``manage.py migrate`` (ERROR and CRITICAL)."""
    return [message for message in facts.get("checks") or [] if message.get("serious")]


def check_text(message):
    """One check message as Django prints it: ``obj: (id) message HINT: hint``."""
    text = message.get("message") or ""
    if message.get("id"):
        text = "(%s) %s" % (message["id"], text)
    if message.get("obj"):
        text = "%s: %s" % (message["obj"], text)
    if message.get("hint"):
        text += " HINT: %s" % message["hint"]
    return text


def lossy_steps(plan, applied_rows=None):
    """Steps that lose data: every backwards step, and forward RemoveField/DeleteModel.

    A removal in an app none of whose migrations is applied yet loses nothing: its tables are
    created by this same plan (a first deploy onto an empty database). ``applied_rows`` are the
    'app.name' rows of django_migrations; None means "assume every app has data".
    """
    apps_with_data = None
    if applied_rows is not None:
        apps_with_data = set(row.split(".", 1)[0] for row in applied_rows)
    lossy = []
    for step in plan:
        if step["backwards"]:
            lossy.append({"migration": step["migration"],
                          "reason": "unapplies the migration (its data changes are undone)"})
            continue
        if apps_with_data is not None and step["migration"].split(".", 1)[0] not in apps_with_data:
            continue
        removals = [op["description"] for op in step["operations"]
                    if op["type"] in LOSSY_FORWARD_OPERATIONS]
        if removals:
            lossy.append({"migration": step["migration"], "reason": "; ".join(removals)})
    return lossy


def irreversible_steps(plan):
    """Backwards steps holding an operation that cannot be reversed (RunPython/RunSQL without
    a reverse, or any operation Django marks irreversible)."""
    found = []
    for step in plan:
        if not step["backwards"]:
            continue
        ops = [op["description"] for op in step["operations"] if not op["reversible"]]
        if ops:
            found.append({"migration": step["migration"], "operations": ops})
    return found


def applied_set(result):
    """The set of 'app.name' the django_migrations table holds."""
    return set(result["facts"]["applied_rows"])


def plan_problems(facts, plan, complete=True):
    """What is wrong with the migration state ``facts`` (as migration_facts returns them, or
    introspect's) after ``plan`` ran: a step not applied (or a backwards step still applied),
    with ``complete`` anything left to migrate, model changes without a migration, conflicts.
    Pure; the deploy's verification on every host and the guard's after its migrate."""
    applied = set(facts.get("applied_rows") or _applied_names(facts))
    problems = []
    for step in plan:
        if step["backwards"] and step["migration"] in applied:
            problems.append("%s is still applied" % step["migration"])
        if not step["backwards"] and step["migration"] not in applied:
            problems.append("%s was not applied" % step["migration"])
    # migration_facts gives the plan as names, introspect as steps.
    names = [n if isinstance(n, str) else plan_names([n])[0] for n in facts.get("plan") or []]
    left = [n for n in names if not n.startswith("-")] if complete else []
    if left:
        problems.append("not applied: %s" % ", ".join(left))
    pending = facts.get("pending_changes") or {}
    if pending:
        problems.append("makemigrations --check is not clean: %s" % "; ".join(
            "%s: %s" % (app, ", ".join(ops)) for app, ops in sorted(pending.items())))
    for app, leaves in sorted((facts.get("conflicts") or {}).items()):
        problems.append("conflicting migrations in %s: %s" % (app, ", ".join(leaves)))
    return problems


def _applied_names(facts):
    return ["%s.%s" % (app, m["name"]) for app, migrations in facts["apps"].items()
            for m in migrations if m["applied"]]


# Operations whose effect the plan cannot show: they run the project's code or raw SQL.
CODE_OPERATIONS = ("RunPython", "RunSQL")


def code_steps(plan):
    """Steps that run code (RunPython) or raw SQL (RunSQL): what they do to the data is only
    known once they ran (see ``row_changes``)."""
    found = []
    for step in plan:
        ops = [op for op in step["operations"] if op["type"] in CODE_OPERATIONS]
        if ops:
            found.append({"migration": step["migration"],
                          "operations": ["%s: %s" % (op["type"], op["description"])
                                         for op in ops]})
    return found


def row_changes(before, after, ignore=("django_migrations", CHECKSUM_TABLE)):
    """Tables whose row count changed: ``before`` is a snapshot's ``tables`` ({table:
    {"rows": n, ...}}), ``after`` the counts ({table: n}); a table only on one side counts
    as 0 rows on the other (and shows None there). django_migrations and our checksums'
    table, which every migrate writes, are left out."""
    counts = dict((table, entry["rows"]) for table, entry in (before or {}).items())
    changes = []
    for table in sorted(set(counts) | set(after or {})):
        if table in ignore:
            continue
        old, new = counts.get(table), (after or {}).get(table)
        if (old or 0) != (new or 0):
            changes.append({"table": table, "before": old, "after": new,
                            "change": (new or 0) - (old or 0)})
    return changes
