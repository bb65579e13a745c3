#!/usr/bin/env python3
"""Backup/restore benchmark: dbsafe.django's own code path against the raw tools.

Not a test: a script a person runs, on a machine with PostgreSQL and MariaDB/MySQL servers it
may create and drop databases on. For each engine it generates a throw-away database with a
random name (``dbsafe_bench_<hex>``) of about ``--size-mb`` (SQLite: ``--sqlite-size-mb``),
then measures, interleaved in one run, ``--repeat`` pairs of

* ours: ``BackupStore.write()`` + ``BackupStore.restore()`` (the code ``db_backup`` runs,
  including its verification: re-read + sha256 + decompress/format test on write, and the
  verify again before a restore: full, or size + sha256 for a custom archive restored in one
  stream), and
* raw: the same dump/restore tools with the same format and compression, by hand with shell
  pipes, with the same durability and atomicity as ours: the dump file is fsynced (``sync
  FILE``, timed on its own so the ratio without it can be given too) and a single-stream
  PostgreSQL restore runs as one transaction (``pg_restore --single-transaction``),

and for PostgreSQL also the directory format with two jobs against single-stream. The order
changes every repetition (``run_order``); PostgreSQL is vacuumed and checkpointed, untimed,
before each variant. It reports the medians of each side and the median of the per-pair
ratios ours/raw; a single absolute time is no claim on a noisy machine. The databases (and
backup files) are removed afterwards, also on failure.
``--json`` is rewritten after every repetition, so an interrupted run keeps what it measured;
``--render FILE.json`` turns such a file into the Markdown tables of docs/benchmarks.md
without running anything.

    .venv/bin/python benchmarks/backup.py                       # 1 GiB PG + MariaDB, 200 MiB SQLite
    .venv/bin/python benchmarks/backup.py --size-mb 64 --repeat 3 --engines postgresql
    .venv/bin/python benchmarks/backup.py --render /tmp/bench.json --markdown /tmp/bench.md
"""

import argparse
import datetime
import json
import os
import platform
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, ".collections")
sys.path.insert(0, COLLECTIONS)

try:
    from ansible_collections.dbsafe.django.plugins.module_utils.backups import BackupStore
    from ansible_collections.dbsafe.django.plugins.module_utils.connection import Connection
    from ansible_collections.dbsafe.django.plugins.module_utils.engines.registry import engine_for
    from ansible_collections.dbsafe.django.plugins.module_utils.runner import Runner
except ImportError as error:  # pragma: no cover - a hint for people running it by hand
    sys.exit("cannot import the collection (%s): run scripts/bootstrap first so that "
             "%s/ansible_collections/dbsafe/django exists" % (error, COLLECTIONS))

MB = 1024 * 1024


def run_command(args, environ_update=None, data=None, binary_data=False, cwd=None,
                check_rc=False):
    """A stand-in for AnsibleModule.run_command (as in tests/integration/runner_double.py),
    without a timeout: big directory-format dumps run through ``run``."""
    env = dict(os.environ)
    env.update(environ_update or {})
    if data is not None and not binary_data:
        data = (data + "\n").encode("utf-8")
    proc = subprocess.run(args, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env, cwd=cwd, close_fds=True, check=False)
    return (proc.returncode, proc.stdout.decode("utf-8", "replace"),
            proc.stderr.decode("utf-8", "replace"))


def log(message):
    print("[%s] %s" % (datetime.datetime.now().strftime("%H:%M:%S"), message), flush=True)


def sh(command, env=None):
    """Run a shell pipeline (the 'raw' side); every stage's status counts (pipefail)."""
    environ = dict(os.environ)
    environ.update(env or {})
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", command], env=environ,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise RuntimeError("%s\nexited %s: %s" % (command, proc.returncode,
                                                 proc.stderr.decode("utf-8", "replace")[-2000:]))
    return proc.stdout.decode("utf-8", "replace")


def timed(func, *args, **kwargs):
    start = time.perf_counter()
    result = func(*args, **kwargs)
    return time.perf_counter() - start, result


def q(value):
    return "'" + str(value).replace("'", "'\\''") + "'"


def load_average():
    return " ".join("%.2f" % value for value in os.getloadavg())


def tool_versions(tools):
    """The first line of ``<tool> --version`` for each tool (what the numbers were run with)."""
    lines = []
    for tool in tools:
        proc = subprocess.run([tool, "--version"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, check=False)
        lines.append((proc.stdout.decode("utf-8", "replace").strip().splitlines() or [tool])[0])
    return lines


def size_of(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(root, name))
                   for root, _dirs, names in os.walk(path) for name in names)
    return os.path.getsize(path)


def run_order(items, index):
    """The order of repetition ``index``: rotated by ``index // 2`` and reversed on odd
    repetitions, so neighbours swap places every repetition (ab, ba, ba, ab, ...; abcde,
    edcba, bcdea, ...) instead of one always running right before the other."""
    shift = (index // 2) % len(items)
    order = items[shift:] + items[:shift]
    return order[::-1] if index % 2 else order


def fill(size, insert, batch, max_step, target_bytes):
    """Call ``insert(rows)`` until ``size()`` reaches ``target_bytes``: one batch to learn the
    bytes per row, then steps of at most ``max_step`` rows."""
    base = size()
    insert(batch)
    per_row = max(1.0, (size() - base) / float(batch))
    while True:
        missing = target_bytes - size()
        if missing <= 0:
            return
        rows = max(10000, int(missing / per_row))
        while rows > 0:
            step = min(rows, max_step)
            insert(step)
            rows -= step


def fsync_paths(target):
    """``sync FILE...`` (coreutils: fsync of each) for a dump file, or a dump directory's files
    and the directory: what makes the raw side as durable as ours."""
    paths = [target]
    if os.path.isdir(target):
        paths = [os.path.join(root, name) for root, _dirs, names in os.walk(target)
                 for name in names] + [target]
    sh("sync -- " + " ".join(q(path) for path in paths))


# -- the engines -------------------------------------------------------------------------


class Postgres:
    name = "postgresql"

    def __init__(self, args):
        self.host, self.port, self.user = args.pg_host, args.pg_port, args.pg_user
        self.db = "dbsafe_bench_" + secrets.token_hex(4)
        self.env = {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user}
        if args.pg_password:
            self.env["PGPASSWORD"] = args.pg_password
        self.password = args.pg_password
        self.created = False

    def psql(self, sql, database=None):
        return sh("psql -X -q -w -At -v ON_ERROR_STOP=1 -d %s -c %s"
                  % (q(database or self.db), q(sql)), self.env)

    def create(self):
        self.psql("CREATE DATABASE %s" % self.db, "postgres")
        self.created = True

    def drop(self):
        if self.created:
            self.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.db, "postgres")
            self.created = False

    def size(self):
        return int(self.psql("SELECT pg_database_size(current_database())"))

    def settle(self):
        # A freshly restored database has no hint bits or visibility map yet, and autovacuum
        # and the checkpointer would work on it during the next variant's dump.
        self.psql("VACUUM ANALYZE")
        self.psql("CHECKPOINT")

    def generate(self, target_bytes):
        # Two tables of similar size (so two jobs have two things to do), text from md5()
        # (hard to compress), ints, timestamps, bytea, secondary indexes.
        self.psql("""
CREATE TABLE orders (id bigint PRIMARY KEY, customer int NOT NULL, status text NOT NULL,
  note text NOT NULL, created timestamptz NOT NULL);
CREATE INDEX orders_customer ON orders (customer);
CREATE INDEX orders_created ON orders (created);
CREATE TABLE blobs (id bigint PRIMARY KEY, order_id bigint NOT NULL, kind int NOT NULL,
  payload bytea NOT NULL, label text NOT NULL, at timestamptz NOT NULL);
CREATE INDEX blobs_order ON blobs (order_id);
""")
        batch, start = 50000, 0

        def insert(count):
            nonlocal start
            self.psql("""
INSERT INTO orders SELECT g, (g * 7919) %% 100000, (ARRAY['new','paid','sent','done'])[g %% 4 + 1],
  md5(g::text) || md5((g + 1)::text) || md5((g * 3)::text),
  timestamptz '2020-01-01' + g * interval '17 seconds'
  FROM generate_series(%d::bigint, %d) g;
INSERT INTO blobs SELECT g, g, g %% 13, decode(md5(g::text || 'a') || md5(g::text || 'b')
  || md5(g::text || 'c') || md5(g::text || 'd'), 'hex'), 'label ' || md5(g::text || 'l'),
  timestamptz '2021-01-01' + g * interval '3 seconds'
  FROM generate_series(%d::bigint, %d) g;
""" % (start + 1, start + count, start + 1, start + count))
            start += count

        fill(self.size, insert, batch, 500000, target_bytes)
        self.psql("VACUUM ANALYZE")
        return start * 2


class Mariadb:
    name = "mysql"

    def __init__(self, args):
        self.host, self.port, self.user = args.my_host, args.my_port, args.my_user
        self.password = args.my_password
        self.db = "dbsafe_bench_" + secrets.token_hex(4)
        self.env = {"MYSQL_PWD": self.password} if self.password else {}
        self.created = False
        self.client = shutil.which("mariadb") or "mysql"
        self.dump = shutil.which("mariadb-dump") or "mysqldump"

    @property
    def conn_args(self):
        return "--protocol=TCP -h %s -P %d -u %s" % (q(self.host), self.port, q(self.user))

    def sql(self, sql, database=True):
        return sh("%s %s -N -B %s -e %s" % (self.client, self.conn_args,
                                            q(self.db) if database else "", q(sql)), self.env)

    def create(self):
        self.sql("CREATE DATABASE `%s` CHARACTER SET utf8mb4" % self.db, database=False)
        self.created = True

    def drop(self):
        if self.created:
            self.sql("DROP DATABASE IF EXISTS `%s`" % self.db, database=False)
            self.created = False

    def size(self):
        self.sql("ANALYZE TABLE orders, blobs")
        out = self.sql("SELECT COALESCE(SUM(data_length + index_length), 0) FROM "
                       "information_schema.tables WHERE table_schema = DATABASE()")
        return int(out.strip())

    def generate(self, target_bytes):
        self.sql("""
CREATE TABLE orders (id bigint PRIMARY KEY, customer int NOT NULL, status varchar(8) NOT NULL,
  note varchar(200) NOT NULL, created datetime(6) NOT NULL, KEY orders_customer (customer),
  KEY orders_created (created)) ENGINE=InnoDB;
CREATE TABLE blobs (id bigint PRIMARY KEY, order_id bigint NOT NULL, kind int NOT NULL,
  payload varbinary(128) NOT NULL, label varchar(80) NOT NULL, at datetime(6) NOT NULL,
  KEY blobs_order (order_id)) ENGINE=InnoDB;
""")
        batch, start = 50000, 0

        def insert(count):
            nonlocal start
            self.sql("""
INSERT INTO orders SELECT seq, (seq * 7919) %% 100000, ELT(seq %% 4 + 1, 'new','paid','sent','done'),
  CONCAT(md5(seq), md5(seq + 1), md5(seq * 3)),
  TIMESTAMP('2020-01-01') + INTERVAL (seq * 17) SECOND FROM seq_%d_to_%d;
INSERT INTO blobs SELECT seq, seq, seq %% 13, UNHEX(CONCAT(md5(CONCAT(seq, 'a')),
  md5(CONCAT(seq, 'b')), md5(CONCAT(seq, 'c')), md5(CONCAT(seq, 'd')))),
  CONCAT('label ', md5(CONCAT(seq, 'l'))), TIMESTAMP('2021-01-01') + INTERVAL (seq * 3) SECOND
  FROM seq_%d_to_%d;
""" % (start + 1, start + count, start + 1, start + count))
            start += count

        fill(self.size, insert, batch, 200000, target_bytes)
        return start * 2


# -- one engine's benchmark --------------------------------------------------------------


class Bench:
    def __init__(self, args, work, publish):
        self.args = args
        self.work = work
        self.runner = Runner(run_command)
        self.results = {}
        self.publish = publish

    def run_pairs(self, outcome, funcs, settle=None):
        """``--repeat`` repetitions of ``funcs``; ``outcome`` (with the results so far) is
        published after each, so an interrupted run keeps what it measured."""
        outcome.update(results=self.results, load_before=load_average(), repeat_done=0)
        started = time.time()
        for index in range(self.args.repeat):
            self.paired(index, funcs, settle)
            outcome.update(repeat_done=index + 1, load_after=load_average(),
                           wall_s=time.time() - started)
            self.publish(outcome)
        return outcome

    def probe_compression(self, engine):
        """The compression ours picks (auto: zstd when installed, else gzip), from a first
        manifest; returns it with the raw side's compress and decompress commands."""
        probe_dir = tempfile.mkdtemp(prefix="probe-", dir=self.work)
        try:
            store = BackupStore(probe_dir, self.runner)
            compression = store.write("probe", engine)["compression"]
        finally:
            shutil.rmtree(probe_dir, ignore_errors=True)
        tool = {"zstd": "zstd -q -c -3", "gzip": "gzip -c -6", "none": "cat"}[compression]
        untool = {"zstd": "zstd -q -d -c", "gzip": "gzip -d -c", "none": "cat"}[compression]
        return compression, tool, untool

    def record(self, key, value):
        self.results.setdefault(key, []).append(value)

    def paired(self, index, named_funcs, settle=None):
        """Run (name, func) in the order of repetition ``index``; func returns {metric:
        seconds, ...}. ``settle()`` runs untimed before each, so every variant starts from the
        same server state (not from the previous variant's aftermath)."""
        for name, func in run_order(list(named_funcs), index):
            if settle:
                settle()
            log("  rep %d: %s" % (index + 1, name))
            for metric, value in func().items():
                self.record("%s.%s" % (name, metric), value)

    # ours ------------------------------------------------------------------------------

    def ours(self, engine, fmt=None, compression=None, jobs=1):
        def run():
            directory = tempfile.mkdtemp(prefix="ours-", dir=self.work)
            try:
                store = BackupStore(directory, self.runner)
                t_dump, manifest = timed(store.write, "bench", engine, fmt=fmt,
                                         compression=compression, jobs=jobs)
                # The full verification on its own (state=verify), not part of the restore.
                t_verify, _ = timed(store.verify, manifest["path"], engine)
                t_restore, _ = timed(store.restore, manifest["path"], engine, jobs=jobs)
                self.manifest = manifest
                return {"dump": t_dump, "restore": t_restore, "total": t_dump + t_restore,
                        "verify": t_verify, "bytes": float(manifest["size"])}
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        return run

    def raw(self, dump_cmd, restore_cmd, env=None, target_name="dump"):
        def run():
            directory = tempfile.mkdtemp(prefix="raw-", dir=self.work)
            target = os.path.join(directory, target_name)
            try:
                t_dump, _ = timed(sh, dump_cmd.format(out=q(target)), env)
                t_sync, _ = timed(fsync_paths, target)
                size = size_of(target)
                t_restore, _ = timed(sh, restore_cmd.format(src=q(target)), env)
                return {"dump": t_dump + t_sync, "sync": t_sync, "restore": t_restore,
                        "total": t_dump + t_sync + t_restore, "bytes": float(size)}
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        return run

    # engines ---------------------------------------------------------------------------

    def generated(self, name, db):
        """Create ``db``, fill it to --size-mb; (engine on it, bytes on disk, rows, seconds)."""
        db.create()
        log("%s: generating %d MiB in %s" % (name, self.args.size_mb, db.db))
        t_gen, rows = timed(db.generate, self.args.size_mb * MB)
        size = db.size()
        log("%s: %.0f MiB on disk, %d rows, generated in %.0f s" % (name, size / MB, rows, t_gen))
        engine = engine_for(Connection.from_params({
            "engine": name, "name": db.db, "host": db.host, "port": db.port,
            "user": db.user, "password": db.password}), self.runner)
        return engine, size, rows, t_gen

    def postgresql(self):
        a = self.args
        db = Postgres(a)
        try:
            engine, size, rows, t_gen = self.generated("postgresql", db)
            dbarg = q(db.db)
            restore_opts = "--clean --if-exists --no-owner --exit-on-error -w"
            # Ours restores a single stream in one transaction: so does raw here.
            raw_custom = self.raw("pg_dump -w -Fc -d %s > {out}" % dbarg,
                                  "pg_restore %s --single-transaction -d %s {src}"
                                  % (restore_opts, dbarg), db.env)
            funcs = [("ours_custom", self.ours(engine, fmt="custom")),
                     ("raw_custom", raw_custom)]
            if not a.no_parallel:
                funcs += [
                    ("ours_dir_j%d" % a.jobs, self.ours(engine, fmt="directory", jobs=a.jobs)),
                    ("raw_dir_j%d" % a.jobs, self.raw(
                        "pg_dump -w -Fd -j %d -d %s -f {out}" % (a.jobs, dbarg),
                        "pg_restore %s -Fd -j %d -d %s {src}" % (restore_opts, a.jobs, dbarg),
                        db.env)),
                    ("raw_dir_j1", self.raw(
                        "pg_dump -w -Fd -j 1 -d %s -f {out}" % dbarg,
                        "pg_restore %s -Fd -j 1 -d %s {src}" % (restore_opts, dbarg),
                        db.env)),
                ]
            outcome = self.run_pairs(
                {"engine": "postgresql", "db_bytes": size, "rows": rows, "generate_s": t_gen,
                 "compression": "none (pg custom/directory compress themselves)",
                 "settle": "VACUUM ANALYZE; CHECKPOINT before each variant",
                 "versions": tool_versions(["pg_dump", "pg_restore", "psql"]) + [
                     "server " + db.psql("SHOW server_version").strip()]}, funcs, db.settle)
            outcome["db_bytes_after"] = db.size()
            return outcome
        finally:
            db.drop()

    def mysql(self):
        db = Mariadb(self.args)
        try:
            engine, size, rows, t_gen = self.generated("mysql", db)
            compression, tool, untool = self.probe_compression(engine)
            conn = db.conn_args
            dump = ("%s %s --single-transaction --routines --triggers --events --hex-blob "
                    "--default-character-set=utf8mb4 --no-tablespaces --max-allowed-packet=1G "
                    "%s | %s > {out}" % (db.dump, conn, q(db.db), tool))
            restore = "%s {src} | %s %s --max-allowed-packet=1G %s" % (
                untool, db.client, conn, q(db.db))
            funcs = [("ours", self.ours(engine)), ("raw", self.raw(dump, restore, db.env))]
            return self.run_pairs(
                {"engine": "mysql", "db_bytes": size, "rows": rows, "generate_s": t_gen,
                 "compression": compression,
                 "versions": tool_versions([db.dump, db.client, "zstd"]) + [
                     "server " + db.sql("SELECT VERSION()").strip()]}, funcs)
        finally:
            db.drop()

    def sqlite(self):
        a = self.args
        directory = tempfile.mkdtemp(prefix="sqlite-", dir=self.work)
        path = os.path.join(directory, "bench_%s.sqlite3" % secrets.token_hex(4))
        try:
            log("sqlite: generating %d MiB in %s" % (a.sqlite_size_mb, path))
            start = time.perf_counter()
            conn = sqlite3.connect(path)
            conn.executescript("""
CREATE TABLE orders (id integer PRIMARY KEY, customer int NOT NULL, note text NOT NULL,
  payload blob NOT NULL, created text NOT NULL);
CREATE INDEX orders_customer ON orders (customer);
""")
            rows, batch = 0, 100000
            while os.path.getsize(path) < a.sqlite_size_mb * MB:
                conn.execute("""
WITH RECURSIVE g(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM g WHERE n < ?)
INSERT INTO orders SELECT n, (n * 7919) % 100000, hex(randomblob(48)), randomblob(64),
  datetime(1577836800 + n * 17, 'unixepoch') FROM g""", (rows + 1, rows + batch))
                conn.commit()
                rows += batch
            conn.close()
            t_gen = time.perf_counter() - start
            size = os.path.getsize(path)
            log("sqlite: %.0f MiB, %d rows, generated in %.0f s" % (size / MB, rows, t_gen))
            engine = engine_for(Connection.from_params({"engine": "sqlite", "name": path}),
                                self.runner)
            compression, tool, untool = self.probe_compression(engine)
            copy = os.path.join(directory, "copy.sqlite3")
            dump = ("sqlite3 %s '.backup %s' && %s %s > {out} && rm -f %s"
                    % (q(path), copy, tool, q(copy), q(copy)))
            restore = ("%s {src} > %s && sqlite3 %s '.restore %s' && rm -f %s"
                       % (untool, q(copy), q(path), copy, q(copy)))
            funcs = [("ours", self.ours(engine)), ("raw", self.raw(dump, restore))]
            return self.run_pairs(
                {"engine": "sqlite", "db_bytes": size, "rows": rows, "generate_s": t_gen,
                 "compression": compression,
                 "versions": tool_versions(["sqlite3", "zstd"])}, funcs)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


# -- reporting ---------------------------------------------------------------------------

# (faster, slower) variant pairs for the parallel speedup; the first is the claim.
SPEEDUPS = (("ours_dir_j2", "ours_custom"), ("raw_dir_j2", "raw_dir_j1"),
            ("raw_dir_j2", "raw_custom"))


def median(values):
    return statistics.median(values) if values else float("nan")


def series(results, name, metric):
    return results.get("%s.%s" % (name, metric), [])


def ratios(results, a, b, metric, b_minus=None):
    """Per-repetition ratios a/b of ``metric`` (b without its ``b_minus`` metric if given)."""
    tops = series(results, a, metric)
    bottoms = series(results, b, metric)
    if b_minus:
        bottoms = [x - y for x, y in zip(bottoms, series(results, b, b_minus))]
    return [x / y for x, y in zip(tops, bottoms) if y]


def verdict(ratio, target, higher_is_better=False):
    met = ratio >= target if higher_is_better else ratio <= target
    if met:
        return "met"
    return "**missed** by %.2f (%.0f %%)" % (abs(ratio - target), abs(ratio / target - 1) * 100)


def table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def seconds(values):
    return "%.1f" % median(values) if values else "-"


def pair_list(values, digits=2):
    return ", ".join("%.*f" % (digits, value) for value in values)


def report(outcome, target, speedup_target):
    """The Markdown tables of one engine's outcome (as in docs/benchmarks.md)."""
    res = outcome["results"]
    mb = outcome["db_bytes"] / MB
    names = sorted({key.split(".")[0] for key in res})
    done = outcome.get("repeat_done", len(series(res, names[0], "total")) if names else 0)
    lines = ["### %s: %.0f MiB on disk, %d rows, compression %s, %d repetitions"
             % (outcome["engine"], mb, outcome["rows"], outcome["compression"], done), ""]
    if outcome.get("versions"):
        lines += ["Tools: %s. Load average (1/5/15 min) before %s, after %s; %.0f s for the "
                  "repetitions." % ("; ".join(outcome["versions"]), outcome.get("load_before"),
                                    outcome.get("load_after"), outcome.get("wall_s", 0)), ""]
    rows = []
    for name in names:
        total = median(series(res, name, "total"))
        rows.append([name, len(series(res, name, "total")), seconds(series(res, name, "dump")),
                     seconds(series(res, name, "sync")), seconds(series(res, name, "restore")),
                     seconds(series(res, name, "total")), "%.1f" % (mb / total if total else 0),
                     "%.0f" % (median(series(res, name, "bytes")) / MB),
                     seconds(series(res, name, "verify"))])
    lines += table(["variant", "n", "dump s (incl. fsync)", "of which raw fsync s", "restore s",
                    "total s", "MB/s", "file MiB", "ours verify s"], rows)
    lines.append("")
    rows = []
    for ours in [n for n in names if n.startswith("ours")]:
        raw = ours.replace("ours", "raw")
        if raw not in names:
            continue
        total = ratios(res, ours, raw, "total")
        if not total:
            continue
        rows.append(["%s / %s" % (ours, raw), "%.2f" % median(ratios(res, ours, raw, "dump")),
                     "%.2f" % median(ratios(res, ours, raw, "restore")),
                     "**%.2f**" % median(total), pair_list(total), verdict(median(total), target)])
        without = ratios(res, ours, raw, "total", b_minus="sync")
        if without:
            rows.append(["%s / %s without raw's fsync" % (ours, raw),
                         "%.2f" % median(ratios(res, ours, raw, "dump", b_minus="sync")), "-",
                         "%.2f" % median(without), pair_list(without),
                         verdict(median(without), target)])
    if rows:
        lines += table(["ratio ours / raw (median of pairs)", "dump", "restore", "total",
                        "pairs (total)", "target <= %.2f" % target], rows)
        lines.append("")
    rows = []
    for fast, slow in SPEEDUPS:
        if fast in names and slow in names:
            total = ratios(res, slow, fast, "total")
            rows.append(["%s vs %s" % (fast, slow),
                         "%.2fx" % median(ratios(res, slow, fast, "dump")),
                         "%.2fx" % median(ratios(res, slow, fast, "restore")),
                         "**%.2fx**" % median(total), pair_list(total),
                         verdict(median(total), speedup_target, higher_is_better=True)])
    if rows:
        lines += table(["speedup (median of pairs)", "dump", "restore", "total",
                        "pairs (total)", "target >= %.1fx" % speedup_target], rows)
        lines.append("")
    return "\n".join(lines)


def render(data):
    """All of a --json file as Markdown: the command, the machine, one section per engine."""
    meta = data.get("meta", {})
    lines = ["Command: `%s`" % meta.get("command", "?"), "",
             "Machine: %s, %s CPUs, Python %s; started %s, wall time %s s." % (
                 meta.get("platform"), meta.get("cpus"), meta.get("python"),
                 meta.get("started"), "%.0f" % meta["wall_s"] if "wall_s" in meta else "?"), ""]
    args = data.get("args", {})
    for outcome in data.get("outcomes", []):
        lines.append(report(outcome, args.get("target", 1.05),
                            args.get("speedup_target", 1.6)))
    return "\n".join(lines)


def write_json(path, data):
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(data, handle, indent=2, default=str)
    os.replace(temporary, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024,
                        help="PostgreSQL / MariaDB database size to generate (default 1024)")
    parser.add_argument("--sqlite-size-mb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="paired repetitions (default 3)")
    parser.add_argument("--engines", default="postgresql,mysql,sqlite")
    parser.add_argument("--jobs", type=int, default=2, help="PostgreSQL parallel jobs")
    parser.add_argument("--no-parallel", action="store_true",
                        help="skip the PostgreSQL directory-format runs")
    parser.add_argument("--target", type=float, default=1.05, help="ours/raw ratio target")
    parser.add_argument("--speedup-target", type=float, default=1.6,
                        help="parallel vs single-stream speedup target")
    add_common_arguments(parser)
    print_report(parser.parse_args(), measure, render)


def add_common_arguments(parser):
    """The options every backup benchmark shares: where files and results go, the servers."""
    parser.add_argument("--workdir", default=None, help="where backup files go (default: tmp)")
    parser.add_argument("--json", help="write the measurements here (after every repetition)")
    parser.add_argument("--render", metavar="JSON",
                        help="run nothing: turn a --json file into the Markdown tables")
    parser.add_argument("--markdown", help="also write the Markdown tables to this file")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--pg-password", default=os.environ.get("PGPASSWORD"))
    parser.add_argument("--my-host", default="127.0.0.1")
    parser.add_argument("--my-port", type=int, default=3306)
    parser.add_argument("--my-user", default="root")
    parser.add_argument("--my-password", default=os.environ.get("MYSQL_PWD"))


def print_report(args, measure_with, render_with):
    """Measure (or, with --render, read a --json file), print the Markdown, --markdown it."""
    if args.render:
        with open(args.render) as handle:
            text = render_with(json.load(handle))
    else:
        text = render_with(measure_with(args))
    print(text, flush=True)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(text + "\n")


class Results:
    """A run's JSON: its arguments (no passwords), the machine, and the outcomes so far,
    rewritten to ``--json`` every time ``publish`` adds or updates one."""

    def __init__(self, args, script, **meta):
        self.args = args
        self.started = time.time()
        self.data = {"args": {key: value for key, value in vars(args).items()
                              if "password" not in key},
                     "outcomes": [], "meta": dict({
                         "command": " ".join([script] + sys.argv[1:]),
                         "platform": platform.platform(), "cpus": os.cpu_count(),
                         "python": platform.python_version(), "load_at_start": load_average(),
                         "started": datetime.datetime.now(datetime.timezone.utc).strftime(
                             "%Y-%m-%dT%H:%M:%SZ")}, **meta)}

    def publish(self, outcome):
        if not any(known is outcome for known in self.data["outcomes"]):
            self.data["outcomes"].append(outcome)
        self.data["meta"]["wall_s"] = time.time() - self.started
        if self.args.json:
            write_json(self.args.json, self.data)


def measure(args):
    results = Results(args, "benchmarks/backup.py")
    data, started, publish = results.data, results.started, results.publish

    work = tempfile.mkdtemp(prefix="dbsafe-bench-", dir=args.workdir)
    try:
        for name in [e.strip() for e in args.engines.split(",") if e.strip()]:
            bench = Bench(args, work, publish)
            method = {"postgresql": bench.postgresql, "mysql": bench.mysql,
                      "mariadb": bench.mysql, "sqlite": bench.sqlite}[name]
            outcome = method()
            print("\n" + report(outcome, args.target, args.speedup_target), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data["meta"]["wall_s"] = time.time() - started
    if args.json:
        write_json(args.json, data)
    log("wall time %.0f s" % data["meta"]["wall_s"])
    return data


if __name__ == "__main__":
    main()
