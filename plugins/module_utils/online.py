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
