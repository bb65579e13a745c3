#!/usr/bin/env python3
"""Before/after for the backup store: BackupStore at an older commit against the current one
and the like-for-like raw side of backup.py, interleaved in one run.

The old ``backups.py`` is read with ``git show <commit>:plugins/module_utils/backups.py`` and
imported next to the current collection (it must be import-compatible with today's
compression/engines/errors/runner modules, as 7cb3be2's is). Small sizes: this separates the
effect of a change from the noise, it is not the reported benchmark.

    .venv/bin/python benchmarks/backup_before_after.py --before 7cb3be2 --size-mb 128 --repeat 4
"""

import argparse
import importlib.util
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time

import backup as bench  # benchmarks/backup.py: generators, raw commands, run_order
from ansible_collections.dbsafe.django.plugins.module_utils import backups as current


def load_old_store(commit, directory):
    source = subprocess.run(["git", "-C", bench.REPO, "show",
                             "%s:plugins/module_utils/backups.py" % commit],
                            stdout=subprocess.PIPE, check=True).stdout
    path = os.path.join(directory, "old_backups.py")
    with open(path, "wb") as handle:
        handle.write(source)
    spec = importlib.util.spec_from_file_location("old_backups", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def store_side(module, engine, runner, work):
    def run():
        directory = tempfile.mkdtemp(dir=work)
        try:
            store = module.BackupStore(directory, runner)
            t_dump, manifest = bench.timed(store.write, "b", engine)
            t_restore, _ = bench.timed(store.restore, manifest["path"], engine)
            return t_dump, t_restore
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return run


def raw_side(dump, restore, work, env=None):
    def run():
        directory = tempfile.mkdtemp(dir=work)
        target = os.path.join(directory, "dump")
        try:
            start = time.perf_counter()
            bench.sh(dump.format(out=bench.q(target)), env)
            bench.fsync_paths(target)
            t_dump = time.perf_counter() - start
            t_restore, _ = bench.timed(bench.sh, restore.format(src=bench.q(target)), env)
            return t_dump, t_restore
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return run


def compare(label, sides, repeat, settle=None):
    times = {name: [] for name in sides}
    for index in range(repeat):
        for name in bench.run_order(list(sides), index):
            if settle:
                settle()
            times[name].append(sides[name]())
            bench.log("%s rep %d %s: dump %.2f restore %.2f" % ((label, index + 1, name)
                                                                + times[name][-1]))
    for top, bottom in (("old", "raw"), ("new", "raw"), ("new", "old")):
        pairs = [sum(a) / sum(b) for a, b in zip(times[top], times[bottom])]
        print("%s %s/%s total: median %.2f (pairs %s)" % (
            label, top, bottom, statistics.median(pairs), ", ".join("%.2f" % r for r in pairs)))
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the commit whose BackupStore is 'old'")
    parser.add_argument("--size-mb", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--engines", default="postgresql,mysql,sqlite")
    parser.add_argument("--json")
    args = parser.parse_args()
    defaults = bench_args()
    work = tempfile.mkdtemp(prefix="dbsafe-before-after-")
    runner = bench.Runner(bench.run_command)
    results = {}
    try:
        old = load_old_store(args.before, work)
        engines = args.engines.split(",")
        if "postgresql" in engines:
            db = bench.Postgres(defaults)
            try:
                db.create()
                db.generate(args.size_mb * bench.MB)
                engine = engine_of(runner, "postgresql", db.db, db.host, db.port, db.user,
                                   db.password)
                restore = ("pg_restore --clean --if-exists --no-owner --exit-on-error -w "
                           "--single-transaction -d %s {src}" % bench.q(db.db))
                results["pg-custom"] = compare("pg-custom", {
                    "old": store_side(old, engine, runner, work),
                    "new": store_side(current, engine, runner, work),
                    "raw": raw_side("pg_dump -w -Fc -d %s > {out}" % bench.q(db.db), restore,
                                    work, db.env)}, args.repeat, db.settle)
            finally:
                db.drop()
        if "mysql" in engines:
            db = bench.Mariadb(defaults)
            try:
                db.create()
                db.generate(args.size_mb * bench.MB)
                engine = engine_of(runner, "mysql", db.db, db.host, db.port, db.user,
                                   db.password)
                dump = ("%s %s --single-transaction --routines --triggers --events --hex-blob "
                        "--default-character-set=utf8mb4 --no-tablespaces "
                        "--max-allowed-packet=1G %s | zstd -q -c -3 > {out}"
                        % (db.dump, db.conn_args, bench.q(db.db)))
                restore = "zstd -q -d -c {src} | %s %s --max-allowed-packet=1G %s" % (
                    db.client, db.conn_args, bench.q(db.db))
                results["mysql"] = compare("mysql", {
                    "old": store_side(old, engine, runner, work),
                    "new": store_side(current, engine, runner, work),
                    "raw": raw_side(dump, restore, work, db.env)}, args.repeat)
            finally:
                db.drop()
        if "sqlite" in engines:
            path = os.path.join(work, "bench.sqlite3")
            fill_sqlite(path, args.size_mb * bench.MB)
            engine = engine_of(runner, "sqlite", path)
            copy = bench.q(os.path.join(work, "copy.sqlite3"))
            results["sqlite"] = compare("sqlite", {
                "old": store_side(old, engine, runner, work),
                "new": store_side(current, engine, runner, work),
                "raw": raw_side("sqlite3 %s '.backup %s' && zstd -q -c -3 %s > {out} && rm %s"
                                % (bench.q(path), copy, copy, copy),
                                "zstd -q -d -c {src} > %s && sqlite3 %s '.restore %s' && rm %s"
                                % (copy, bench.q(path), copy, copy), work)}, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(results, handle)


def bench_args():
    """The connection defaults of backup.py (local servers; passwords from the environment)."""
    class Defaults:
        pg_host, pg_port, pg_user = "127.0.0.1", 5432, "postgres"
        pg_password = os.environ.get("PGPASSWORD")
        my_host, my_port, my_user = "127.0.0.1", 3306, "root"
        my_password = os.environ.get("MYSQL_PWD")
    return Defaults


def engine_of(runner, engine, name, host=None, port=None, user=None, password=None):
    params = {"engine": engine, "name": name}
    if host:
        params.update(host=host, port=port, user=user, password=password)
    return bench.engine_for(bench.Connection.from_params(params), runner)


def fill_sqlite(path, target_bytes):
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE orders (id integer PRIMARY KEY, customer int NOT NULL, "
                       "note text NOT NULL, payload blob NOT NULL, created text NOT NULL);"
                       "CREATE INDEX orders_customer ON orders (customer);")
    rows = 0
    while os.path.getsize(path) < target_bytes:
        conn.execute("WITH RECURSIVE g(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM g WHERE "
                     "n < ?) INSERT INTO orders SELECT n, (n * 7919) % 100000, "
                     "hex(randomblob(48)), randomblob(64), datetime(1577836800 + n * 17, "
                     "'unixepoch') FROM g", (rows + 1, rows + 100000))
        conn.commit()
        rows += 100000
    conn.close()


if __name__ == "__main__":
    main()
