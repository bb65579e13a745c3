#!/usr/bin/env python3
"""The SQLite content snapshot (``SqliteEngine.snapshot()``, the guard's restore proof) of this
checkout against another checkout's, on one generated table of ``--rows`` books (the rows P2's
large data set adds). Not a test: a script a person runs.

Each run is a fresh process importing its own checkout's collection (through its
``.collections`` link), so the two versions never share a module; pairs rotate their order.

    git worktree add /tmp/before <commit>
    mkdir -p /tmp/before/.collections/ansible_collections/dbsafe
    ln -s /tmp/before /tmp/before/.collections/ansible_collections/dbsafe/django
    .venv/bin/python benchmarks/sqlite_snapshot.py --before /tmp/before --rows 500000 --repeat 5
"""

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile

from deploy import add_books
from paired import REPO, log, machine, run_pairs, summary, table

# One snapshot, timed inside the child: the interpreter's start and imports are not the
# snapshot's. Prints seconds, then the table's row count and hash.
CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.dbsafe.django.plugins.module_utils.engines.sqlite import SqliteEngine

class Connection:
    engine = "sqlite"
    name = sys.argv[2]
    def describe(self):
        return self.name

engine = SqliteEngine(Connection(), None)
started = time.perf_counter()
tables = engine.snapshot()["tables"]
print(time.perf_counter() - started, tables["books_book"]["rows"], tables["books_book"]["hash"])
"""

BOOKS = ('CREATE TABLE "books_book" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, '
         '"title" varchar(200) NOT NULL, "isbn" varchar(13) NOT NULL, "cover" varchar(100) '
         'NOT NULL, "pages" integer unsigned NULL CHECK ("pages" >= 0), "slug" varchar(200) '
         'NOT NULL, "author_id" bigint NULL)')


def make_database(path, rows):
    """The books table of the demo with ``rows`` generated books, as benchmarks/deploy.py
    adds them."""
    conn = sqlite3.connect(path)
    try:
        conn.execute(BOOKS)
        conn.commit()
    finally:
        conn.close()
    add_books(path, rows)


def side(checkout, database):
    def run(_context):
        out = subprocess.run([sys.executable, "-c", CHILD,
                              os.path.join(checkout, ".collections"), database],
                             check=True, stdout=subprocess.PIPE, universal_newlines=True)
        seconds, rows, digest = out.stdout.split()
        return {"seconds": float(seconds), "rows": int(rows), "hash": digest}
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the other checkout (a git worktree)")
    parser.add_argument("--rows", type=int, default=500000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dbsafe-snapshot-bench-") as work:
        database = os.path.join(work, "books.sqlite3")
        log("generating %d books" % args.rows)
        make_database(database, args.rows)
        size = os.path.getsize(database) / 2 ** 20
        pairs = run_pairs({"after": side(REPO, database), "before": side(args.before, database)},
                          args.repeat, label="snapshot")
    result = summary(pairs, "after", "before")
    print("SQLite snapshot of %d rows (%.1f MiB), %s" % (args.rows, size, machine()))
    print(table(["pair", "after s", "before s", "after / before"],
                [[index + 1, pair["after"]["seconds"], pair["before"]["seconds"],
                  "%.3f" % (pair["after"]["seconds"] / pair["before"]["seconds"])]
                 for index, pair in enumerate(pairs)]))
    print("| median | %.2f | %.2f | **%.3f** |" % (result["median_ours"], result["median_baseline"],
                                                  result["median_ratio"]))
    hashes = set((side_run["rows"], side_run["hash"]) for pair in pairs
                 for side_run in pair.values())
    print("row count and hash per version: %s" % sorted(hashes))


if __name__ == "__main__":
    main()
