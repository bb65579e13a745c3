#!/usr/bin/env python3
"""Facts benchmark P5 (issue 8): django_showmigrations against a bare ``manage.py
showmigrations`` on generated projects of 50 apps with 100, 1,000 and 5,000 migrations.

Not a test: a script a person runs. Each size gets a generated Django project in a temporary
directory (removed at the end): ``--apps`` apps, each with one model that its first migration
creates and every further migration adds a field to (models.py declares all of them, so the
autodetector finds nothing pending), and a SQLite database whose django_migrations table has
every migration recorded as applied (written directly: showmigrations only reads it).

Ours is what the module runs, in-process: ``DjangoProject.facts()`` (one launch of the
project's python running introspect.py: graph, applied rows, plan, conflicts, ghosts,
inconsistent history, pending model changes) + ``state.migration_facts``. Ansible's own
per-task cost is not part of it. Bare is ``python manage.py showmigrations``. Paired, rotating
order; the claim is the median of the per-pair ratios, and how both grow with the size.

    .venv/bin/python benchmarks/facts.py --sizes 100,1000,5000 --repeat 5 --json /tmp/facts.json
"""

import argparse
import datetime
import os
import shutil
import sqlite3
import subprocess
import tempfile

from paired import log, machine, run_command, run_pairs, summary, table, verdict, write_json

import demo  # tests/integration/demo.py

from ansible_collections.dbsafe.django.plugins.module_utils.project import DjangoProject
from ansible_collections.dbsafe.django.plugins.module_utils.runner import Runner
from ansible_collections.dbsafe.django.plugins.module_utils.state import migration_facts

PYTHON = demo.default_python()

SETTINGS = """import os
SECRET_KEY = "benchmark"
INSTALLED_APPS = [%(apps)s]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.environ["BENCH_DB"]}}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
"""

MANAGE = """#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)
"""

FIRST = """from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = [%(dependencies)s]
    operations = [
        migrations.CreateModel(
            name="Thing",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
            ],
        ),
    ]
"""

NEXT = """from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("%(app)s", "%(previous)s")]
    operations = [
        migrations.AddField(model_name="thing", name="f%(number)d",
                            field=models.IntegerField(default=0)),
    ]
"""


def generate(root, apps, total):
    """A project of ``apps`` apps with ``total`` migrations in all; returns (path, rows)."""
    project = os.path.join(root, "p%d" % total)
    os.makedirs(os.path.join(project, "benchsite"))
    labels = ["app%02d" % i for i in range(apps)]
    write(os.path.join(project, "manage.py"), MANAGE)
    write(os.path.join(project, "benchsite", "__init__.py"), "")
    write(os.path.join(project, "benchsite", "settings.py"),
          SETTINGS % {"apps": ", ".join('"%s"' % label for label in labels)})
    rows = []
    for index, label in enumerate(labels):
        count = total // apps + (1 if index < total % apps else 0)
        migrations = os.path.join(project, label, "migrations")
        os.makedirs(migrations)
        write(os.path.join(project, label, "__init__.py"), "")
        write(os.path.join(migrations, "__init__.py"), "")
        # Every tenth app depends on the previous app's first migration: a graph, not 50 lines.
        dependency = '("app%02d", "0001_initial")' % (index - 1) if index and not index % 10 else ""
        names = ["0001_initial"]
        write(os.path.join(migrations, "0001_initial.py"), FIRST % {"dependencies": dependency})
        for number in range(2, count + 1):
            name = "%04d_thing_f%d" % (number, number)
            write(os.path.join(migrations, name + ".py"),
                  NEXT % {"app": label, "previous": names[-1], "number": number})
            names.append(name)
        fields = "".join("    f%d = models.IntegerField(default=0)\n" % n for n in range(2, count + 1))
        write(os.path.join(project, label, "models.py"),
              "from django.db import models\n\n\nclass Thing(models.Model):\n"
              "    name = models.CharField(max_length=100)\n" + fields)
        rows.extend((label, name) for name in names)
    return project, rows


def write(path, text):
    with open(path, "w") as handle:
        handle.write(text)


def record_applied(path, rows):
    conn = sqlite3.connect(path)
    try:
        conn.execute('CREATE TABLE "django_migrations" ("id" integer NOT NULL PRIMARY KEY '
                     'AUTOINCREMENT, "app" varchar(255) NOT NULL, "name" varchar(255) NOT NULL, '
                     '"applied" datetime NOT NULL)')
        now = datetime.datetime.utcnow().isoformat(" ")
        conn.executemany("INSERT INTO django_migrations (app, name, applied) VALUES (?, ?, ?)",
                         [(app, name, now) for app, name in rows])
        conn.commit()
    finally:
        conn.close()


class Size:
    def __init__(self, root, apps, total):
        self.project, rows = generate(root, apps, total)
        self.db = os.path.join(self.project, "db.sqlite3")
        record_applied(self.db, rows)
        self.env = {"BENCH_DB": self.db, "PYTHONDONTWRITEBYTECODE": "1"}
        self.total = len(rows)

    def ours(self, _context):
        project = DjangoProject(Runner(run_command), self.project, python=PYTHON,
                                environment=self.env)
        result = project.facts()
        facts = migration_facts(result)
        assert facts["unapplied_count"] == 0 and not facts["pending_changes"], facts["pending_changes"]
        return {"timings": result["timings"]}

    def bare(self, _context):
        proc = subprocess.run([PYTHON, "manage.py", "showmigrations"], cwd=self.project,
                              env=dict(os.environ, **self.env), capture_output=True, text=True,
                              check=True)
        assert proc.stdout.count("[X]") == self.total, proc.stdout[-2000:]


def markdown(results):
    rows = []
    for size in results["sizes"]:
        p5 = results["p5"][str(size)]
        timings = p5["pairs"][0]["ours"]["timings"]
        rows.append([size, round(p5["median_ours"], 3), round(p5["median_baseline"], 3),
                     ", ".join(str(r) for r in p5["ratios"]), "**%s**" % p5["median_ratio"],
                     ", ".join("%s %.2f" % kv for kv in sorted(timings.items()))])
    out = ["P5 facts: django_showmigrations / manage.py showmigrations, %d apps (target <= 1.3)\n"
           % results["apps"],
           table(["migrations", "ours s", "bare s", "ratios per pair", "median ratio",
                  "ours phases, first pair (s)"], rows)]
    for size in results["sizes"]:
        out.append("\n%d migrations: %s" % (size, verdict(results["p5"][str(size)]["median_ratio"], 1.3)))
    sizes = results["sizes"]
    if len(sizes) > 1:
        out.append("\nGrowth (seconds per 1,000 extra migrations, from the medians):\n")
        growth = []
        for low, high in zip(sizes, sizes[1:]):
            a, b = results["p5"][str(low)], results["p5"][str(high)]
            growth.append(["%d -> %d" % (low, high),
                           round((b["median_ours"] - a["median_ours"]) * 1000.0 / (high - low), 3),
                           round((b["median_baseline"] - a["median_baseline"]) * 1000.0 / (high - low), 3)])
        out.append(table(["step", "ours s/1000", "bare s/1000"], growth))
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000,5000", help="total migrations per project")
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5, help="pairs per size")
    parser.add_argument("--json", help="write all raw results here")
    parser.add_argument("--workdir", help="parent of the temporary directory")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {"machine": machine(), "repeat": args.repeat, "apps": args.apps, "sizes": sizes,
               "p5": {}}
    work = tempfile.mkdtemp(prefix="dbsafe-bench-facts-", dir=args.workdir)
    try:
        for total in sizes:
            log("P5: generating %d apps with %d migrations" % (args.apps, total))
            size = Size(work, args.apps, total)
            size.bare(None)  # warm-up: page cache
            pairs = run_pairs({"ours": size.ours, "bare": size.bare}, args.repeat,
                              label="P5 %d" % total)
            results["p5"][str(total)] = dict(summary(pairs, "ours", "bare"), pairs=pairs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_json(args.json, results)
    print(markdown(results))


if __name__ == "__main__":
    main()
