# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The code that runs INSIDE the Django project's own interpreter.

``DjangoProject`` sends this file's source on stdin to the project's Python (which may be
Python 3.8 and Django 3.2: keep this file plain and compatible) together with a JSON request.
Everything is gathered in that one launch, because booting Django is the expensive part.

Requests:
- ``facts``: migration graph, applied rows, plan (to the latest state or to a target),
  conflicts, ghosts, inconsistent history, pending model changes, the system checks' messages,
  applied migrations edited since their checksum was recorded, database settings. Reads only.
- ``migrate``: runs ``migrate`` in-process, then records the applied migrations' checksums,
  gathers the facts again and runs the post-migration checks, so a guarded migrate needs one
  launch for planning and one for doing.
- ``warm``: imports Django's own framework modules and nothing of the project (no settings,
  no project path on sys.path), so that a later ``facts`` request in the same session boots
  in a fraction of the time. The guarded migrate sends it before the application is stopped
  and the code is switched: what it loads does not change in the switch.
- ``undo``: after a failed online migrate, Django's reverse operations put the database
  back at the migrations applied before it (the operations the failed migration kept, then
  the migrations the run completed), so rows the running application wrote meanwhile stay.
- ``migrate_to_set``: migrates an EMPTY database (the drift check's scratch database) to exactly
  a given applied set (``applied``: another database's django_migrations rows), not to the
  latest state, and returns the rows recorded afterwards.

Any request may carry ``database_overrides`` ({"NAME": ..., "HOST": ...}): merged into the
alias's settings before anything connects, so the request works on another database (for
SQLite NAME is the file) with the project's settings otherwise unchanged.

The answer is one line ``@@DBSAFE-RESULT@@ {json}`` on stdout, so whatever the project itself
prints (settings, migrations' print calls) cannot be mistaken for it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import sys
import time
import traceback

RESULT_MARKER = "@@DBSAFE-RESULT@@"


class IntrospectionError(Exception):
    def __init__(self, kind, message, **details):
        Exception.__init__(self, message)
        self.kind = kind
        self.message = message
        self.details = details


# What ``warm`` imports: Django's framework, never a project module. Each is optional (a
# database driver may be missing); none reads settings at import time.
WARM_MODULES = (
    "django.db.models",
    "django.db.migrations.autodetector",
    "django.db.migrations.executor",
    "django.db.migrations.loader",
    "django.db.migrations.questioner",
    "django.core.management",
    "django.core.management.commands.migrate",
    "django.core.checks",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes.fields",
    "django.forms",
    "django.template",
    "django.urls",
    "django.db.backends.sqlite3.base",
    "django.db.backends.postgresql.base",
    "django.db.backends.mysql.base",
)


def warm(request):
    """Import the framework before the project's code is there: with the project directory
    and DJANGO_SETTINGS_MODULE out of reach, so nothing of the running (old) code is loaded."""
    started = time.time()
    hidden = os.environ.pop("DJANGO_SETTINGS_MODULE", None)
    saved_path = list(sys.path)
    sys.path[:] = [p for p in sys.path if p not in ("", ".", os.getcwd())]
    loaded = []
    try:
        for name in WARM_MODULES:
            try:
                __import__(name)
                loaded.append(name)
            except Exception:  # e.g. no psycopg/mysqlclient: that backend is not used
                pass
    finally:
        sys.path[:] = saved_path
        if hidden is not None:
            os.environ["DJANGO_SETTINGS_MODULE"] = hidden
    from django.conf import settings
    if settings.configured:
        raise IntrospectionError("warm", "warming up Django configured its settings too early")
    return {"warmed": loaded, "timings": {"warm": round(time.time() - started, 4)}}


# How this process booted the project, once it did (a session's later requests reuse it).
_BOOTED = {}


class _HandOver(BaseException):
    """Raised where manage.py hands over to Django's command line: our request runs instead
    of a command. BaseException, so that manage.py's own ``except Exception`` lets it pass."""


def boot(request):
    """Set up the environment and Django exactly like manage.py does: by running manage.py's
    own code (pymysql.install_as_MySQLdb(), loading a .env, sys.path changes, the settings
    default...) up to its call of Django's command line. Without a manage.py (settings given),
    the way manage.py usually boots: the project on sys.path, then django.setup().

    Returns (django, how): how is {"boot": "manage.py" | "fallback"[, "boot_note": why]}."""
    project_path = request["project_path"]
    if not os.path.isdir(project_path):
        raise IntrospectionError("project_path", "project_path %s is not a directory" % project_path)
    manage_py = os.path.join(project_path, "manage.py")
    has_manage_py = os.path.isfile(manage_py)
    os.environ.update(request.get("environment") or {})
    if request.get("settings"):
        # As DJANGO_SETTINGS_MODULE=... manage.py: its setdefault keeps ours.
        os.environ["DJANGO_SETTINGS_MODULE"] = request["settings"]
    if not has_manage_py and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        raise IntrospectionError("project_path", "no manage.py in %s (and no settings given)"
                                 % project_path)
    os.chdir(project_path)
    if project_path not in sys.path:
        sys.path.insert(0, project_path)  # where python manage.py puts it: the script's directory
    try:
        import django
        from django.core import management
    except ImportError as error:
        raise IntrospectionError(
            "django_missing", "Django is not importable by %s: %s" % (sys.executable, error)
        )
    if _BOOTED:  # a later request of a session: manage.py ran, Django is set up
        return django, dict(_BOOTED)
    how = {"boot": "fallback", "boot_note": "no manage.py in %s" % project_path}
    if has_manage_py:
        if run_manage_py(manage_py, management, request):
            how = {"boot": "manage.py"}
        else:
            how["boot_note"] = ("manage.py ran but did not hand over to Django's command line "
                                "(execute_from_command_line or ManagementUtility.execute)")
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        raise IntrospectionError(
            "settings",
            "no settings module: pass settings (DJANGO_SETTINGS_MODULE); manage.py does not set one",
        )
    try:
        django.setup()
    except ImportError as error:
        raise IntrospectionError(
            "settings",
            "cannot import settings module %r: %s" % (os.environ["DJANGO_SETTINGS_MODULE"], error),
        )
    _BOOTED.update(how)
    return django, how


# The command manage.py is told it runs, for a manage.py that looks at sys.argv.
_COMMANDS = {"facts": "showmigrations", "migrate": "migrate", "migrate_to_set": "migrate"}


def run_manage_py(path, management, request):
    """Run manage.py as ``python manage.py <command>`` would, with Django's command line
    replaced by a hand-over back to us; True if it handed over."""
    import runpy

    def hand_over(*args, **kwargs):
        raise _HandOver()

    saved = (management.execute_from_command_line, management.ManagementUtility.execute,
             list(sys.argv))
    management.execute_from_command_line = hand_over
    management.ManagementUtility.execute = hand_over
    action = request.get("action") or "facts"
    sys.argv[:] = [path, request.get("command") or _COMMANDS.get(action, action)]
    try:
        runpy.run_path(path, run_name="__main__")
    except _HandOver:
        return True
    except SystemExit as error:
        raise IntrospectionError(
            "manage_py", "%s exited (status %s) before handing over to Django's command line"
            % (path, error.code))
    except Exception as error:
        raise IntrospectionError(
            "manage_py", "%s failed before handing over to Django's command line: %s: %s"
            % (path, error.__class__.__name__, error), traceback=traceback.format_exc())
    finally:
        management.execute_from_command_line, management.ManagementUtility.execute = saved[:2]
        sys.argv[:] = saved[2]
    return False


def connection_for(alias):
    from django.db import connections

    if alias not in connections.databases:
        raise IntrospectionError(
            "database_alias",
            "database alias %r is not in settings.DATABASES (known: %s)"
            % (alias, ", ".join(sorted(connections.databases))),
        )
    return connections[alias]


def database_settings(connection):
    settings = connection.settings_dict
    entry = {
        "alias": connection.alias,
        "vendor": connection.vendor,
        "ENGINE": settings.get("ENGINE"),
        "NAME": str(settings.get("NAME") or ""),
        "HOST": settings.get("HOST") or "",
        "PORT": str(settings.get("PORT") or ""),
        "USER": settings.get("USER") or "",
        "PASSWORD": settings.get("PASSWORD") or "",
        "OPTIONS": _jsonable(settings.get("OPTIONS") or {}),
        "exists": True,
    }
    if connection.vendor == "sqlite":
        name = entry["NAME"]
        in_memory = name == ":memory:" or name.startswith("file::memory:")
        entry["NAME"] = name if in_memory else os.path.abspath(name)
        entry["exists"] = in_memory or os.path.exists(entry["NAME"])
    return entry


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        if isinstance(value, dict):
            return dict((str(k), _jsonable(v)) for k, v in value.items())
        return repr(value)


# Seconds the driver waits for the server to answer a new connection unless the alias's
# OPTIONS set connect_timeout: a host that accepts TCP and never answers must not hang a run.
CONNECT_TIMEOUT = 10


def ensure_connected(connection, entry):
    from django.db.utils import OperationalError, InterfaceError

    options = connection.settings_dict.setdefault("OPTIONS", {})
    added = []
    if connection.vendor in ("postgresql", "mysql") and "connect_timeout" not in options:
        options["connect_timeout"] = CONNECT_TIMEOUT
    if connection.vendor == "mysql" and "read_timeout" not in options and \
            getattr(sys.modules.get("MySQLdb"), "__name__", "") == "pymysql":
        # PyMySQL's connect_timeout ends once TCP connects; it reads the server's greeting
        # with read_timeout, set only while connecting (a long ALTER must not time out).
        options["read_timeout"] = CONNECT_TIMEOUT
        added.append("read_timeout")
    try:
        connection.ensure_connection()
    except (OperationalError, InterfaceError) as error:
        raise IntrospectionError(
            "database_unreachable", str(error).strip(), database=_public(entry)
        )
    finally:
        for key in added:
            options.pop(key, None)
    if added and hasattr(connection.connection, "_read_timeout"):
        connection.connection._read_timeout = None
    if connection.vendor == "mysql":
        entry["vendor_flavour"] = "mariadb" if connection.mysql_is_mariadb else "mysql"


def _public(entry):
    return dict((k, v) for k, v in entry.items() if k != "PASSWORD")


def build_loader(connection, entry):
    """One MigrationLoader for everything. A missing SQLite file is an empty database: we do
    not connect (connecting would create the file, and introspection writes nothing)."""
    from django.db.migrations.loader import MigrationLoader

    return MigrationLoader(connection if entry["exists"] else None, ignore_no_migrations=True)


def executor_for(connection, loader):
    """A MigrationExecutor that reuses our loader instead of loading every migration again."""
    from django.db.migrations.executor import MigrationExecutor
    from django.db.migrations.recorder import MigrationRecorder

    executor = MigrationExecutor.__new__(MigrationExecutor)
    executor.connection = connection
    executor.loader = loader
    executor.recorder = MigrationRecorder(connection)
    executor.progress_callback = None
    return executor


def applied_rows(connection, entry):
    """(app, name) -> applied datetime ISO string, straight from django_migrations."""
    from django.db.migrations.recorder import MigrationRecorder

    if not entry["exists"]:
        return {}
    recorder = MigrationRecorder(connection)
    if not recorder.has_table():
        return {}
    rows = {}
    for app, name, applied in recorder.migration_qs.values_list("app", "name", "applied"):
        rows[(app, name)] = applied.isoformat() if applied is not None else None
    return rows


def check_apps(labels):
    from django.apps import apps

    unknown = []
    for label in labels or []:
        try:
            apps.get_app_config(label)
        except LookupError:
            unknown.append(label)
    if unknown:
        raise IntrospectionError(
            "unknown_app",
            "unknown app label(s): %s (installed: %s)"
            % (", ".join(unknown), ", ".join(sorted(a.label for a in apps.get_app_configs()))),
        )


def app_migrations(loader, rows):
    """Per app, its migrations in graph order, as showmigrations lists them."""
    graph = loader.graph
    result = {}
    for app_label in sorted(loader.migrated_apps):
        shown = set()
        entries = []
        for leaf in graph.leaf_nodes(app_label):
            for node in graph.forwards_plan(leaf):
                if node in shown or node[0] != app_label:
                    continue
                shown.add(node)
                migration = graph.nodes[node]
                replaces = ["%s.%s" % key for key in (getattr(migration, "replaces", None) or [])]
                applied_at = rows.get(node)
                if applied_at is None and replaces:
                    dates = [rows.get(tuple(r.split(".", 1))) for r in replaces]
                    dates = [d for d in dates if d]
                    applied_at = max(dates) if dates else None
                entries.append({
                    "name": node[1],
                    "applied": node in loader.applied_migrations,
                    "applied_at": applied_at,
                    "replaces": replaces,
                })
        result[app_label] = entries
    return result


def conflicts(loader):
    found = loader.detect_conflicts()
    return dict((app, sorted(names)) for app, names in found.items())


def ghosts(loader, rows):
    """Applied rows whose migration no longer exists in code (and no squash replaces it)."""
    replaced = set()
    for migration in loader.disk_migrations.values():
        replaced.update(tuple(key) for key in (getattr(migration, "replaces", None) or []))
    return sorted(
        "%s.%s" % key for key in rows if key not in loader.disk_migrations and key not in replaced
    )


def inconsistent(loader, rows):
    """Every applied migration with an unapplied dependency (Django raises on the first)."""
    graph = loader.graph
    problems = []
    for key in sorted(rows):
        if key not in graph.nodes:
            continue
        for parent in sorted(graph.node_map[key].parents, key=lambda n: n.key):
            parent_key = parent.key
            if parent_key in rows:
                continue
            replacement = loader.replacements.get(parent_key)
            if replacement is not None and all(tuple(r) in rows for r in replacement.replaces):
                continue
            problems.append({
                "migration": "%s.%s" % key,
                "missing_dependency": "%s.%s" % parent_key,
            })
    return problems


def pending_changes(loader):
    """What ``makemigrations --check`` would write, per app: operation descriptions."""
    from django.apps import apps
    from django.db.migrations.autodetector import MigrationAutodetector
    from django.db.migrations.questioner import MigrationQuestioner
    from django.db.migrations.state import ProjectState

    # The base questioner answers with defaults and never exits or prompts.
    questioner = MigrationQuestioner(specified_apps=set(), dry_run=True)
    autodetector = MigrationAutodetector(
        migrations_state(loader), ProjectState.from_apps(apps), questioner
    )
    changes = autodetector.changes(graph=loader.graph)
    result = {}
    for app_label, migrations in sorted(changes.items()):
        result[app_label] = [
            describe(operation) for migration in migrations for operation in migration.operations
        ]
    return result


def migrations_state(loader):
    """``loader.project_state()``: the state every migration builds, applied in the same order.

    Django collects that order with a list membership test per migration (quadratic: seconds
    at 5,000 migrations); a set gives the same order in linear time.
    """
    from django.db.migrations.state import ProjectState

    graph = loader.graph
    seen = set()
    order = []
    for leaf in graph.leaf_nodes():
        for key in graph.forwards_plan(leaf):
            if key not in seen:
                seen.add(key)
                order.append(key)
    state = ProjectState(real_apps=loader.unmigrated_apps)
    for key in order:
        state = graph.nodes[key].mutate_state(state, preserve=False)
    return state


def describe(operation):
    try:
        return operation.describe()
    except Exception:  # a third-party operation without describe()
        return operation.__class__.__name__


def resolve_target(loader, app_label, migration_name):
    """Targets like ``migrate APP [NAME]``: a full name, a unique prefix such as 0002, zero,
    or nothing for the app's latest."""
    from django.db.migrations.exceptions import AmbiguityError

    if app_label not in loader.migrated_apps:
        raise IntrospectionError("unknown_app", "app %r has no migrations" % app_label)
    if migration_name == "zero":
        return [(app_label, None)]
    if not migration_name:  # `migrate APP`: the app's leaf
        return [key for key in loader.graph.leaf_nodes() if key[0] == app_label]
    try:
        migration = loader.get_migration_by_prefix(app_label, migration_name)
    except AmbiguityError:
        candidates = sorted(
            name for (app, name) in loader.disk_migrations
            if app == app_label and name.startswith(migration_name)
        )
        raise IntrospectionError(
            "ambiguous_target",
            "%r matches more than one migration in app %r: %s; give more of the name"
            % (migration_name, app_label, ", ".join(candidates)),
            candidates=candidates,
        )
    except KeyError:
        candidates = sorted(name for (app, name) in loader.disk_migrations if app == app_label)
        raise IntrospectionError(
            "unknown_target",
            "app %r has no migration matching %r; its migrations: %s"
            % (app_label, migration_name, ", ".join(candidates)),
            candidates=candidates,
        )
    target = (app_label, migration.name)
    # A squash that is only partly applied is not in the graph: aim at its last replaced one.
    if target not in loader.graph.nodes and target in loader.replacements:
        target = tuple(loader.replacements[target].replaces[-1])
    return [target]


def plan(executor, targets, with_sql=False):
    steps = []
    migration_plan = executor.migration_plan(targets)
    details = operation_details(executor, migration_plan)
    for index, (migration, backwards) in enumerate(migration_plan):
        step = {
            "migration": "%s.%s" % (migration.app_label, migration.name),
            "backwards": bool(backwards),
            "atomic": bool(getattr(migration, "atomic", True)),
            # What an online deploy needs to split the plan (online.py): the migrations this
            # one depends on, and its deploy stage as django-safemigrate or django-syzygy mark it.
            "dependencies": ["%s.%s" % tuple(key) for key in migration.dependencies],
            "stage_marker": stage_marker(migration),
            "operations": [
                {
                    "type": op.__class__.__name__,
                    "description": describe(op),
                    "reversible": bool(getattr(op, "reversible", True)),
                    # What risk.py classifies: the class, table, field before and after.
                    "detail": details[index][position],
                }
                for position, op in enumerate(migration.operations)
            ],
        }
        if with_sql:
            step["sql"] = collect_sql(executor, migration, backwards)
        steps.append(step)
    return steps


def stage_marker(migration):
    """``before`` | ``after`` | ``always`` | None: the deploy stage a migration declares -
    django-safemigrate's ``safe`` (True/False in 1.x, the ``Safe`` enum in 2.x-4.x, ``Safe.x()``
    with ``.when`` in 5.x) or django-syzygy's ``stage`` (``Stage.PRE_DEPLOY``/``POST_DEPLOY``)."""
    safe = getattr(migration, "safe", None)
    if safe is True:
        return "before"
    if safe is False:
        return "after"
    if safe is not None:
        value = getattr(getattr(safe, "when", safe), "value", None)
        if value in ("before_deploy", "after_deploy", "always"):
            return value.split("_")[0]
    stage = getattr(migration, "stage", None)
    value = getattr(stage, "value", stage)
    if value == "pre_deploy":
        return "before"
    if value in ("post_deploy", "post_deployment"):
        return "after"
    return None


# Django's operation classes risk.py knows; a subclass (a project's own AddField) is described
# as the first of these in its MRO.
KNOWN_OPERATIONS = (
    "AddField", "AlterField", "RemoveField", "RenameField", "CreateModel", "DeleteModel",
    "RenameModel", "AlterModelTable", "AddIndex", "AddIndexConcurrently", "RemoveIndex",
    "RemoveIndexConcurrently", "RenameIndex", "AddConstraint", "AddConstraintNotValid",
    "ValidateConstraint", "RemoveConstraint", "AlterUniqueTogether", "AlterIndexTogether",
    "RunSQL", "RunPython", "SeparateDatabaseAndState", "AlterModelOptions",
    "AlterModelManagers", "AlterOrderWithRespectTo",
)


def operation_details(executor, migration_plan):
    """Per step of the plan, per operation, a plain description for risk.py, each operation
    seen in the project state it runs from (the table's name, the field before). Never
    raises: an operation that cannot be described says why."""
    state = None
    try:
        if migration_plan:  # building the state costs: only for a plan
            state = executor._create_project_state(with_applied_migrations=True)
    except Exception:
        pass
    details = []
    for migration, backwards in migration_plan:
        found = []
        for operation in migration.operations:
            try:
                found.append(describe_operation(operation, migration.app_label, state,
                                                executor.connection))
            except Exception as error:
                found.append({"class": operation.__class__.__name__,
                              "error": "%s: %s" % (error.__class__.__name__, error)})
            if state is not None and not backwards:
                try:
                    operation.state_forwards(migration.app_label, state)
                except Exception:
                    state = None
        details.append(found)
    return details


def _known_class(operation):
    for klass in operation.__class__.__mro__:
        if klass.__name__ in KNOWN_OPERATIONS:
            return klass.__name__
    return operation.__class__.__name__


def _model_state(state, app_label, model_name):
    if state is None or not model_name:
        return None
    return state.models.get((app_label, model_name.lower()))


def _table_of(state, app_label, model_name):
    model = _model_state(state, app_label, model_name)
    if model is not None and model.options.get("db_table"):
        return model.options["db_table"]
    return "%s_%s" % (app_label, (model_name or "").lower())


def _old_field(state, app_label, model_name, name):
    model = _model_state(state, app_label, model_name)
    if model is None:
        return None
    fields = model.fields
    if isinstance(fields, dict):
        return fields.get(name)
    for field_name, field in fields:  # Django before 3.1: a list of pairs
        if field_name == name:
            return field
    return None


def describe_field(field, connection):
    from django.db.models import NOT_PROVIDED

    if field is None:
        return None
    db_default = getattr(field, "db_default", NOT_PROVIDED)  # Django 5.0+
    info = {
        "type": field.get_internal_type(),
        "null": bool(field.null),
        "has_default": bool(field.has_default()),
        "callable_default": bool(field.has_default() and callable(field.default)),
        "db_default": db_default is not NOT_PROVIDED,
        "db_default_expression": db_default is not NOT_PROVIDED and hasattr(db_default, "resolve_expression")
        and db_default.__class__.__name__ != "Value",
        "unique": bool(getattr(field, "_unique", False)),
        "primary_key": bool(field.primary_key),
        "db_index": bool(getattr(field, "db_index", False)),
        "relation": bool(field.is_relation and not field.many_to_many),
        "many_to_many": bool(field.many_to_many),
        "db_constraint": bool(getattr(field, "db_constraint", True)),
        "db_type": None,
    }
    if not field.is_relation:
        try:
            info["db_type"] = field.db_type(connection)
        except Exception:  # a field that needs its model to say its type
            pass
    return info


def describe_operation(operation, app_label, state, connection):
    """One operation as plain data: its known class, the table and what risk.py needs."""
    kind = _known_class(operation)
    model_name = getattr(operation, "model_name", None) or getattr(operation, "name", None)
    if kind in ("RunSQL", "RunPython", "SeparateDatabaseAndState"):
        model_name = None
    detail = {"class": kind, "model": model_name,
              "table": _table_of(state, app_label, model_name) if model_name else None}
    if kind == "CreateModel":
        detail["table"] = (operation.options or {}).get("db_table") or detail["table"]
    if kind in ("AddField", "AlterField"):
        detail["field"] = describe_field(operation.field, connection)
    if kind in ("AlterField", "RemoveField"):
        detail["old_field"] = describe_field(
            _old_field(state, app_label, operation.model_name, operation.name), connection)
    if kind in ("AddIndex", "AddIndexConcurrently"):
        index = operation.index
        detail["unique"] = False
        detail["concurrent"] = kind == "AddIndexConcurrently"
        index_kind = index.__class__.__name__
        detail["index_kind"] = "FULLTEXT" if "FullText" in index_kind else index_kind
    if kind in ("AddConstraint", "AddConstraintNotValid"):
        constraint = operation.constraint
        name = constraint.__class__.__name__
        detail["constraint_kind"] = {"CheckConstraint": "check", "UniqueConstraint": "unique",
                                     "ExclusionConstraint": "exclusion"}.get(name, name)
        detail["not_valid"] = kind == "AddConstraintNotValid"
    if kind in ("AlterUniqueTogether", "AlterIndexTogether"):
        option = "unique_together" if kind == "AlterUniqueTogether" else "index_together"
        model = _model_state(state, app_label, operation.name)
        old = set(tuple(item) for item in ((model.options.get(option) if model else None) or ()))
        new = set(tuple(item) for item in (getattr(operation, option, None) or ()))
        detail["added"] = sorted(list(item) for item in new - old)
    if kind == "RunSQL":
        sql = operation.sql
        text = sql if isinstance(sql, str) else " ".join(str(item) for item in (sql or []))
        detail["sql"] = text.strip()[:200]
    if kind == "RunPython":
        detail["code"] = getattr(operation.code, "__name__", repr(operation.code))
    if kind == "SeparateDatabaseAndState":
        inner_state = state.clone() if state is not None else None
        inner = []
        for inner_operation in operation.database_operations:
            inner.append(describe_operation(inner_operation, app_label, inner_state, connection))
            if inner_state is not None:
                inner_operation.state_forwards(app_label, inner_state)
        detail["database_operations"] = inner
    return detail


def server_facts(connection):
    """The server the plan runs on: vendor, MariaDB or MySQL, version."""
    vendor = connection.vendor
    facts = {"vendor": vendor, "flavour": vendor, "version": ""}
    try:
        if vendor == "postgresql":
            number = connection.pg_version  # e.g. 150004
            facts["version"] = "%d.%d" % (number // 10000, number % 10000)
        elif vendor == "mysql":
            facts["flavour"] = "mariadb" if connection.mysql_is_mariadb else "mysql"
            facts["version"] = ".".join(str(part) for part in connection.mysql_version)
        elif vendor == "sqlite":
            import sqlite3
            facts["version"] = sqlite3.sqlite_version
    except Exception:  # not connected (a missing SQLite file): the version stays unknown
        pass
    return facts


# A table without statistics yet smaller than this is counted (cheap); larger ones are estimated.
COUNT_BELOW_BYTES = 64 * 1024 * 1024


def plan_tables(steps):
    tables = set()
    for step in steps:
        for operation in step["operations"]:
            detail = operation.get("detail") or {}
            for item in [detail] + list(detail.get("database_operations") or []):
                if item.get("table"):
                    tables.add(item["table"])
    return sorted(tables)


def table_stats(connection, entry, tables):
    """{table: {"rows": estimated rows, "bytes": size}} of the plan's existing tables, from the
    catalog (PostgreSQL reltuples, information_schema.tables' TABLE_ROWS); a table never
    analysed and small is counted. Reads only; a table that does not exist is left out."""
    if not tables or not entry["exists"]:
        return {}
    stats = {}
    quote = connection.ops.quote_name
    existing = set(connection.introspection.table_names())
    wanted = [table for table in tables if table in existing]
    with SessionTimeouts(connection, STATS_LOCK_WAIT), connection.cursor() as cursor:
        for table in wanted:
            try:
                stats[table] = _one_table_stats(connection, cursor, quote, table)
            except Exception as error:  # behind another session's lock: an estimate is not worth a wait
                stats[table] = {"rows": None, "bytes": None, "error": "%s: %s" % (error.__class__.__name__, error)}
    return stats


# Reading a table's size or count waits behind another session's exclusive lock on it (a
# migrate under way, a long ALTER): the facts give up on that table after this many seconds.
STATS_LOCK_WAIT = 1


class SessionTimeouts:
    """Bounded waits of this session (the one connection Django migrates and reads through),
    the previous values put back on exit.

    ``lock_wait``: seconds a statement may wait for a lock - PostgreSQL ``lock_timeout`` (any
    lock: tables, rows), MySQL/MariaDB ``lock_wait_timeout`` (metadata locks: DDL behind an
    open transaction) and, with ``row_locks``, ``innodb_lock_wait_timeout`` (rows), SQLite
    ``busy_timeout``; 0 leaves them as they are. ``statement``: seconds any statement may run
    (PostgreSQL ``statement_timeout``, MariaDB ``max_statement_time``; MySQL's
    ``max_execution_time`` covers SELECT only); None leaves it as it is.
    """

    def __init__(self, connection, lock_wait, statement=None, row_locks=False):
        self.connection = connection
        self.wanted = self._settings(connection, lock_wait, statement, row_locks)
        self.previous = []

    @staticmethod
    def _settings(connection, lock_wait, statement, row_locks):
        """[(name, value)] for this engine: what __enter__ sets."""
        wanted = []
        vendor = connection.vendor
        if vendor == "postgresql":
            if lock_wait:
                wanted.append(("lock_timeout", "%dms" % int(lock_wait * 1000)))
            if statement is not None:
                wanted.append(("statement_timeout", "%dms" % int(statement * 1000)))
        elif vendor == "mysql":
            if lock_wait:
                # Whole seconds, at least 1: what the server accepts.
                seconds = max(1, int(round(lock_wait)))
                wanted.append(("lock_wait_timeout", seconds))
                if row_locks:
                    wanted.append(("innodb_lock_wait_timeout", seconds))
            if statement is not None:
                if getattr(connection, "mysql_is_mariadb", False):
                    wanted.append(("max_statement_time", float(statement)))
                else:
                    wanted.append(("max_execution_time", int(statement * 1000)))
        elif vendor == "sqlite" and lock_wait:
            wanted.append(("busy_timeout", int(lock_wait * 1000)))
        return wanted

    def __enter__(self):
        self.connection.ensure_connection()
        with self.connection.cursor() as cursor:
            for name, value in self.wanted:
                self.previous.append((name, self._read(cursor, name)))
                self._write(cursor, name, value)
        return self

    def __exit__(self, *exc_info):
        try:
            with self.connection.cursor() as cursor:
                for name, value in reversed(self.previous):
                    self._write(cursor, name, value)
        except Exception:  # a broken connection keeps nothing of ours: nothing to put back
            pass
        return False

    def _read(self, cursor, name):
        vendor = self.connection.vendor
        if vendor == "postgresql":
            cursor.execute("SELECT current_setting(%s)", [name])
        elif vendor == "mysql":
            cursor.execute("SELECT @@SESSION.%s" % name)
        else:
            cursor.execute("PRAGMA %s" % name)
        return cursor.fetchone()[0]

    def _write(self, cursor, name, value):
        vendor = self.connection.vendor
        if vendor == "postgresql":
            # set_config outside a transaction: for the session (a rolled-back one would undo it).
            cursor.execute("SELECT set_config(%s, %s, false)", [name, str(value)])
        elif vendor == "mysql":
            cursor.execute("SET SESSION %s = %%s" % name, [value])
        else:
            cursor.execute("PRAGMA %s = %d" % (name, int(value)))


def _one_table_stats(connection, cursor, quote, table):
    """{"rows", "bytes"} of one existing table (estimates from the catalog where there are)."""
    rows, size = None, None
    if connection.vendor == "postgresql":
        cursor.execute("SELECT c.reltuples::bigint, pg_total_relation_size(c.oid), pg_relation_size(c.oid) "
                       "FROM pg_class c WHERE c.oid = to_regclass(%s)", [quote(table)])
        found = cursor.fetchone()
        if found:
            rows, size, heap = found
            if rows < 0 or (rows == 0 and heap > 0):  # never analysed
                rows = None if heap > COUNT_BELOW_BYTES else _count(cursor, quote(table))
    elif connection.vendor == "mysql":
        cursor.execute("SELECT TABLE_ROWS, DATA_LENGTH + INDEX_LENGTH, DATA_LENGTH FROM information_schema.tables "
                       "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s", [table])
        found = cursor.fetchone()
        if found:
            rows, size, data = int(found[0] or 0), int(found[1] or 0), int(found[2] or 0)
            if rows == 0 and data > 16384 and data < COUNT_BELOW_BYTES:  # statistics not updated yet
                rows = _count(cursor, quote(table))
    else:
        rows = _count(cursor, quote(table))
        try:
            cursor.execute("SELECT SUM(pgsize) FROM dbstat WHERE name = %s", [table])
            size = cursor.fetchone()[0]
        except Exception:  # SQLite built without the dbstat table
            size = None
    return {"rows": None if rows is None else int(rows),
            "bytes": None if size is None else int(size)}


def _count(cursor, quoted):
    cursor.execute("SELECT COUNT(*) FROM %s" % quoted)
    return cursor.fetchone()[0]


def collect_sql(executor, migration, backwards):
    """What ``sqlmigrate`` prints for one step."""
    try:
        return executor.loader.collect_sql([(migration, backwards)])
    except Exception as error:  # e.g. an irreversible step asked backwards
        return ["-- cannot render SQL: %s" % error]


# -- checksums of applied migrations ----------------------------------------------------------
# An applied migration edited afterwards never reaches the database that ran it. The checksum
# of what each migration does is recorded in our own table when it is applied; the facts list
# the applied migrations whose checksum changed since (``edited``).
#
# The checksum is over the migration's operations only, each as Django's ``deconstruct()``
# gives it, made canonical, so that how the file is written does not count:
# - operations, fields, indexes, constraints: the class name (not its module: Django moves its
#   classes between releases) with the arguments bound to their parameter names (positional or
#   keyword is the same); dicts by key, sets sorted, tuples as lists; a Q by its children;
# - RunSQL: the SQL without comments, each run of whitespace outside quotes one space (none
#   beside parentheses, commas and semicolons), no trailing semicolon;
# - a callable: its module and qualified name; a function defined in the migration's own file
#   (RunPython's) also by the syntax tree of its source (no comments, docstrings, spacing or
#   line breaks), so that a change of its body counts; what it calls is not followed; Django's
#   own callables (RunPython.noop, models.CASCADE) by name only.
# Django's own apps (django.contrib) are not tracked: Django edits their migrations itself.
# The dependencies and other attributes of the migration do not count: they change its order,
# not what it did. ``CHECKSUM_VERSION`` prefixes each checksum: a record of another version is
# taken again as a baseline, never compared.

CHECKSUM_TABLE = "dbsafe_migration_checksums"
CHECKSUM_VERSION = 1
# Keyword arguments Django renamed between releases, per class: the newer name counts.
RENAMED_KWARGS = {"CheckConstraint": {"check": "condition"}}


def _text(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def canonical(value, module=None):
    """``value`` (an operation and everything in it) as plain JSON data that says what it is
    and not how it was written. ``module``: the migration's module, whose own functions count
    by their source."""
    import datetime
    import decimal
    import enum
    import functools
    import re
    import uuid

    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):  # also Django's SettingsReference and TextChoices
        return str(value)
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if _is_lazy_text(value):
        return str(value)
    if isinstance(value, dict):
        return dict((key if isinstance(key, str) else _text(canonical(key, module)), canonical(item, module))
                    for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return [canonical(item, module) for item in value]
    if isinstance(value, (set, frozenset)):
        return {"set": sorted(_text(canonical(item, module)) for item in value)}
    if isinstance(value, enum.Enum):
        return {"enum": type(value).__name__, "value": canonical(value.value, module)}
    if isinstance(value, type):  # bases=(models.Model,), default=dict
        return {"class": value.__name__}
    if isinstance(value, functools.partial):
        return {"partial": canonical(value.func, module), "args": canonical(value.args, module),
                "keywords": canonical(value.keywords, module)}
    if _is_q(value):  # Django 3.2 deconstructs Q(a=1) into kwargs, later releases into args
        return {"class": type(value).__name__, "children": canonical(value.children, module),
                "connector": value.connector, "negated": bool(value.negated)}
    if callable(getattr(value, "deconstruct", None)):
        return _deconstructed(value, module)
    if callable(value):
        return _callable(value, module)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return {type(value).__name__: value.isoformat()}
    if isinstance(value, datetime.timedelta):
        return {"timedelta": value.total_seconds()}
    if isinstance(value, (decimal.Decimal, uuid.UUID, complex)):
        return {type(value).__name__: str(value)}
    if isinstance(value, type(re.compile(""))):
        return {"regex": value.pattern if isinstance(value.pattern, str) else canonical(value.pattern),
                "flags": value.flags}
    # Anything else by its class and repr, without a memory address (it differs every run).
    return {"object": type(value).__name__, "repr": re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))}


def _is_lazy_text(value):
    try:
        from django.utils.functional import Promise
    except ImportError:
        return False
    return isinstance(value, Promise)


def _is_q(value):
    try:
        from django.db.models import Q
    except ImportError:
        return False
    return isinstance(value, Q)


def _deconstructed(value, module):
    parts = value.deconstruct()
    if len(parts) == 4 and isinstance(parts[1], str):  # a field: (name, path, args, kwargs)
        parts = parts[1:]  # its name is the operation's argument
    if len(parts) != 3 or not isinstance(parts[0], str):
        return {"deconstructed": canonical(list(parts), module)}
    path, args, kwargs = parts
    name = path.rsplit(".", 1)[-1]
    arguments = _bound(type(value), args, kwargs)
    renamed = RENAMED_KWARGS.get(name, {})
    arguments = dict((renamed.get(key, key), item) for key, item in arguments.items())
    if name == "RunSQL":
        for key in ("sql", "reverse_sql"):
            if key in arguments:
                arguments[key] = sql_shape(arguments[key])
    return {"class": name, "arguments": canonical(arguments, module)}


_SIGNATURES = {}


def _bound(cls, args, kwargs):
    """The arguments as {parameter: value}: given positionally or by keyword is the same. The
    defaults are not filled in (a parameter a later Django adds would change every checksum)."""
    import inspect

    args, kwargs = list(args or ()), dict(kwargs or {})
    if not args:  # by keyword only (what Django's own classes deconstruct to): already bound
        return kwargs
    try:
        if cls not in _SIGNATURES:
            _SIGNATURES[cls] = inspect.signature(cls.__init__)
        signature = _SIGNATURES[cls]
        bound = signature.bind(None, *args, **kwargs)
    except (TypeError, ValueError):
        bound = None
    if bound is None:
        arguments = dict(kwargs)
        if args:
            arguments["*"] = args
        return arguments
    arguments = {}
    for position, (key, item) in enumerate(bound.arguments.items()):
        if position == 0:
            continue  # self
        kind = signature.parameters[key].kind
        if kind == inspect.Parameter.VAR_KEYWORD:
            arguments.update(item)
        elif kind == inspect.Parameter.VAR_POSITIONAL:
            arguments["*"] = list(item)
        else:
            arguments[key] = item
    return arguments


def _callable(value, module):
    import inspect

    name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None) or type(value).__name__
    owner = getattr(value, "__module__", None) or ""
    found = {"callable": name}
    if owner.split(".", 1)[0] != "django":
        found["module"] = owner
    function = getattr(value, "__func__", value)  # a bound method's function
    if module and owner == module and inspect.isfunction(function):
        try:
            found["code"] = code_shape(inspect.getsource(function))
        except (OSError, TypeError):  # no source (only a .pyc): its name only
            found["code"] = None
    return found


def code_shape(source):
    """Python source as its syntax tree, the same whatever the comments, docstrings, spacing
    and line breaks, and the same from Python 3.8 to 3.14 (their trees differ in details that
    are left out or unwrapped here). Source that does not parse on its own (a lambda in the
    middle of a call over several lines): its text with each run of whitespace one space."""
    import ast
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return {"text": " ".join(source.split())}
    return _tree_shape(tree)


# AST fields that are not what the code does (or only exist in some Python versions).
_SKIPPED_AST_FIELDS = ("ctx", "type_comment", "type_ignores", "kind", "type_params")


def _tree_shape(node):
    import ast

    if isinstance(node, list):
        return [_tree_shape(item) for item in node]
    if not isinstance(node, ast.AST):
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, bytes):
            return {"bytes": node.hex()}
        return {"constant": repr(node)}  # Ellipsis, complex
    kind = node.__class__.__name__
    if kind == "Index":  # Python 3.8 wraps a subscript's value
        return _tree_shape(node.value)
    if kind == "ExtSlice":  # Python 3.8; later a Tuple
        return {"_": "Tuple", "elts": _tree_shape(node.dims)}
    shape = {"_": kind}
    for field in node._fields:
        if field in _SKIPPED_AST_FIELDS:
            continue
        value = getattr(node, field, None)
        if field == "body" and isinstance(value, list) and _is_docstring(value[:1]):
            value = value[1:]
        if value is None or value == []:  # Python 3.13 leaves them out of its own dumps too
            continue
        shape[field] = _tree_shape(value)
    return shape


def _is_docstring(statements):
    import ast

    if not statements or not isinstance(statements[0], ast.Expr):
        return False
    value = statements[0].value
    return isinstance(value, ast.Constant) and isinstance(value.value, str)


def sql_shape(sql):
    """RunSQL's ``sql`` (a string, or a list of strings and (sql, params) pairs) normalised."""
    if isinstance(sql, str):
        return sql_text(sql)
    if isinstance(sql, (list, tuple)):
        shaped = []
        for item in sql:
            if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str):
                shaped.append([sql_text(item[0]), item[1]])
            else:
                shaped.append(sql_text(item) if isinstance(item, str) else item)
        return shaped
    return sql


_SQL_TIGHT = "(),;"


def sql_text(text):
    """SQL without comments (-- to the end of the line, /* */), each run of whitespace outside
    quotes one space and none beside ( ) , ;, and no trailing semicolon. Quoted text ('', "",
    ``) is kept as it is: a changed string literal is a changed migration."""
    out = []
    space = False
    index, size = 0, len(text)
    while index < size:
        char = text[index]
        if char in "'\"`":
            end = index + 1
            while end < size:
                if text[end] == "\\" and char != "`":
                    end += 2
                    continue
                if text[end] == char:
                    if end + 1 < size and text[end + 1] == char:  # a doubled quote
                        end += 2
                        continue
                    break
                end += 1
            piece = text[index:end + 1]
            index = end + 1
        elif text.startswith("--", index):
            newline = text.find("\n", index)
            index = size if newline < 0 else newline
            space = True
            continue
        elif text.startswith("/*", index):
            close = text.find("*/", index + 2)
            index = size if close < 0 else close + 2
            space = True
            continue
        elif char.isspace():
            space = True
            index += 1
            continue
        else:
            piece = char
            index += 1
        if space and out and out[-1][-1:] not in _SQL_TIGHT and piece[:1] not in _SQL_TIGHT:
            out.append(" ")
        space = False
        out.append(piece)
    return "".join(out).rstrip(";").strip()


def migration_checksum(migration):
    """"<CHECKSUM_VERSION>:<sha256>" of what ``migration`` does (see above)."""
    import hashlib

    module = type(migration).__module__
    text = _text([canonical(operation, module) for operation in migration.operations])
    return "%d:%s" % (CHECKSUM_VERSION, hashlib.sha256(text.encode("utf-8")).hexdigest())


_CHECKSUM_MODEL = []


def checksum_model():
    """Our table as a model outside the project's apps (as Django's MigrationRecorder does for
    django_migrations), so that every engine gets its own column types and quoting."""
    if not _CHECKSUM_MODEL:
        from django.apps.registry import Apps
        from django.db import models
        from django.utils.timezone import now

        class Meta:
            apps = Apps()
            app_label = "dbsafe"
            db_table = CHECKSUM_TABLE

        attributes = {
            "__module__": __name__, "Meta": Meta,
            "id": models.AutoField(primary_key=True),
            "app": models.CharField(max_length=255),
            "name": models.CharField(max_length=255),
            "checksum": models.CharField(max_length=80),
            "recorded_at": models.DateTimeField(default=now),
        }
        _CHECKSUM_MODEL.append(type("MigrationChecksum", (models.Model,), attributes))
    return _CHECKSUM_MODEL[0]


def checksum_table_exists(connection, entry):
    if not entry["exists"]:
        return False
    with connection.cursor() as cursor:
        return CHECKSUM_TABLE in connection.introspection.table_names(cursor)


def recorded_checksums(connection):
    """(app, name) -> (checksum, recorded_at ISO string) from our table (which exists)."""
    model = checksum_model()
    found = {}
    for app, name, checksum, recorded_at in model.objects.using(connection.alias).values_list(
            "app", "name", "checksum", "recorded_at"):
        found[(app, name)] = (checksum, recorded_at.isoformat() if recorded_at is not None else None)
    return found


def tracked(loader, keys):
    """Of ``keys`` (applied rows), those whose checksum is kept: each with a migration file (not
    a ghost, nor replaced by a squash whose files are gone), Django's own apps' left out (a
    Django upgrade edits them: what they do is Django's business, not the project's)."""
    found = {}
    for key in keys:
        migration = loader.disk_migrations.get(key)
        if migration is not None and not type(migration).__module__.startswith("django."):
            found[key] = migration
    return found


def current_checksums(migrations):
    """(checksums, errors): the checksum of each of ``migrations`` ({key: migration}), and why
    one could not be computed."""
    checksums, errors = {}, {}
    for key, migration in migrations.items():
        try:
            checksums[key] = migration_checksum(migration)
        except Exception as error:
            errors["%s.%s" % key] = "%s: %s" % (error.__class__.__name__, error)
    return checksums, errors


def record_checksums(request, connection, entry, loader, rows):
    """After our migrate (under the guard's lock): create the table on first use, record the
    checksum of each applied migration that has none (on first use: every one, the baseline),
    record it afresh for the steps just applied (and with ``allow_edited`` for edited ones),
    and delete the records of migrations no longer applied."""
    from django.db import transaction

    model = checksum_model()
    created = False
    if not checksum_table_exists(connection, entry):
        with connection.schema_editor() as editor:
            editor.create_model(model)
        created = True
    recorded = recorded_checksums(connection)
    fresh = set()
    for step in request.get("migrated") or []:
        if step.get("ok") and step.get("action") in ("applying", "faking"):
            key = tuple(step["migration"].split(".", 1))
            fresh.add(key)
            migration = loader.disk_migrations.get(key)
            fresh.update(tuple(r) for r in (getattr(migration, "replaces", None) or []))
    current, errors = current_checksums(tracked(loader, rows))
    prefix = "%d:" % CHECKSUM_VERSION
    write = []
    for key, checksum in sorted(current.items()):
        old = recorded.get(key)
        if old is None or key in fresh or not old[0].startswith(prefix) or \
                (request.get("allow_edited") and old[0] != checksum):
            write.append(key)
    gone = [key for key in recorded if key not in rows]
    with transaction.atomic(using=connection.alias):
        for app, name in sorted(set(write) | set(gone)):
            model.objects.using(connection.alias).filter(app=app, name=name).delete()
        model.objects.using(connection.alias).bulk_create(
            [model(app=app, name=name, checksum=current[(app, name)]) for app, name in write])
    return {"created": created, "written": len(write), "deleted": len(gone), "errors": errors}


def checksum_facts(request, connection, entry, loader, rows, timings):
    """Whether tracking is on and active (our table exists), how many applied migrations have a
    record, and ``edited``: the applied ones whose checksum differs from their record. Writes
    only after our own migrate (a request with ``migrated``); ``track_checksums: false``: our
    table is neither read nor written. Never raises: a failure is part of the answer."""
    if request.get("track_checksums") is False:
        return {"enabled": False, "active": False, "table": CHECKSUM_TABLE, "edited": []}
    started = time.time()
    facts = {"enabled": True, "active": False, "table": CHECKSUM_TABLE, "recorded": 0,
             "unrecorded": 0, "edited": [], "errors": {}, "error": None}
    if request.get("migrated") is not None:
        try:
            facts["written"] = record_checksums(request, connection, entry, loader, rows)
        except Exception as error:
            facts["write_error"] = "%s: %s" % (error.__class__.__name__, error)
    try:
        if checksum_table_exists(connection, entry):
            facts["active"] = True
            recorded = recorded_checksums(connection)
            prefix = "%d:" % CHECKSUM_VERSION
            migrations = tracked(loader, rows)
            compared = dict((key, migration) for key, migration in migrations.items()
                            if key in recorded and recorded[key][0].startswith(prefix))
            current, facts["errors"] = current_checksums(compared)
            facts["recorded"] = len(compared)
            facts["unrecorded"] = len(migrations) - len(compared)
            facts["edited"] = [{"migration": "%s.%s" % key, "recorded_at": recorded[key][1]}
                               for key in sorted(current) if current[key] != recorded[key][0]]
        else:
            facts["unrecorded"] = len(tracked(loader, rows))
    except Exception as error:
        facts["error"] = "%s: %s" % (error.__class__.__name__, error)
    timings["checksums"] = round(time.time() - started, 4)
    return facts


CHECK_LEVELS = ((50, "CRITICAL"), (40, "ERROR"), (30, "WARNING"), (20, "INFO"), (0, "DEBUG"))


def system_checks(connection, entry):
    """The messages of the system checks ``manage.py migrate`` runs before it touches the
    database (its ``self.check(databases=[database])``: every tag, no deployment checks),
    silenced ones left out. A missing SQLite file is not connected to (that would create it):
    the checks then run without the database, as they would with no database at all."""
    from django.core import checks

    databases = [connection.alias] if entry["exists"] else None
    try:
        messages = checks.run_checks(include_deployment_checks=False, databases=databases)
    except Exception as error:  # manage.py migrate would stop on it too
        return [{"id": None, "level": "ERROR", "serious": True, "obj": None, "hint": None,
                 "message": "a system check raised %s: %s" % (error.__class__.__name__, error)}]
    found = []
    for message in messages:
        if message.is_silenced():
            continue
        level = next(name for floor, name in CHECK_LEVELS if message.level >= floor)
        obj = message.obj
        if hasattr(obj, "_meta"):
            obj = obj._meta.label
        found.append({"id": message.id, "level": level, "serious": message.is_serious(),
                      "message": str(message.msg),
                      "hint": str(message.hint) if message.hint is not None else None,
                      "obj": str(obj) if obj is not None else None})
    return found


def gather(request, connection, entry, timings):
    started = time.time()
    loader = build_loader(connection, entry)
    rows = applied_rows(connection, entry)
    timings["load_graph"] = round(time.time() - started, 4)
    executor = executor_for(connection, loader)
    facts = {
        "apps": app_migrations(loader, rows),
        "conflicts": conflicts(loader),
        "ghosts": ghosts(loader, rows),
        "inconsistent": inconsistent(loader, rows),
        "applied_rows": sorted("%s.%s" % key for key in rows),
    }
    facts["checksums"] = checksum_facts(request, connection, entry, loader, rows, timings)
    target = request.get("target")
    if target:
        targets = resolve_target(loader, target["app"], target.get("migration"))
        facts["target"] = {"app": target["app"],
                           "migration": [t[1] or "zero" for t in targets]}
    else:
        targets = loader.graph.leaf_nodes()
    started = time.time()
    facts["plan"] = plan(executor, targets, with_sql=request.get("sql", False))
    timings["plan"] = round(time.time() - started, 4)
    # What risk.py needs besides the plan: the server, the live tables' rows and size.
    facts["server"] = server_facts(connection)
    try:
        facts["table_stats"] = table_stats(connection, entry, plan_tables(facts["plan"]))
    except Exception as error:  # no privilege on the catalog: the risks say "size unknown"
        facts["table_stats"] = {}
        facts["table_stats_error"] = "%s: %s" % (error.__class__.__name__, error)
    if request.get("checks", True):
        started = time.time()
        facts["checks"] = system_checks(connection, entry)
        timings["checks"] = round(time.time() - started, 4)
    if request.get("pending", True):
        started = time.time()
        # Computed afresh after a migrate too: the models are the live classes, and code the
        # migration ran (RunPython) may have changed them (R1 fault 6).
        try:
            facts["pending_changes"] = pending_changes(loader)
        except Exception as error:  # a conflicting graph cannot be autodetected
            facts["pending_changes"] = {}
            facts["pending_changes_error"] = "%s: %s" % (error.__class__.__name__, error)
        timings["pending_changes"] = round(time.time() - started, 4)
    return facts


class StepRecorder:
    """Records each step of a migrate through Django's own progress callback (the one
    ``manage.py migrate`` prints its "Applying x... OK" lines from): name, action, outcome and
    duration, whatever the verbosity or the output's wording.

    Also the connection's execute wrapper (``track``): whether a statement that changes
    something succeeded since the last step boundary, which decides whether a lock wait that
    timed out may be tried again (see ``retry_is_safe``)."""

    ACTIONS = {"apply": ("applying", "faking"), "unapply": ("unapplying", "unfaking")}

    def __init__(self, rollback_ddl=False):
        self.steps = []
        self._started = None
        # The engine rolls DDL back with the transaction (PostgreSQL, SQLite; not MySQL).
        self.rollback_ddl = rollback_ddl
        self.step_atomic = False
        self.changed = False

    def __call__(self, action, migration=None, fake=False):
        kind, _sep, phase = action.partition("_")
        if kind not in self.ACTIONS:
            return  # render_start / render_success: the project state, not a step
        if phase == "start":
            self._started = time.time()
            self.changed = False
            self.step_atomic = bool(getattr(migration, "atomic", True))
            self.steps.append({"migration": "%s.%s" % (migration.app_label, migration.name),
                               "action": self.ACTIONS[kind][1 if fake else 0],
                               "ok": False, "seconds": None})
        elif phase == "success" and self.steps:
            self.changed = False
            self.steps[-1].update(ok=True, seconds=round(time.time() - self._started, 4))

    def track(self, execute, sql, params, many, context):
        try:
            result = execute(sql, params, many, context)
        except Exception:
            if leaves_something_when_failing(sql):
                self.changed = True
            raise
        if changes_something(sql):
            self.changed = True
        return result

    def failed_step(self):
        """The step under way when the migrate failed, None when it failed between steps."""
        if self.steps and not self.steps[-1]["ok"]:
            return self.steps[-1]["migration"]
        return None

    def retry_is_safe(self):
        return retry_is_safe(self.failed_step() is not None, self.step_atomic, self.rollback_ddl,
                             self.changed)

    def forget_failed(self):
        """Before a retry: the failed step left nothing behind, it is tried again."""
        if self.failed_step() is not None:
            self.steps.pop()


# The first words of statements that change nothing a retry would trip over.
_READ_ONLY = ("SELECT", "SHOW", "SET", "SAVEPOINT", "RELEASE", "ROLLBACK", "EXPLAIN", "PRAGMA",
              "BEGIN")


def changes_something(sql):
    """Whether a statement may change the database (a text we cannot read counts as one)."""
    if not isinstance(sql, str):
        return True
    words = sql.lstrip(" \t\r\n(").split(None, 1)
    return not words or words[0].upper().rstrip(";") not in _READ_ONLY


def leaves_something_when_failing(sql):
    """Whether a statement that failed may still have left something behind: PostgreSQL's
    concurrent index builds leave an INVALID index (a retry would fail on "already exists")."""
    if not isinstance(sql, str):
        return True
    words = sql.upper().split()
    return "CONCURRENTLY" in words[:6] and words[:1] in (["CREATE"], ["REINDEX"])


def retry_is_safe(in_step, step_atomic, rollback_ddl, changed):
    """Whether a lock wait that timed out left nothing behind, so the migrate may go on by
    trying again: the step's transaction rolled back (an atomic migration on an engine whose
    DDL is transactional), or nothing that changes anything ran since the last step ended
    (MySQL/MariaDB commit DDL as it goes: after partial DDL only the restore undoes it)."""
    return bool((in_step and step_atomic and rollback_ddl) or not changed)


# Seconds before the first retry; doubled for each next one, at most RETRY_DELAY_CAP.
RETRY_DELAY_FIRST = 1.0
RETRY_DELAY_CAP = 30.0


def retry_delay(attempt, rand):
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): exponential backoff with
    jitter (``rand()`` in [0, 1): 0.5x to 1.5x), so that runs that met the same lock do not
    queue up again at the same moment."""
    base = min(RETRY_DELAY_CAP, RETRY_DELAY_FIRST * 2 ** (attempt - 1))
    return round(base * (0.5 + rand()), 3)


# PostgreSQL lock_not_available; MySQL/MariaDB ER_LOCK_WAIT_TIMEOUT (metadata and row locks).
_LOCK_WAIT_SQLSTATE = "55P03"
_LOCK_WAIT_MYSQL_CODE = 1205


def lock_wait_error(error):
    """Whether ``error`` (or the driver error it was raised from) is a statement that gave up
    waiting for a lock (db_lock_timeout), rather than any other failure."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if (getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)) == _LOCK_WAIT_SQLSTATE:
            return True
        args = getattr(error, "args", None) or ()
        if args and args[0] == _LOCK_WAIT_MYSQL_CODE:
            return True
        if error.__class__.__name__ == "OperationalError" and "database is locked" in str(error):
            return True  # SQLite's busy_timeout
        error = error.__cause__ or error.__context__
    return False


class OperationProgress:
    """How many operations of each migration ran their database part (``database_forwards``
    returned), counted through Django's own ``Migration.apply``: after a failure, the
    operations of the failed migration that an engine without transactional DDL (MySQL) or a
    non-atomic migration kept are known, and an online undo reverses exactly those."""

    def __init__(self):
        self.done = {}
        self._original = None

    def __enter__(self):
        from django.db.migrations.migration import Migration

        self._original = original = Migration.apply
        done = self.done

        def apply(migration, *args, **kwargs):
            key = "%s.%s" % (migration.app_label, migration.name)
            done[key] = 0
            counted = []
            for operation in migration.operations:
                operation.database_forwards = _counting(operation.database_forwards, done, key)
                counted.append(operation)
            try:
                return original(migration, *args, **kwargs)
            finally:
                for operation in counted:
                    del operation.database_forwards  # the class's method again

        Migration.apply = apply
        return self

    def __exit__(self, *exc_info):
        from django.db.migrations.migration import Migration

        Migration.apply = self._original


def _counting(database_forwards, done, key):
    def counted(*args, **kwargs):
        result = database_forwards(*args, **kwargs)
        done[key] += 1
        return result
    return counted


def kept_operations(recorder, progress):
    """The failed migration's operations whose changes stayed in the database: none when its
    transaction rolled them back (atomic, on an engine with transactional DDL)."""
    failed = recorder.failed_step()
    if failed is None or (recorder.rollback_ddl and recorder.step_atomic):
        return None
    return {"migration": failed, "count": progress.done.get(failed, 0)}


def undo(request, connection, entry, timings):
    """Put the database back at the migrations applied before a failed online migrate, by
    Django's reverse operations (the application went on writing: a restore would lose that):
    first the kept operations of the failed migration (``request["partial"]``: {migration,
    count}), then each migration the run completed (``request["completed"]``), newest first,
    with the project states Django's own backwards migrate uses. Never raises: a failure is
    part of the answer (``error``), with what was undone before it."""
    import copy

    started = time.time()
    undone = []
    error = None
    try:
        loader = build_loader(connection, entry)
        executor = executor_for(connection, loader)
        partial = request.get("partial") or {}
        if partial.get("count"):
            key = tuple(partial["migration"].split(".", 1))
            migration = loader.graph.nodes[key]
            head = copy.copy(migration)
            head.operations = list(migration.operations[:partial["count"]])
            state = loader.project_state(key, at_end=False)
            with connection.schema_editor(atomic=migration.atomic) as editor:
                head.unapply(state, editor)
            undone.append("%s (%d of %d operations)"
                          % (partial["migration"], partial["count"], len(migration.operations)))
        completed = [tuple(name.split(".", 1)) for name in request.get("completed") or []]
        if completed:
            plan = [(loader.graph.nodes[key], True) for key in reversed(completed)]

            def unapplied(action, migration=None, fake=False):
                if action == "unapply_success":
                    undone.append("%s.%s" % (migration.app_label, migration.name))

            executor.progress_callback = unapplied
            executor.migrate(None, plan=plan)
    except Exception as exc:
        error = {"type": exc.__class__.__name__, "message": str(exc),
                 "traceback": traceback.format_exc()}
    timings["undo"] = round(time.time() - started, 4)
    connection.close()
    return {"undone": undone, "error": error,
            "applied_rows": _rows_or_none(connection, entry)}


def _rows_or_none(connection, entry):
    try:
        return sorted("%s.%s" % key for key in applied_rows(connection, entry))
    except Exception:  # the answer says what was undone; the guard reads the state itself
        return None


def migrate_command_recording(recorder):
    """The project's own ``migrate`` command (an app may override it), with ``recorder``
    called from its progress callback before the command's own."""
    from django.core.management import get_commands, load_command_class

    base = load_command_class(get_commands()["migrate"], "migrate").__class__

    class Recording(base):
        def migration_progress_callback(self, action, migration=None, fake=False):
            recorder(action, migration, fake)
            return super(Recording, self).migration_progress_callback(action, migration, fake)

    return Recording()


def migrate(request, connection, entry, timings):
    """Run ``migrate`` in-process (signals, run_syncdb and all, as manage.py would), recording
    each step and its duration; never raises: a failure is part of the answer.

    ``request["db_timeouts"]`` ({lock_wait, retries, statement}) bounds every statement's wait
    for a lock (schema operations, RunSQL and RunPython alike: they all run on this
    connection); a step that gave up waiting and left nothing behind is tried again after a
    backoff, up to ``retries`` times (``lock_waits`` lists each). A failure says whether it was
    such a wait (``lock_wait``) and whether it left the database as the step found it
    (``clean``)."""
    import io
    import random
    from django.core.management import call_command

    options = {
        "database": connection.alias,
        "interactive": False,
        "verbosity": 1,
        # call_command skips the system checks unless told; manage.py migrate runs them.
        "skip_checks": bool(request.get("skip_checks")),
        "fake": bool(request.get("fake")),
        "fake_initial": bool(request.get("fake_initial")),
    }
    # One `migrate APP [MIGRATION]` per target, in order (a stage of an online deploy names
    # several apps' migrations); none: `migrate` of everything.
    targets = list(request.get("targets") or []) or ([request["target"]] if request.get("target") else [None])
    arguments = [[target["app"]] + ([target["migration"]] if target.get("migration") else []) if target else []
                 for target in targets]
    timeouts = request.get("db_timeouts") or {}
    output = io.StringIO()
    recorder = StepRecorder(connection.features.can_rollback_ddl)
    lock_waits = []
    started = time.time()
    failure = None
    progress = OperationProgress()
    with SessionTimeouts(connection, timeouts.get("lock_wait") or 0, timeouts.get("statement"),
                         row_locks=True), connection.execute_wrapper(recorder.track), progress:
        while True:
            try:
                for args in arguments:
                    call_command(migrate_command_recording(recorder), *args, stdout=output,
                                 stderr=output, **options)
                failure = None
            except BaseException as exc:  # SystemExit and KeyboardInterrupt included: report, then stop
                failure = (exc, traceback.format_exc())
            if failure is None or not lock_wait_error(failure[0]) or not recorder.retry_is_safe() \
                    or len(lock_waits) >= int(timeouts.get("retries") or 0):
                break
            delay = retry_delay(len(lock_waits) + 1, random.random)
            lock_waits.append({"migration": recorder.failed_step(), "attempt": len(lock_waits) + 1,
                               "error": first_line(failure[0]), "retry_in": delay})
            recorder.forget_failed()
            output.write("lock wait timed out (%s); trying again in %.1fs\n" % (first_line(failure[0]), delay))
            time.sleep(delay)
    error = None
    if failure is not None:
        exc, text = failure
        error = {"type": exc.__class__.__name__, "message": str(exc), "traceback": text,
                 "lock_wait": lock_wait_error(exc), "clean": recorder.retry_is_safe(),
                 "kept_operations": kept_operations(recorder, progress)}
    timings["migrate"] = round(time.time() - started, 4)
    return {"steps": recorder.steps, "error": error, "lock_waits": lock_waits,
            "output": output.getvalue()[-20000:]}


def first_line(error):
    return (str(error).strip().splitlines() or [error.__class__.__name__])[0][:300]


def management_command(request, connection, timings):
    """Run one of the management commands a reset needs (``flush``: every row goes, the
    schema stays; ``loaddata``: the fixtures) in-process, as manage.py would; never raises:
    a failure is part of the answer."""
    import io
    from django.core.management import call_command

    name = request["command"]
    if name not in ("flush", "loaddata"):
        raise IntrospectionError("request", "unknown management command %r" % name)
    args = list(request.get("args") or [])
    options = {"database": connection.alias, "verbosity": 1}
    if name == "flush":
        options["interactive"] = False
    output = io.StringIO()
    started = time.time()
    error = None
    try:
        call_command(name, *args, stdout=output, stderr=output, **options)
    except BaseException as exc:  # SystemExit (CommandError) included: report it
        error = {"type": exc.__class__.__name__, "message": str(exc),
                 "traceback": traceback.format_exc()}
    timings[name] = round(time.time() - started, 4)
    return {"command": name, "error": error, "output": output.getvalue()[-20000:]}


def apply_database_overrides(request):
    """Merge ``database_overrides`` into the alias's settings before anything connects."""
    overrides = request.get("database_overrides")
    if not overrides:
        return
    connection = connection_for(request.get("database") or "default")
    connection.close()  # in case the project connected while it was set up
    # settings_dict is the alias's dict in settings.DATABASES (Django 3.2 to 5.2).
    connection.settings_dict.update(overrides)


def migrate_to_set(request, connection, entry, timings):
    """Migrate this EMPTY database to exactly the applied set ``request["applied"]``.

    The wanted rows are recorded first so that the loader decides on squashed migrations as
    it does for the database they come from (a squash is used when all or none of what it
    replaces is applied); the rows are then removed again and the migrations that set holds
    are applied for real, in the order of the full plan, with the project states Django
    would use. Rows without a migration on disk (ghosts) cannot be applied: the caller
    compares ``applied_rows`` (read back afterwards) with what it asked for.
    """
    from django.db.migrations.recorder import MigrationRecorder

    started = time.time()
    wanted = [tuple(item.split(".", 1)) for item in request.get("applied") or []]
    tables = connection.introspection.table_names()
    if tables:
        raise IntrospectionError(
            "not_empty",
            "refusing to build into %s database %r: it is not empty (%d tables, e.g. %s); "
            "migrate_to_set only builds into a new, empty database"
            % (connection.vendor, entry["NAME"], len(tables), ", ".join(sorted(tables)[:3])),
        )
    recorder = MigrationRecorder(connection)
    if wanted:
        recorder.ensure_schema()
        for app_label, name in wanted:
            recorder.record_applied(app_label, name)
    try:
        loader = build_loader(connection, entry)
    finally:
        if wanted:
            recorder.migration_qs.all().delete()
    chosen = set(loader.applied_migrations)
    loader.applied_migrations = {}  # nothing is applied in this database yet
    executor = executor_for(connection, loader)
    full_plan = executor.migration_plan(loader.graph.leaf_nodes(), clean_start=True)
    plan = [(migration, False) for migration, _backwards in full_plan
            if (migration.app_label, migration.name) in chosen]
    progress = {"current": None, "done": []}

    def callback(action, migration=None, fake=False):
        if action == "apply_start":
            progress["current"] = "%s.%s" % (migration.app_label, migration.name)
        elif action == "apply_success":
            progress["done"].append(progress["current"])
            progress["current"] = None

    executor.progress_callback = callback
    try:
        if plan:
            connection.prepare_database()
            executor.migrate(loader.graph.leaf_nodes(), plan=plan)
    except Exception as error:
        raise IntrospectionError(
            "migration_failed",
            "%s failed in %s database %r: %s: %s"
            % (progress["current"] or "preparing the migrations", connection.vendor,
               entry["NAME"], error.__class__.__name__, error),
            migration=progress["current"],
            replayed=progress["done"],
            migration_traceback=traceback.format_exc(),
        )
    timings["migrate_to_set"] = round(time.time() - started, 4)
    connection.close()
    return {
        "plan": ["%s.%s" % (m.app_label, m.name) for m, _backwards in plan],
        "applied_rows": sorted("%s.%s" % key for key in applied_rows(connection, entry)),
    }


class BootWatchdog:
    """Ends this interpreter with a boot_timeout answer when booting the project (manage.py,
    the settings, the apps' imports) takes longer than the request's ``boot_timeout``: a
    settings module that blocks (a network call at import time) must not hang the module.
    Booting touches no database of ours, so nothing is left half-done."""

    def __init__(self, request):
        self.seconds = request.get("boot_timeout") if not _BOOTED else None
        self.settings = request.get("settings")
        self._lock = None
        self._done = False
        self._timer = None

    def __enter__(self):
        if self.seconds:
            import threading
            self._lock = threading.Lock()
            self._timer = threading.Timer(float(self.seconds), self._expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc_info):
        if self._timer is not None:
            with self._lock:  # once set, a late timer does nothing
                self._done = True
            self._timer.cancel()
        return False

    def _expire(self):
        with self._lock:
            if self._done:
                return
            settings = os.environ.get("DJANGO_SETTINGS_MODULE") or self.settings or "not set yet"
            answer = {"ok": False, "kind": "boot_timeout", "details": {"settings": settings},
                      "message": "the project did not finish booting within %ss (settings "
                                 "module %s): manage.py, the settings or an app's import "
                                 "blocks (a network or database call at import time?). The "
                                 "interpreter was stopped before it touched the database; fix "
                                 "what blocks, or raise boot_timeout" % (self.seconds, settings)}
            sys.stdout.write("\n%s %s\n" % (RESULT_MARKER, json.dumps(answer)))
            sys.stdout.flush()
            os._exit(3)


def run(request):
    if request.get("action") == "warm":
        return warm(request)
    timings = {}
    started = time.time()
    with BootWatchdog(request):
        django, how = boot(request)
    timings["boot"] = round(time.time() - started, 4)
    from django.conf import settings

    apply_database_overrides(request)
    check_apps(request.get("apps"))
    connection = connection_for(request.get("database") or "default")
    entry = database_settings(connection)
    if entry["exists"]:
        ensure_connected(connection, entry)
    result = {
        "django_version": django.get_version(),
        "python_version": "%d.%d.%d" % tuple(sys.version_info[:3]),
        "python": sys.executable,
        "settings_module": os.environ.get("DJANGO_SETTINGS_MODULE"),
        "database": entry,
        "media_root": str(getattr(settings, "MEDIA_ROOT", "") or ""),
        "timings": timings,
    }
    result.update(how)
    if request.get("action") == "migrate_to_set":
        result["migrate_to_set"] = migrate_to_set(request, connection, entry, timings)
        return result
    if request.get("action") == "undo":
        result["undo"] = undo(request, connection, entry, timings)
        return result
    if request.get("action") == "command":
        result["command"] = management_command(request, connection, timings)
        return result
    if request.get("action") == "migrate":
        result["migrate"] = migrate(request, connection, entry, timings)
        # The verification reads the state afresh: a new connection, a new loader.
        connection.close()
        entry = database_settings(connection)
        # ``migrated``: the read after our own migrate records the checksums first - only after
        # one that succeeded: a failed one is restored, or proven unchanged (a lock wait).
        succeeded = result["migrate"]["error"] is None
        after = dict(request, target=None, sql=False, checks=False,
                     migrated=result["migrate"]["steps"] if succeeded else None)
        try:
            result["facts"] = gather(after, connection, entry, timings)
        except Exception as error:  # e.g. the connection was killed: the guard restores
            result["facts"] = None
            result["facts_error"] = "%s: %s" % (error.__class__.__name__, error)
        return result
    result["facts"] = gather(request, connection, entry, timings)
    return result


def answer_for(request):
    try:
        return {"ok": True, "result": run(request)}
    except IntrospectionError as error:
        return {"ok": False, "kind": error.kind, "message": error.message,
                "details": error.details}
    except Exception as error:
        return {"ok": False, "kind": "exception",
                "message": "%s: %s" % (error.__class__.__name__, error),
                "traceback": traceback.format_exc()}


def close_connections():
    """Between the requests of a session: hold no connection (no lock, no transaction) while
    the module backs up or restores the database."""
    try:
        from django.db import connections
        connections.close_all()
    except Exception:  # Django never booted: nothing is open
        pass


def watch_module():
    """Stop this interpreter once the module that started it is gone: nobody reads its stdout
    any more (the module was killed: SIGKILL, the OOM killer), or its parent changed (a
    ``command_prefix`` wrapper such as sudo was killed). The module's lock dies with it, so a
    migrate must not go on alone. The module's parent-death signal covers the direct child;
    this covers what runs behind a wrapper."""
    import select
    import stat
    import threading

    try:
        mode = os.fstat(1).st_mode
    except OSError:
        return
    poller = None
    if hasattr(select, "poll") and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        poller = select.poll()
        # No POLLOUT asked: only the reader's end closing wakes poll() (POLLERR / POLLHUP).
        poller.register(1, select.POLLERR | select.POLLHUP)
    parent = os.getppid()

    def stop(why):
        try:
            os.write(2, ("dbsafe: %s; this interpreter stops\n" % why).encode("utf-8"))
        except OSError:
            pass
        os._exit(70)

    def watch():
        while True:
            events = poller.poll(500) if poller is not None else []
            if poller is None:
                time.sleep(0.5)
            for _fd, event in events:
                if event & select.POLLNVAL:  # stdout closed here: this process is ending
                    return
                if event & (select.POLLERR | select.POLLHUP):
                    stop("the module that started it is gone (nobody reads its output)")
            if parent != 1 and os.getppid() != parent:
                stop("its parent process %d ended" % parent)

    thread = threading.Thread(target=watch, name="dbsafe-module-watch")
    thread.daemon = True
    thread.start()


def main(request):
    """Answer ``request``; in a session (``session: true``) then the next request line on
    stdin, and so on, until end of input or an error answer."""
    watch_module()
    while True:
        answer = answer_for(request)
        sys.stdout.write("\n%s %s\n" % (RESULT_MARKER, json.dumps(answer, default=str)))
        sys.stdout.flush()
        if not request.get("session") or not answer["ok"]:
            return
        if request.get("action") != "warm":  # before the boot, settings must stay untouched
            close_connections()
        line = sys.stdin.readline()
        if not line.strip():
            return
        request = dict(json.loads(line), session=True)


if __name__ == "__dbsafe__":
    main(globals()["REQUEST"])
