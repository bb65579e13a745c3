#!/usr/bin/env python3
"""P7 (issue 17): the longest wait of a concurrent reader during a migrate that met a lock.

Not a test: a script a person runs. On PostgreSQL and MariaDB, per pair and side: the demo project
migrated, books filled, one pending migration adding a nullable column to books_book; another
session opens a transaction that reads books_book and keeps it ``--hold`` seconds (the report
job, the worker left in a transaction); a third session runs ``SELECT count(*) FROM books_book``
in a loop. The sides:

* ``bare``: ``manage.py migrate`` - its ALTER TABLE queues behind the transaction, and every
  query on the table queues behind the ALTER until the transaction ends;
* ``guarded``: ``django_migrate_guarded`` with ``db_lock_timeout`` (``--lock-wait``, 2 s) and the
  default retries.

The figure is the reader's longest single query (goal: <= db_lock_timeout + 1 s), plus how long
the migrate took; each side gets a fresh database. Pairs run in rotating order (paired.py).

    .venv/bin/python benchmarks/lock_wait.py --repeat 3 --json /tmp/p7.json
"""

import argparse
import statistics
import tempfile
import time

from paired import log, machine, run_pairs, table, write_json

import demo  # tests/integration/demo.py
from ansible_run import run_module
from databases import create_mysql, create_postgres, drop_mysql, drop_postgres
from test_lock_waits import ADD_COLUMN, Blocker, Reader
from test_risks import fill_books

ENGINES = {"postgresql": (create_postgres, drop_postgres), "mysql": (create_mysql, drop_mysql)}


def prepared(engine, workdir):
    create, drop = ENGINES[engine]
    database = create()
    project = demo.copy_demo(tempfile.mkdtemp(dir=workdir))
    demo.manage(project, database, "migrate")
    fill_books(project, database)
    demo._add_model_field(project, "lock_note = models.TextField(null=True)")
    demo._write_migration(project, "%s_lock_wait" % demo.next_number(project),
                          demo.leaf_migration(project), ADD_COLUMN)
    return {"engine": engine, "database": database, "project": project, "drop": drop,
            "workdir": workdir}


def measured(context, migrate, hold):
    database = context["database"]
    try:
        blocker = Blocker(database, seconds=hold)
        reader = Reader(database)
        reader.start()
        started = time.monotonic()
        try:
            outcome = migrate(context)
        finally:
            migrate_seconds = time.monotonic() - started
            longest = reader.longest()
            blocker.stop()
        return dict(outcome, longest_read=round(longest, 3), migrate_seconds=round(migrate_seconds, 3),
                    reads=len(reader.waits), seconds=longest)
    finally:
        context["drop"](database)


def bare(context):
    demo.manage(context["project"], context["database"], "migrate")
    return {"retries": None}


def guarded(lock_wait):
    def run(context):
        result = run_module("django_migrate_guarded", demo.module_args(
            context["project"], context["database"], backup_dir=tempfile.mkdtemp(dir=context["workdir"]),
            db_lock_timeout=lock_wait))
        if result.get("failed"):
            raise SystemExit("the guarded migrate failed: %s" % result.get("msg"))
        return {"retries": len(result.get("lock_waits") or [])}
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--hold", type=float, default=12.0, help="seconds the blocking transaction stays open")
    parser.add_argument("--lock-wait", type=int, default=2, help="db_lock_timeout of the guarded side")
    parser.add_argument("--engines", default="postgresql,mysql")
    parser.add_argument("--json")
    args = parser.parse_args()
    report = {"machine": machine(), "hold": args.hold, "lock_wait": args.lock_wait, "engines": {}}
    rows = []
    with tempfile.TemporaryDirectory(prefix="dbsafe-p7-") as workdir:
        for engine in args.engines.split(","):
            sides = {"bare": lambda context: measured(context, bare, args.hold),
                     "guarded": lambda context: measured(context, guarded(args.lock_wait), args.hold)}
            pairs = run_pairs(sides, args.repeat, setup=lambda name, e=engine: prepared(e, workdir),
                              label="P7 %s" % engine)
            report["engines"][engine] = pairs
            write_json(args.json, report)
            for side in ("bare", "guarded"):
                longest = [pair[side]["longest_read"] for pair in pairs]
                rows.append([engine, side, "%.2f" % statistics.median(longest), "%.2f" % max(longest),
                             "%.1f" % statistics.median(pair[side]["migrate_seconds"] for pair in pairs),
                             "-" if side == "bare" else ", ".join(str(pair[side]["retries"]) for pair in pairs),
                             "-" if side == "bare" else ("met" if max(longest) <= args.lock_wait + 1 else "MISSED")])
    print(table(["engine", "side", "longest read, median (s)", "longest read, max (s)",
                 "migrate, median (s)", "retries per run", "goal <= db_lock_timeout + 1 s"], rows))
    log("machine: %s" % report["machine"])


if __name__ == "__main__":
    main()
