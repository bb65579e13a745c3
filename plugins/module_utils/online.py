# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Online migrations: whether a plan may run while the application serves, and the proof that
an online migrate which failed was undone with no row lost. Pure, no I/O.

Online, the running (old) code keeps reading and writing during the migrate, so:

- every operation must be ``safe`` for it (risk.py: nothing the old code trips over, no lock
  that grows with the table), forwards only, and reversible by Django - a failure is undone
  by the reverse operations, not by restoring the backup, which would throw away the rows the
  application wrote meanwhile;
- "as before" after an undo means the schema and django_migrations equal the state before
  the run and no table has fewer rows than before (the application may have added rows; a
  table with fewer rows lost some).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbsafe.django.plugins.module_utils import risk
from ansible_collections.dbsafe.django.plugins.module_utils.snapshots import diff_snapshots, summarize


def blockers(plan, risks):
    """Why ``plan`` cannot run while the application serves: one sentence per operation (or
    step) that needs the stop window; empty when it can. ``risks`` as risk.py describes the
    plan's operations."""
    reasons = []
    for item in risks or []:
        if risk.rank(item["level"]) > risk.rank("safe"):
            reasons.append("%s %s on %s is %s: %s" % (
                item["migration"], item["operation"], item.get("table") or "-", item["level"],
                item["reasons"][0] if item.get("reasons") else "see the risk report"))
    for step in plan or []:
        if step["backwards"]:
            reasons.append("%s is unapplied (a backwards migration): the running code may still "
                           "use what it removes" % step["migration"])
            continue
        for operation in step["operations"]:
            if not operation["reversible"]:
                reasons.append("%s %s has no reverse: a failure could only be undone by restoring "
                               "the backup, which loses the rows written meanwhile"
                               % (step["migration"], operation["description"]))
    return reasons


# Operations that only remove what the new code no longer uses (as django-syzygy infers its
# post-deploy stage): the contract stage of a split deploy.
REMOVALS = ("RemoveField", "DeleteModel")


def _is_removal(operation):
    return operation.get("type") in REMOVALS or (operation.get("detail") or {}).get("class") in REMOVALS


def stages(plan, risks):
    """Split ``plan`` for an online deploy in two stages: ``expand`` (runs while the previous
    code serves, before the rollout: every operation safe for it and reversible) and
    ``contract`` (runs once no host runs the previous code: migrations of removals only, or
    marked ``after`` by django-safemigrate / django-syzygy). ``blockers`` says why the plan
    cannot be split (the stop window then): a removal mixed with other operations, an expand
    migration that depends on a contract one, an operation neither stage may run online.
    Returns {"expand": [names], "contract": [names], "blockers": [sentences]}."""
    by_migration = {}
    for item in risks or []:
        by_migration.setdefault(item["migration"], []).append(item)
    expand, contract, found = [], [], []
    for step in plan or []:
        name = step["migration"]
        removals = [op for op in step["operations"] if _is_removal(op)]
        marker = step.get("stage_marker")
        if not step["backwards"] and (marker == "after" or (
                removals and len(removals) == len(step["operations"]) and marker != "before")):
            contract.append(name)
            continue
        if removals and not step["backwards"]:
            if marker == "before":
                text = ("%s is marked to run before the deploy but removes (%s): the previous code may use it, "
                        "and a failure could not bring its data back")
            else:
                text = ("%s removes (%s) beside other operations: the removal must wait until no host runs "
                        "the previous code, the rest must not - split it into two migrations")
            found.append(text % (name, ", ".join(op["description"] for op in removals)))
            continue
        waiting = [dependency for dependency in step.get("dependencies") or [] if dependency in contract]
        if waiting:
            found.append("%s depends on %s, which may only run once no host runs the previous code: the "
                         "plan cannot be split" % (name, ", ".join(waiting)))
            continue
        step_blockers = blockers([step], by_migration.get(name, []))
        if step_blockers:
            found.extend(step_blockers)
            continue
        expand.append(name)
    return {"expand": expand, "contract": contract, "blockers": found}


def stage_targets(plan, names):
    """[{app, migration}]: `migrate APP MIGRATION` per app, to its last migration among
    ``names`` in plan order - the apps in the order their first such migration comes."""
    last, order = {}, []
    for step in plan:
        if step["migration"] in names:
            app = step["migration"].split(".", 1)[0]
            if app not in last:
                order.append(app)
            last[app] = step["migration"].split(".", 1)[1]
    return [{"app": app, "migration": last[app]} for app in order]


def undo_problems(before, live, counts_after):
    """What keeps the database from being "as before" after an online undo: ``before`` is the
    snapshot taken before the run (its ``tables`` hold the row counts), ``live`` a schema
    snapshot after the undo, ``counts_after`` {table: rows} read after it. Schema and
    django_migrations must be equal; a table may have gained rows (the application wrote
    them), never lost any. Sentences; empty: proven."""
    problems = summarize(diff_snapshots(before, live, data=False), limit=5)
    for table, entry in sorted((before.get("tables") or {}).items()):
        now = (counts_after or {}).get(table)
        if now is None:
            problems.append("%s: its row count could not be read after the undo" % table)
        elif now < entry["rows"]:
            problems.append("%s: %d rows before the run, %d after the undo (%d lost)"
                            % (table, entry["rows"], now, entry["rows"] - now))
    return problems


def grown(before, counts_after):
    """{table: rows added} - the application's writes during the run, kept by the undo."""
    added = {}
    for table, entry in sorted((before.get("tables") or {}).items()):
        now = (counts_after or {}).get(table)
        if now is not None and now > entry["rows"]:
            added[table] = now - entry["rows"]
    return added
