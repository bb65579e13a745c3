"""Helpers for tests that work with a throw-away copy of the demo Django project.

Plain functions, no pytest fixtures. The usual pattern::

    project = copy_demo(tmp_path)             # examples/demo copied to tmp_path/demo
    manage(project, database, "migrate")      # database: a LiveDatabase from the fixtures
    add_failing_migration(project, "runsql")  # scenario builders change only the copy
    proc = manage(project, database, "migrate", check=False)

``PYTHONS`` maps a Django version to the interpreter of a virtualenv that has it; every
helper takes ``python=`` to pick one (default: Django 5.2).
"""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_DIR = os.path.join(ROOT, "examples", "demo")

# The app the scenario builders change, and its model.
BOOKS = "books"


def _find_python(venv, env_var, fallback):
    """The interpreter of one Django version, or None if there is none on this machine.

    An explicit environment variable wins; then the repository virtualenv that
    scripts/bootstrap creates (.venv for Django 5.2, .venv-django42 for 4.2, .venv-django32
    for 3.2, .venv-django61 for 6.1); then, only
    if present, a pre-built virtualenv from before bootstrap existed on this machine.
    The path is not resolved: a venv's python is a symlink and resolving it leaves the venv.
    """
    explicit = os.environ.get(env_var, "").strip()
    if explicit:
        return explicit
    for candidate in (os.path.join(ROOT, venv, "bin", "python"), fallback):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


PYTHONS = {
    "5.2": _find_python(".venv", "DBSAFE_TEST_PYTHON", "/tmp/lockvenv/bin/python"),
    "4.2": _find_python(".venv-django42", "DBSAFE_TEST_PYTHON_DJANGO42", "/tmp/lock42/bin/python"),
    # Django 3.2 LTS on Python 3.8 (scripts/bootstrap builds it when a Python 3.8 exists).
    "3.2": _find_python(".venv-django32", "DBSAFE_TEST_PYTHON_DJANGO32", None),
    # Django 6.1, the newest tested, on Python 3.12 (scripts/bootstrap builds it likewise).
    "6.1": _find_python(".venv-django61", "DBSAFE_TEST_PYTHON_DJANGO61", None),
}


def python_for(django):
    """The interpreter with this Django version; without one the test skips (fails in CI)."""
    python = PYTHONS[django]
    if python is None:
        import pytest  # only the tests that call this need it
        message = "no interpreter with Django %s (run scripts/bootstrap)" % django
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return python


def default_python():
    """The Django 5.2 interpreter, else the one running the tests."""
    return PYTHONS["5.2"] or sys.executable


# --- Copying and running the project ----------------------------------------------------------


def _ignore(directory, names):
    ignored = set()
    for name in names:
        if name == "__pycache__" or name.endswith(".pyc"):
            ignored.add(name)
        elif name.startswith("db.sqlite3"):  # the database and its -journal/-wal/-shm files
            ignored.add(name)
    # Uploads (media/uploads/, git-ignored) are not part of the project; the committed
    # sample files under media/covers/ are.
    if os.path.abspath(directory) == os.path.join(DEMO_DIR, "media") and "uploads" in names:
        ignored.add("uploads")
    return ignored


def copy_demo(dest_dir):
    """Copy the demo project to ``dest_dir/demo`` and return that path (a str).

    Leaves out the SQLite database, bytecode and uploaded media, so the copy is the project
    as committed; tests can then add, edit and delete migrations in it freely.
    """
    target = os.path.join(str(dest_dir), "demo")
    shutil.copytree(DEMO_DIR, target, ignore=_ignore)
    return target


def manage_env(project_dir, db, env=None):
    """The environment ``manage.py`` runs with: os.environ + the database + the media root."""
    merged = dict(os.environ)
    merged["DJANGO_SETTINGS_MODULE"] = "demo.settings"
    merged["DEMO_MEDIA_ROOT"] = os.path.join(str(project_dir), "media")
    merged["PYTHONDONTWRITEBYTECODE"] = "1"  # keep copies free of __pycache__ between edits
    if db is not None:
        merged.update(db.demo_env())
    if env:
        merged.update(env)
    return merged


def manage(project_dir, db, *args, python=None, check=True, env=None, timeout=300):
    """Run ``python manage.py *args`` in ``project_dir`` against ``db``.

    ``db`` is a LiveDatabase (its ``demo_env()`` is merged into the environment) or None for
    the project's default SQLite file. Output is captured as text. With ``check=True`` a
    non-zero exit raises AssertionError showing the command, stdout and stderr.
    """
    argv = [python or default_python(), "manage.py"] + [str(arg) for arg in args]
    proc = subprocess.run(
        argv,
        cwd=str(project_dir),
        env=manage_env(project_dir, db, env),
        capture_output=True,
        text=True,
        timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(
            "%s failed with exit code %s\n--- stdout ---\n%s\n--- stderr ---\n%s"
            % (" ".join(argv), proc.returncode, proc.stdout, proc.stderr)
        )
    return proc


def start_manage(project_dir, db, *args, python=None, env=None, **popen_kwargs):
    """Start ``python manage.py *args`` without waiting (e.g. to kill -9 it); a Popen.

    stdout and stderr are pipes in text mode unless overridden in ``popen_kwargs``.
    """
    argv = [python or default_python(), "manage.py"] + [str(arg) for arg in args]
    popen_kwargs.setdefault("stdout", subprocess.PIPE)
    popen_kwargs.setdefault("stderr", subprocess.PIPE)
    popen_kwargs.setdefault("text", True)
    return subprocess.Popen(
        argv, cwd=str(project_dir), env=manage_env(project_dir, db, env), **popen_kwargs
    )


_JSON_MARKER = "DBSAFE_DEMO_JSON:"


def django_json(project_dir, db, code, python=None, env=None):
    """Run ``code`` in ``manage.py shell -c`` and return its variable ``result`` (via JSON).

    ``code`` runs with Django set up (models importable, ``django.db.connection`` usable);
    it must assign a JSON-serialisable ``result`` (non-JSON values go through ``str``).
    """
    script = "%s\nimport json as _json\nprint(%r + _json.dumps(result, default=str))\n" % (
        textwrap.dedent(code), _JSON_MARKER)
    proc = manage(project_dir, db, "shell", "-c", script, python=python, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(_JSON_MARKER):
            return json.loads(line[len(_JSON_MARKER):])
    raise AssertionError("no result printed\n--- stdout ---\n%s\n--- stderr ---\n%s"
                         % (proc.stdout, proc.stderr))


# --- Reading Django's output ------------------------------------------------------------------

_SHOW_LINE = re.compile(r"^\s+\[(?P<mark>[ X-])\]\s+(?P<name>\S+)")


def parse_showmigrations(output):
    """Parse ``showmigrations --list`` output into {app: [(name, applied), ...]}.

    ``[X]`` is applied, ``[ ]`` is not. ``[-]`` (a squashed migration whose replaced
    migrations are all applied but which is not recorded itself) counts as applied.
    Suffixes such as "(4 squashed migrations)" or "(applied at ...)" are dropped; an app
    showing "(no migrations)" maps to an empty list.
    """
    result = {}
    app = None
    for line in output.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            app = line.strip()
            result[app] = []
            continue
        match = _SHOW_LINE.match(line)
        if match and app is not None:
            result[app].append((match.group("name"), match.group("mark") != " "))
    return result


def showmigrations(project_dir, db, python=None, apps=()):
    """{app: [(migration name, applied), ...]} from ``manage.py showmigrations --list``."""
    proc = manage(project_dir, db, "showmigrations", "--list", "--no-color", *apps,
                  python=python)
    return parse_showmigrations(proc.stdout)


_PLAN_ENTRY = re.compile(r"^(?P<app>[A-Za-z_][\w]*)\.(?P<name>\w+)$")


def parse_migrate_plan(output):
    """Parse ``migrate --plan`` output into ["app.name", ...] in plan order.

    The output is a "Planned operations:" header, then each migration as an unindented
    ``app.name`` line followed by its operations indented by four spaces (Django strips
    newlines from the descriptions), or "  No planned migration operations.". Backwards
    plans (migrating to an earlier target) list the migrations to unapply, in that order.
    """
    plan = []
    for line in output.splitlines():
        if not line.strip() or line[0].isspace():
            continue
        match = _PLAN_ENTRY.match(line.strip())
        if match:
            plan.append(line.strip())
    return plan


def migrate_plan(project_dir, db, python=None, app_label=None, migration_name=None):
    """The migrations ``manage.py migrate [app_label [migration_name]] --plan`` would run."""
    args = ["migrate", "--plan", "--no-color"]
    if app_label:
        args.append(app_label)
        if migration_name:
            args.append(migration_name)
    proc = manage(project_dir, db, *args, python=python)
    return parse_migrate_plan(proc.stdout)


# --- Migration files --------------------------------------------------------------------------


def migrations_dir(project_dir, app=BOOKS):
    return os.path.join(str(project_dir), app, "migrations")


def migration_names(project_dir, app=BOOKS):
    """The names of the migration files of ``app``, sorted."""
    return sorted(
        name[:-3]
        for name in os.listdir(migrations_dir(project_dir, app))
        if name.endswith(".py") and name != "__init__.py" and not name.startswith((".", "~"))
    )


def _migration_info(path):
    """(dependencies, replaces) of a migration file: lists of (app, name) literals."""
    with open(path) as handle:
        tree = ast.parse(handle.read(), path)
    info = {"dependencies": [], "replaces": []}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ClassDef) and node.name == "Migration"):
            continue
        for statement in node.body:
            if not isinstance(statement, ast.Assign) or not isinstance(statement.value, ast.List):
                continue
            for target in statement.targets:
                if isinstance(target, ast.Name) and target.id in info:
                    for element in statement.value.elts:
                        try:  # swappable_dependency(...) and the like are not literals
                            value = ast.literal_eval(element)
                        except ValueError:
                            continue
                        if isinstance(value, tuple) and len(value) == 2:
                            info[target.id].append(value)
    return info


def leaf_migrations(project_dir, app=BOOKS):
    """The leaf migrations of ``app`` computed from its files (sorted; one unless conflicted).

    A squashed migration stands in for the ones it replaces when those files still exist,
    as Django does when none or all of them are applied.
    """
    names = migration_names(project_dir, app)
    infos = {
        name: _migration_info(os.path.join(migrations_dir(project_dir, app), name + ".py"))
        for name in names
    }
    replaced_by = {}
    for name, info in infos.items():
        for dep_app, dep_name in info["replaces"]:
            if dep_app == app:
                replaced_by[dep_name] = name
    nodes = set(names) - set(replaced_by)
    depended_on = set()
    for name in nodes:
        for dep_app, dep_name in infos[name]["dependencies"]:
            if dep_app == app:
                depended_on.add(replaced_by.get(dep_name, dep_name))
    return sorted(nodes - depended_on)


def leaf_migration(project_dir, app=BOOKS):
    """The single leaf migration of ``app``; ValueError if the app has none or several."""
    leaves = leaf_migrations(project_dir, app)
    if len(leaves) != 1:
        raise ValueError("%s has %d leaf migrations: %s" % (app, len(leaves), leaves))
    return leaves[0]


def next_number(project_dir, app=BOOKS):
    """The next free migration number of ``app`` as four digits, e.g. "0006"."""
    numbers = [int(m.group(1)) for m in
               (re.match(r"^(\d+)_", name) for name in migration_names(project_dir, app)) if m]
    return "%04d" % (max(numbers or [0]) + 1)


def _write_migration(project_dir, name, dependency, operations, preamble=""):
    """Write books/migrations/<name>.py depending on ``dependency`` with ``operations``.

    ``operations`` is the source of the list items (indented by the caller's dedent);
    ``preamble`` is module-level code (functions for RunPython).
    """
    source = (
        '"""Written by tests/integration/demo.py for a test scenario."""\n'
        "import os\n"
        "import time\n\n"
        "from django.db import migrations, models\n\n"
        "%s\n\n"
        "class Migration(migrations.Migration):\n\n"
        "    dependencies = [\n"
        "        (%r, %r),\n"
        "    ]\n\n"
        "    operations = [\n"
        "%s"
        "    ]\n"
    ) % (
        textwrap.dedent(preamble).strip() + "\n" if preamble.strip() else "",
        BOOKS,
        dependency,
        textwrap.indent(textwrap.dedent(operations).strip() + "\n", " " * 8),
    )
    path = os.path.join(migrations_dir(project_dir), name + ".py")
    if os.path.exists(path):
        raise FileExistsError(path)
    with open(path, "w") as handle:
        handle.write(source)
    return name


def _add_model_field(project_dir, declaration):
    """Add ``declaration`` (e.g. ``rating = models.IntegerField(null=True)``) to Book."""
    path = os.path.join(str(project_dir), BOOKS, "models.py")
    with open(path) as handle:
        source = handle.read()
    book = [node for node in ast.parse(source).body
            if isinstance(node, ast.ClassDef) and node.name == "Book"]
    if not book:
        raise ValueError("no class Book in %s" % path)
    fields = [node for node in book[0].body if isinstance(node, ast.Assign)]
    anchor = fields[-1] if fields else book[0].body[0]
    lines = source.splitlines(True)
    lines.insert(anchor.end_lineno, "    %s\n" % declaration.strip())
    with open(path, "w") as handle:
        handle.write("".join(lines))


def _add_field_operation(field_name, field_source):
    return (
        "migrations.AddField(\n"
        "    model_name=\"book\",\n"
        "    name=%r,\n"
        "    field=%s,\n"
        "),\n" % (field_name, field_source)
    )


# --- Scenario builders (each changes only the copy it is given) -------------------------------


def add_conflict(project_dir):
    """Give ``books`` two leaves: two valid sibling migrations on the current leaf.

    Both get the next number (e.g. 0006_book_subtitle and 0006_book_language) and each adds
    a field that is also added to models.py, so the conflict is the only problem: after
    ``makemigrations --merge`` the project is consistent again. Returns both names.
    """
    leaf = leaf_migration(project_dir)
    number = next_number(project_dir)
    created = []
    for field_name, field_source in (
        ("subtitle", 'models.CharField(blank=True, default="", max_length=200)'),
        ("language", 'models.CharField(blank=True, default="", max_length=8)'),
    ):
        created.append(_write_migration(
            project_dir, "%s_book_%s" % (number, field_name), leaf,
            _add_field_operation(field_name, field_source),
        ))
        _add_model_field(project_dir, "%s = %s" % (field_name, field_source))
    return created


def add_pending_model_change(project_dir):
    """Add a field to Book in books/models.py without a migration; returns the field name."""
    _add_model_field(project_dir, "rating = models.PositiveSmallIntegerField(null=True, blank=True)")
    return "rating"


def delete_migration(project_dir, app, name):
    """Delete ``app/migrations/<name>.py`` (and its bytecode); returns the removed path.

    After the migration was applied this leaves a "ghost": a row in django_migrations with
    no file.
    """
    if name.endswith(".py"):
        name = name[:-3]
    directory = migrations_dir(project_dir, app)
    path = os.path.join(directory, name + ".py")
    os.remove(path)
    cache = os.path.join(directory, "__pycache__")
    if os.path.isdir(cache):
        for entry in os.listdir(cache):
            if entry.split(".")[0] == name:
                os.remove(os.path.join(cache, entry))
    return path


FAILURE_MESSAGE = "dbsafe demo: deliberate migration failure"


def add_failing_migration(project_dir, kind):
    """Add a books migration that changes the schema and then fails; returns its name.

    It adds the field ``reviewed`` (also added to models.py, so only the failure is wrong)
    and then fails: ``kind="runpython"`` raises RuntimeError(FAILURE_MESSAGE) from
    RunPython, ``kind="runsql"`` runs invalid SQL. Where DDL is transactional (PostgreSQL,
    SQLite) Django rolls the AddField back; on MySQL/MariaDB the column stays behind.
    """
    field_source = "models.BooleanField(default=False)"
    operations = _add_field_operation("reviewed", field_source)
    preamble = ""
    if kind == "runpython":
        preamble = (
            "def fail(apps, schema_editor):\n"
            "    raise RuntimeError(%r)\n" % FAILURE_MESSAGE
        )
        operations += "migrations.RunPython(fail, migrations.RunPython.noop),\n"
    elif kind == "runsql":
        operations += (
            "migrations.RunSQL(\n"
            "    \"THIS IS NOT VALID SQL -- dbsafe demo: deliberate migration failure\",\n"
            "    migrations.RunSQL.noop,\n"
            "),\n"
        )
    else:
        raise ValueError("kind must be 'runpython' or 'runsql', not %r" % (kind,))
    name = _write_migration(
        project_dir, "%s_failing_%s" % (next_number(project_dir), kind),
        leaf_migration(project_dir), operations, preamble,
    )
    _add_model_field(project_dir, "reviewed = %s" % field_source)
    return name


SLOW_MARKER = "slow_migration.started"


def slow_marker_path(project_dir):
    """The file the slow migration creates when it starts sleeping (inside the copy)."""
    return os.path.join(str(project_dir), SLOW_MARKER)


def add_slow_migration(project_dir, seconds):
    """Add a books migration that adds the field ``processed`` then sleeps; returns its name.

    The RunPython writes ``slow_marker_path(project_dir)`` and prints "slow migration
    sleeping" just before sleeping ``seconds``, so a test can wait for it and then kill -9
    the process mid-migration. The field is added to models.py too.
    """
    field_source = "models.BooleanField(default=False)"
    preamble = (
        "SECONDS = %r\n\n\n"
        "def sleep(apps, schema_editor):\n"
        "    project = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))\n"
        "    with open(os.path.join(project, %r), \"w\") as marker:\n"
        "        marker.write(str(os.getpid()))\n"
        "    print(\"slow migration sleeping\", flush=True)\n"
        "    time.sleep(SECONDS)\n" % (float(seconds), SLOW_MARKER)
    )
    operations = (
        _add_field_operation("processed", field_source)
        + "migrations.RunPython(sleep, migrations.RunPython.noop),\n"
    )
    name = _write_migration(
        project_dir, "%s_slow" % next_number(project_dir),
        leaf_migration(project_dir), operations, preamble,
    )
    _add_model_field(project_dir, "processed = %s" % field_source)
    return name


CHECK_ID = "books.E900"
CHECK_HINT = "Run manage.py prepare_upgrade first."


def add_system_check(project_dir):
    """Register a system check (tagged ``database``, like a project's check that blocks an
    upgrade on a database server) that reports an Error for every database it is asked about;
    returns its id. ``manage.py migrate`` refuses on it; ``check`` without --database does not
    see it."""
    source = (
        "\n\nfrom django.core import checks as _checks\n\n\n"
        "@_checks.register(_checks.Tags.database)\n"
        "def _dbsafe_test_check(app_configs=None, databases=None, **kwargs):\n"
        "    return [_checks.Error(\"the database %%s needs a manual step before migrating\" %% alias,\n"
        "                          hint=%r, id=%r) for alias in databases or []]\n"
        % (CHECK_HINT, CHECK_ID))
    with open(os.path.join(str(project_dir), BOOKS, "models.py"), "a") as handle:
        handle.write(source)
    return CHECK_ID


def boot_through_manage_py(project_dir, environment):
    """Make the copy boot only the way its manage.py boots it, as real projects do: manage.py
    installs PyMySQL as MySQLdb and loads ``.env`` (the database settings, from
    ``environment``), and the settings no longer install PyMySQL themselves. Without running
    manage.py's code first the project cannot reach its database."""
    with open(os.path.join(str(project_dir), ".env"), "w") as handle:
        for key, value in sorted(environment.items()):
            handle.write("%s=%s\n" % (key, value))
    manage_py = os.path.join(str(project_dir), "manage.py")
    with open(manage_py) as handle:
        source = handle.read()
    prologue = textwrap.dedent('''\
        import pathlib

        import pymysql

        if tuple(pymysql.version_info[:3]) < (1, 4, 3):
            pymysql.version_info = (1, 4, 6, "final", 0)
        pymysql.install_as_MySQLdb()

        # The settings come from .env, as with python-dotenv (the environment wins).
        _env = pathlib.Path(__file__).resolve().parent / ".env"
        for _line in _env.read_text().splitlines():
            if "=" in _line and not _line.lstrip().startswith("#"):
                _key, _value = _line.split("=", 1)
                os.environ.setdefault(_key.strip(), _value.strip())
        ''')
    source = source.replace("import sys\n", "import sys\n" + prologue, 1)
    with open(manage_py, "w") as handle:
        handle.write(source)
    settings = os.path.join(str(project_dir), "demo", "settings.py")
    with open(settings) as handle:
        text = handle.read()
    text = text.replace("        pymysql.install_as_MySQLdb()\n", "", 1)
    with open(settings, "w") as handle:
        handle.write(text)


def add_row_deleting_migration(project_dir, keep=60):
    """Add a books data migration that prints progress and deletes the authors after the
    first ``keep`` (by id), with a RunPython; returns its name."""
    preamble = (
        "def delete_rows(apps, schema_editor):\n"
        "    Author = apps.get_model('authors', 'Author')\n"
        "    doomed = list(Author.objects.order_by('id').values_list('id', flat=True)[%d:])\n"
        "    print('deleting %%d authors' %% len(doomed), flush=True)\n"
        "    Author.objects.filter(id__in=doomed).delete()\n" % keep
    )
    name = _write_migration(
        project_dir, "%s_delete_authors" % next_number(project_dir),
        leaf_migration(project_dir),
        "migrations.RunPython(delete_rows, migrations.RunPython.noop),\n", preamble)
    return name


def add_composite_index_migration(project_dir):
    """Add a books migration with an index on (author, title): it starts with the foreign key's
    column, so InnoDB drops the foreign key's implicit index - unless a restore made that index
    explicit. The index goes into Book's Meta too (no model change without a migration)."""
    name = _write_migration(
        project_dir, "%s_book_author_title" % next_number(project_dir),
        leaf_migration(project_dir),
        "migrations.AddIndex(\n"
        "    model_name='book',\n"
        "    index=models.Index(fields=['author', 'title'], name='book_author_title_idx'),\n"
        "),\n")
    path = os.path.join(str(project_dir), BOOKS, "models.py")
    with open(path) as handle:
        source = handle.read()
    meta = ("\n    class Meta:\n        indexes = [models.Index(fields=['author', 'title'], "
            "name='book_author_title_idx')]\n")
    source = source.replace("\n    def __str__(self):", meta + "\n    def __str__(self):", 1)
    with open(path, "w") as handle:
        handle.write(source)
    return name


def module_args(project_dir, db, python=None, **extra):
    """The project options a dbsafe.django module needs for this copy and database."""
    args = {
        "project_path": str(project_dir),
        "python": python or PYTHONS["5.2"],
        "environment": dict(db.demo_env(),
                            DEMO_MEDIA_ROOT=os.path.join(str(project_dir), "media")),
    }
    args.update(extra)
    return args


def damage_backup(path, damage):
    """Damage the backup at ``path`` the ways a real one gets damaged: ``truncated`` (half its
    bytes), ``flipped`` (one byte in the middle), ``other_engine`` (its manifest names
    PostgreSQL), ``missing`` (the file is gone)."""
    if damage == "truncated":
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) // 2)
    elif damage == "flipped":
        with open(path, "r+b") as handle:
            handle.seek(os.path.getsize(path) // 2)
            byte = handle.read(1)
            handle.seek(-1, os.SEEK_CUR)
            handle.write(bytes([byte[0] ^ 0xFF]))
    elif damage == "other_engine":
        with open(path + ".json") as handle:
            manifest = json.load(handle)
        manifest["engine"] = "postgresql"
        with open(path + ".json", "w") as handle:
            json.dump(manifest, handle)
    elif damage == "missing":
        os.unlink(path)
    else:
        raise ValueError(damage)
