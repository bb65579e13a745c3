#!/usr/bin/env python3
"""Backup/restore benchmark: dbsafe.django.db_backup against community.postgresql.postgresql_db
and community.mysql.mysql_db (issue 8 P3, the optional part).

Not a test: a script a person runs, on a machine with PostgreSQL and MariaDB/MySQL servers it may
create and drop databases on. The community collections come from the PyPI ``ansible`` package,
which is acceptable in the benchmark environment only: it is installed into a throw-away venv
(``--venv``, default build/bench-community/venv) from requirements/bench-community.txt, reused
while that file is unchanged, never into .venv.

For each engine a throw-away database ``dbsafe_bench_<hex>`` of about ``--size-mb`` is generated
by benchmarks/backup.py's own generator (``Bench.generated``), then ``--repeat`` pairs (order
alternating: ours first, theirs first, ...) each run, for both sides:

1. one ``ansible-playbook`` run of one task on localhost: the dump;
2. untimed: the database is damaged (one table dropped, the other emptied), so a restore that
   does nothing cannot pass step 4;
3. one ``ansible-playbook`` run of one task: the restore of that dump;
4. untimed: row counts of both tables and the number of indexes must equal the source's.
5. ours only, untimed: ``db_backup state=verify`` of the same file, i.e. what the check that
   the dump re-reads and the restore repeats costs on its own.

Both sides run with the same ansible-playbook and interpreter (the venv's), the same callback
(``ansible.posix.json``, whose per-task start/end times are the "task" seconds: AnsiballZ,
module start, the work) and the same connection; the "run" seconds are the whole
ansible-playbook process, start-up included. PostgreSQL is vacuumed and checkpointed, untimed,
before each variant (as in backup.py). Ours: ``dbsafe.django.db_backup`` state dump / restore with
an explicit connection and the engine's default format and compression (PostgreSQL custom, no
extra compression; MariaDB sql + zstd). Theirs: the same format and compression chosen through
the target's suffix (``.pgc``: pg_dump --format=c; ``.sql.zst``: mariadb-dump | zstd), with
the options that make the dump and the SQL it loads the same as ours (``THEIRS`` below). The
databases are dropped in ``finally``; backup files live in a temporary directory.

    .venv/bin/python benchmarks/community.py --repeat 3 --json /tmp/community.json
    .venv/bin/python benchmarks/community.py --size-mb 32 --repeat 1 --engines postgresql
    .venv/bin/python benchmarks/community.py --render benchmarks/results/community-<date>.json
"""

import argparse
import datetime
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from backup import (  # noqa: E402  (the generator and helpers backup.py's run uses)
    MB, REPO, Bench, Mariadb, Postgres, Results, add_common_arguments, load_average, log,
    print_report, tool_versions, write_json)
from paired import rotated, table  # noqa: E402

REQUIREMENTS = os.path.join(REPO, "requirements", "bench-community.txt")
DEFAULT_VENV = os.path.join(REPO, "build", "bench-community", "venv")
OUR_COLLECTIONS = os.path.join(REPO, ".collections")
SIDES = ("ours", "theirs")

# Theirs' options beyond connection, name, state and target, and why. PostgreSQL: pg_restore
# without --clean fails on the objects that already exist; with these four flags pg_restore
# emits the same SQL as ours' `pg_restore --clean --if-exists --no-owner --exit-on-error
# --file=-`. MariaDB: the flags ours passes to mariadb-dump (mysql_db's defaults are no
# --single-transaction but LOCK TABLES, no --hex-blob, and no pipefail, so a failing dump piped
# into zstd would pass); zstd is the same `zstd` (level 3) ours runs.
THEIRS = {
    "postgresql": {
        "dump": {},
        "restore": {"target_opts": "--clean --if-exists --no-owner --exit-on-error"},
    },
    "mysql": {
        "dump": {"single_transaction": True, "hex_blob": True, "encoding": "utf8mb4",
                 "pipefail": True,
                 "dump_extra_args": "--routines --triggers --events --no-tablespaces "
                                    "--max-allowed-packet=1G"},
        "restore": {},
    },
}
SUFFIX = {"postgresql": ".pgc", "mysql": ".sql.zst"}
MODULE = {"postgresql": ("community.postgresql.postgresql_db", "restore"),
          "mysql": ("community.mysql.mysql_db", "import")}

# What each side does that the other does not (from db_backup's documentation and
# module_utils, and from postgresql_db 4.2.0 / mysql_db 3.16.1's source in the venv).
ONLY_OURS = {
    "postgresql": [
        "dump written to `<name>.partial`, fsynced, renamed only after checks, directory fsynced; "
        "0600 file in a 0700 directory",
        "`pg_restore --file=/dev/null` reads the archive to its end while pg_dump writes it (a "
        "dump cut short is refused even when pg_dump exited 0; since 1574844, before: after the "
        "dump), then sha256 for the manifest",
        "JSON manifest (size, sha256, engine, database, tool versions), fsynced",
        "restore: size and sha256 again (since 10ed127; before: also the archive read to its "
        "end) before the database is touched; a damaged or foreign backup is refused",
        "restore empties the whole schema (also objects that are not in the archive) and loads "
        "in ONE transaction (`pg_restore --file=- | psql`, COMMIT only when the script arrived "
        "complete): a failure changes nothing",
    ],
    "mysql": [
        "dump written to `<name>.partial`, fsynced, renamed only after checks, directory fsynced; "
        "0600 file in a 0700 directory",
        "re-read after the dump: sha256 while the zstd stream is decompressed and tested, and "
        "the dump's last line (mariadb-dump's `-- Dump completed`) is checked",
        "JSON manifest (size, sha256, engine, database, tool versions), fsynced",
        "restore: the same checks again before the database is touched; a damaged or foreign "
        "backup is refused",
        "restore empties the database first (tables the dump does not have are gone too)",
        "password in a 0600 option file, never on a command line",
    ],
}
ONLY_THEIRS = {
    "postgresql": [
        "`target_opts`/`dump_extra_args`: any pg_dump/pg_restore flags; `session_role`; "
        "formats .sql/.tar/.dir and .gz (pigz if installed)/.bz2/.xz",
        "pg_restore loads straight into the database (no psql in between), each statement "
        "committed on its own: a failure leaves the database partly restored; "
        "without `--clean` in target_opts a restore over existing tables fails",
        "dump goes straight to the final name (`pg_dump > target`): no fsync, no checksum, no "
        "check; its docs warn that some pg_dump versions exit 0 on errors",
    ],
    "mysql": [
        "many databases or all in one dump, `ignore_tables`, `master_data`, `force`, "
        "config_file/SSL options; .gz/.bz2/.xz/.zst",
        "import does not empty the database (the dump's own DROP TABLE IF EXISTS per table); "
        "`mariadb --one-database`; creates the database when missing",
        "dump goes straight to the final name (`mariadb-dump ... | zstd > target`): no fsync, "
        "no checksum, no check; pipefail only when asked (set here)",
        "a login password goes on the command line (`--password=...`)",
    ],
}


# -- the venv --------------------------------------------------------------------------------


def community_venv(path):
    """The venv with the ``ansible`` package; (re)made when requirements/bench-community.txt
    differs from the one it was made from (its sha256 in ``requirements.sha256``)."""
    with open(REQUIREMENTS, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    stamp = os.path.join(path, "requirements.sha256")
    python = os.path.join(path, "bin", "python")
    if os.path.exists(stamp) and os.path.exists(os.path.join(path, "bin", "ansible-playbook")):
        with open(stamp) as handle:
            if handle.read().strip() == digest:
                log("reusing %s" % path)
                return python
    shutil.rmtree(path, ignore_errors=True)
    log("creating %s from %s (a minute or two)" % (path, REQUIREMENTS))
    subprocess.run([sys.executable, "-m", "venv", path], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "-r", REQUIREMENTS], check=True)
    subprocess.run([python, "-m", "pip", "check"], check=True)
    with open(stamp, "w") as handle:
        handle.write(digest + "\n")
    return python


def venv_facts(python):
    """site-packages and the versions of what the run used."""
    code = ("import importlib.metadata as m, json, sysconfig, os\n"
            "site = sysconfig.get_paths()['purelib']\n"
            "def coll(ns, name):\n"
            "    path = os.path.join(site, 'ansible_collections', ns, name, 'MANIFEST.json')\n"
            "    with open(path) as h:\n"
            "        return json.load(h)['collection_info']['version']\n"
            "print(json.dumps({'site_packages': site, 'ansible': m.version('ansible'),\n"
            "  'ansible_core': m.version('ansible-core'),\n"
            "  'psycopg2_binary': m.version('psycopg2-binary'), 'pymysql': m.version('PyMySQL'),\n"
            "  'community.postgresql': coll('community', 'postgresql'),\n"
            "  'community.mysql': coll('community', 'mysql'),\n"
            "  'ansible.posix': coll('ansible', 'posix')}))\n")
    return json.loads(subprocess.run([python, "-c", code], check=True, stdout=subprocess.PIPE,
                                     universal_newlines=True).stdout)


# -- one ansible-playbook run of one task ------------------------------------------------------


def parse_time(text):
    return datetime.datetime.fromisoformat(text.rstrip("Z"))


class Playbooks:
    def __init__(self, python, site_packages, work):
        self.command = os.path.join(os.path.dirname(python), "ansible-playbook")
        self.directory = tempfile.mkdtemp(prefix="plays-", dir=work)
        config = os.path.join(self.directory, "ansible.cfg")
        with open(config, "w") as handle:
            handle.write("[defaults]\n")
        # Nothing from the caller's Ansible settings; our collection first, then the ansible
        # package's bundled ones (community.*, ansible.posix for the json callback).
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith("ANSIBLE_")}
        self.env.update(
            ANSIBLE_CONFIG=config,
            ANSIBLE_COLLECTIONS_PATH=os.pathsep.join([OUR_COLLECTIONS, site_packages]),
            ANSIBLE_HOME=os.path.join(self.directory, "ansible-home"),
            ANSIBLE_PYTHON_INTERPRETER=python,
            ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
            ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
            ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")

    def task(self, module, params):
        """Run ``module`` with ``params`` as the one task of one play on localhost; returns
        (task seconds from the callback, seconds of the whole run, the task's result)."""
        play = [{"name": module, "hosts": "localhost", "connection": "local",
                 "gather_facts": False, "tasks": [{"name": module, module: params}]}]
        path = os.path.join(self.directory, "play.yml")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            json.dump(play, handle)  # JSON is YAML
        started = time.perf_counter()
        proc = subprocess.run([self.command, "-i", "localhost,", path], cwd=self.directory,
                              env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, check=False)
        run_s = time.perf_counter() - started
        try:
            task = json.loads(proc.stdout)["plays"][0]["tasks"][0]
        except (ValueError, KeyError, IndexError):
            raise RuntimeError("%s: no result (exit %s): %s %s" % (
                module, proc.returncode, proc.stdout[-1500:], proc.stderr[-1500:]))
        result = task["hosts"].get("localhost", {})
        if proc.returncode != 0 or result.get("failed") or not result:
            raise RuntimeError("%s failed (exit %s): %s" % (
                module, proc.returncode, result.get("msg") or proc.stderr[-2000:]))
        duration = task["task"]["duration"]
        task_s = (parse_time(duration["end"]) - parse_time(duration["start"])).total_seconds()
        return task_s, run_s, result


# -- the engines --------------------------------------------------------------------------------


def fingerprint(db):
    """(rows of orders, rows of blobs, indexes): what a restore must bring back."""
    if isinstance(db, Postgres):
        out = db.psql("SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM blobs), "
                      "(SELECT count(*) FROM pg_indexes WHERE schemaname = 'public')")
        return [int(value) for value in out.strip().split("|")]
    out = db.sql("SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM blobs), "
                 "(SELECT count(DISTINCT table_name, index_name) FROM "
                 "information_schema.statistics WHERE table_schema = DATABASE())")
    return [int(value) for value in out.split()]


def damage(db):
    """Drop one table and empty the other: a restore that did nothing fails the check."""
    if isinstance(db, Postgres):
        db.psql("DROP TABLE blobs; TRUNCATE orders")
    else:
        db.sql("DROP TABLE blobs; TRUNCATE TABLE orders")


def connection(engine, db):
    """(ours' connection options, theirs')."""
    ours = {"engine": engine, "host": db.host, "port": db.port, "name": db.db, "user": db.user}
    theirs = {"name": db.db, "login_host": db.host, "login_user": db.user}
    theirs["port" if engine == "postgresql" else "login_port"] = db.port
    if db.password:
        ours["password"] = db.password
        theirs["login_password"] = db.password
    return ours, theirs


def variants(engine, db, playbooks, work, expected):
    """{side: callable() -> measurements} for one engine."""
    ours_conn, theirs_conn = connection(engine, db)
    module, restore_state = MODULE[engine]

    def checked(name):
        got = fingerprint(db)
        if got != expected:
            raise RuntimeError("%s: the restore did not bring the database back: orders, blobs, "
                               "indexes %s, expected %s" % (name, got, expected))

    def measure(name, dump, restore, after=None):
        directory = tempfile.mkdtemp(prefix=name + "-", dir=work)
        try:
            dump_s, dump_run_s, path = dump(directory)
            size = os.path.getsize(path)
            if not size:
                raise RuntimeError("%s: the dump %s is empty" % (name, path))
            damage(db)
            restore_s, restore_run_s = restore(path)
            checked(name)
            result = {"dump_s": dump_s, "restore_s": restore_s, "total_s": dump_s + restore_s,
                      "dump_run_s": dump_run_s, "restore_run_s": restore_run_s,
                      "total_run_s": dump_run_s + restore_run_s, "bytes": size}
            result.update(after(path) if after else {})
            return result
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def ours_dump(directory):
        task_s, run_s, result = playbooks.task("dbsafe.django.db_backup", dict(
            ours_conn, state="dump", backup_dir=os.path.join(directory, "backups"),
            label="bench"))
        return task_s, run_s, result["backup"]["path"]

    def ours_restore(path):
        task_s, run_s, result = playbooks.task("dbsafe.django.db_backup", dict(
            ours_conn, state="restore", backup_dir=os.path.dirname(path), src=path))
        if not result.get("restored"):
            raise RuntimeError("ours: db_backup reported restored=%r" % result.get("restored"))
        return task_s, run_s

    def ours_verify(path):
        """After the pair's timed part: state=verify alone, i.e. what the dump's re-read and
        the restore's check each cost (on a file in the page cache, as in the timed part)."""
        task_s, _run_s, _result = playbooks.task("dbsafe.django.db_backup", dict(
            ours_conn, state="verify", backup_dir=os.path.dirname(path), src=path))
        return {"verify_s": task_s}

    def theirs_dump(directory):
        target = os.path.join(directory, "bench" + SUFFIX[engine])
        task_s, run_s, _ = playbooks.task(module, dict(
            theirs_conn, state="dump", target=target, **THEIRS[engine]["dump"]))
        return task_s, run_s, target

    def theirs_restore(path):
        task_s, run_s, _ = playbooks.task(module, dict(
            theirs_conn, state=restore_state, target=path, **THEIRS[engine]["restore"]))
        return task_s, run_s

    return {"ours": lambda: measure("ours", ours_dump, ours_restore, ours_verify),
            "theirs": lambda: measure("theirs", theirs_dump, theirs_restore)}


def bench_engine(engine, args, work, playbooks, publish):
    bench = Bench(args, work, publish)
    db = Postgres(args) if engine == "postgresql" else Mariadb(args)
    try:
        _ours_engine, size, rows, t_gen = bench.generated(engine, db)
        if engine == "postgresql":
            db.settle()
        expected = fingerprint(db)
        log("%s: orders, blobs, indexes = %s" % (engine, expected))
        module, restore_state = MODULE[engine]
        if engine == "postgresql":
            versions = tool_versions(["pg_dump", "pg_restore", "psql"]) + [
                "server " + db.psql("SHOW server_version").strip()]
        else:
            versions = tool_versions([db.dump, db.client, "zstd"]) + [
                "server " + db.sql("SELECT VERSION()").strip()]
        outcome = {
            "engine": engine, "db": db.db, "db_bytes": size, "rows": rows,
            "fingerprint": {"orders": expected[0], "blobs": expected[1], "indexes": expected[2]},
            "generate_s": t_gen, "versions": versions,
            "ours": {"module": "dbsafe.django.db_backup", "dump": {"state": "dump"},
                     "restore": {"state": "restore", "src": "<the dump's path>"},
                     "format": "custom" if engine == "postgresql" else "sql",
                     "compression": "none (pg custom compresses itself)"
                     if engine == "postgresql" else "zstd (auto)"},
            "theirs": {"module": module, "target": "<tmp>/bench" + SUFFIX[engine],
                       "dump": dict(THEIRS[engine]["dump"], state="dump"),
                       "restore": dict(THEIRS[engine]["restore"], state=restore_state)},
            "settle": "VACUUM ANALYZE; CHECKPOINT before each variant"
                      if engine == "postgresql" else None,
            "load_before": load_average(), "pairs": [], "order": []}
        publish(outcome)
        sides = variants(engine, db, playbooks, work, expected)
        started = time.time()
        for index in range(args.repeat):
            order = rotated(list(SIDES), index)
            pair = {}
            for name in order:
                if engine == "postgresql":
                    db.settle()
                log("  %s rep %d: %s" % (engine, index + 1, name))
                pair[name] = sides[name]()
                log("    dump %.1f s, restore %.1f s (task); runs %.1f + %.1f s; %.0f MiB"
                    % (pair[name]["dump_s"], pair[name]["restore_s"], pair[name]["dump_run_s"],
                       pair[name]["restore_run_s"], pair[name]["bytes"] / MB))
            outcome["pairs"].append(pair)
            outcome["order"].append(order)
            outcome.update(load_after=load_average(), wall_s=time.time() - started)
            publish(outcome)
        return outcome
    finally:
        db.drop()


# -- reporting -------------------------------------------------------------------------------


def median(values):
    return statistics.median(values) if values else float("nan")


def report(outcome):
    """The Markdown of one engine's outcome."""
    pairs = outcome["pairs"]
    mb = outcome["db_bytes"] / MB
    fp = outcome["fingerprint"]
    lines = ["### %s: %.0f MiB on disk, %d + %d rows, %d indexes, %d pairs" % (
        outcome["engine"], mb, fp["orders"], fp["blobs"], fp["indexes"], len(pairs)), ""]
    lines += ["Tools: %s. Load average (1/5/15 min) before %s, after %s; %.0f s for the pairs."
              % ("; ".join(outcome["versions"]), outcome.get("load_before"),
                 outcome.get("load_after"), outcome.get("wall_s", 0)), ""]
    ours, theirs = outcome["ours"], outcome["theirs"]
    lines += ["Ours: `%s` state=dump, then state=restore src=<that file>; format %s, "
              "compression %s." % (ours["module"], ours["format"], ours["compression"]),
              "Theirs: `%s` target=`%s`, dump `%s`, restore `%s`." % (
                  theirs["module"], theirs["target"], json.dumps(theirs["dump"]),
                  json.dumps(theirs["restore"])), ""]
    rows = []
    for side in SIDES:
        def values(metric):
            return [pair[side][metric] for pair in pairs
                    if side in pair and metric in pair[side]]
        total = median(values("total_s"))
        rows.append([side, len(values("total_s")), "%.1f" % median(values("dump_s")),
                     "%.1f" % median(values("restore_s")), "%.1f" % total,
                     "%.1f" % (mb / total if total else 0),
                     "%.1f" % median(values("dump_run_s")),
                     "%.1f" % median(values("restore_run_s")),
                     "%.0f" % (median(values("bytes")) / MB),
                     "%.1f" % median(values("verify_s")) if values("verify_s") else "-"])
    lines.append(table(["side", "n", "dump s (task)", "restore s (task)", "total s (task)",
                        "MB/s", "dump s (whole run)", "restore s (whole run)", "file MiB",
                        "state=verify s (untimed)"], rows))
    lines.append("")
    complete = [pair for pair in pairs if all(side in pair for side in SIDES)]

    def ratios(metric):
        return [pair["ours"][metric] / pair["theirs"][metric] for pair in complete
                if pair["theirs"][metric]]
    if complete:
        total = ratios("total_s")
        lines.append(table(
            ["ours / theirs (median of pairs)", "dump", "restore", "total", "pairs (total)",
             "total, whole runs"],
            [["%s / %s" % (ours["module"], theirs["module"]),
              "%.2f" % median(ratios("dump_s")), "%.2f" % median(ratios("restore_s")),
              "**%.2f**" % median(total), ", ".join("%.2f" % value for value in total),
              "%.2f" % median(ratios("total_run_s"))]]))
        lines.append("")
    engine = outcome["engine"]

    def cell(items, i):
        return items[i].replace("|", "\\|") if i < len(items) else ""
    only_ours, only_theirs = ONLY_OURS[engine], ONLY_THEIRS[engine]
    lines.append(table(["only ours", "only theirs"], [
        [cell(only_ours, i), cell(only_theirs, i)]
        for i in range(max(len(only_ours), len(only_theirs)))]))
    lines.append("")
    return "\n".join(lines)


def render(data):
    meta = data.get("meta", {})
    venv = meta.get("venv", {})
    lines = ["Command: `%s`" % meta.get("command", "?"), "",
             "Machine: %s, %s CPUs, Python %s; load average at start %s; started %s, wall "
             "time %s s; commit %s." % (
                 meta.get("platform"), meta.get("cpus"), meta.get("python"),
                 meta.get("load_at_start"), meta.get("started"),
                 "%.0f" % meta["wall_s"] if "wall_s" in meta else "?", meta.get("commit")), "",
             "Ansible (the benchmark venv): ansible %s, ansible-core %s, community.postgresql "
             "%s, community.mysql %s, psycopg2-binary %s, PyMySQL %s." % (
                 venv.get("ansible"), venv.get("ansible_core"),
                 venv.get("community.postgresql"), venv.get("community.mysql"),
                 venv.get("psycopg2_binary"), venv.get("pymysql")), ""]
    for outcome in data.get("outcomes", []):
        lines.append(report(outcome))
    return "\n".join(lines)


def git(*args):
    return subprocess.run(["git", "-C", REPO] + list(args), stdout=subprocess.PIPE,
                          universal_newlines=True, check=False).stdout


def measure(args):
    python = community_venv(args.venv)
    facts = venv_facts(python)
    commit = git("rev-parse", "--short", "HEAD").strip()
    # Ours runs from the working tree (.collections links to it): say when it was not HEAD.
    changed = git("status", "--porcelain", "--", "plugins").splitlines()
    if changed:
        commit += " + uncommitted changes in: " + ", ".join(line[3:] for line in changed)
    results = Results(args, "benchmarks/community.py", commit=commit, venv=facts)
    data, started, publish = results.data, results.started, results.publish
    log("load average at start: %s" % data["meta"]["load_at_start"])

    work = tempfile.mkdtemp(prefix="dbsafe-community-", dir=args.workdir)
    try:
        playbooks = Playbooks(python, facts["site_packages"], work)
        for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
            engine = {"mariadb": "mysql"}.get(engine, engine)
            outcome = bench_engine(engine, args, work, playbooks, publish)
            print("\n" + report(outcome), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data["meta"]["wall_s"] = time.time() - started
    data["meta"]["load_at_end"] = load_average()
    log("load average at end: %s; wall time %.0f s" % (data["meta"]["load_at_end"],
                                                       data["meta"]["wall_s"]))
    if args.json:
        write_json(args.json, data)
    return data


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=256,
                        help="database size to generate per engine (default 256)")
    parser.add_argument("--repeat", type=int, default=3, help="pairs (default 3)")
    parser.add_argument("--engines", default="postgresql,mysql")
    parser.add_argument("--venv", default=DEFAULT_VENV,
                        help="the throw-away venv with the ansible package (default %(default)s)")
    add_common_arguments(parser)
    print_report(parser.parse_args(), measure, render)


if __name__ == "__main__":
    main()
