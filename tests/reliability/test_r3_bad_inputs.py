"""R3 - bad inputs across the modules and playbooks: each a clear error and zero changes.

Zero changes is proven twice: the database's snapshot (schema, migrations, row counts and
content hashes) and every file of the workspace (project, database directory, backups) are
the same before and after.
"""
import os
import shutil

import pytest

import demo
import harness
from databases import create_sqlite
from test_playbooks import inventory, playbook
from ansible_collections.dbsafe.django.plugins.module_utils.snapshots import diff_snapshots


class Workspace:
    """One SQLite demo project, migrated, with data and one good backup, shared by the cases
    (each case changes nothing - which is what is checked)."""

    def __init__(self, root, db):
        self.root = str(root)
        self.db = db
        self.project = harness.prepared(db, root)
        self.backups = os.path.join(self.root, "backups")
        self.empty = os.path.join(self.root, "not-a-project")
        os.makedirs(self.empty)
        result = harness.watched_run(db, "db_backup", self.args(), "R3 setup")
        assert not result["failed"], result.get("msg")
        self.backup = result["backup"]["path"]
        self.damaged = {}
        for damage in ("truncated", "flipped", "foreign"):
            directory = os.path.join(self.root, "damaged-" + damage)
            os.makedirs(directory, 0o700)
            path = os.path.join(directory, os.path.basename(self.backup))
            shutil.copy2(self.backup, path)
            shutil.copy2(self.backup + ".json", path + ".json")
            demo.damage_backup(path, "other_engine" if damage == "foreign" else damage)
            self.damaged[damage] = path

    def args(self, **extra):
        extra.setdefault("backup_dir", self.backups)
        return demo.module_args(self.project, self.db, **extra)

    def state(self):
        return harness.snapshot(self.db), harness.tree(self.root)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("r3")
    os.makedirs(str(root / "db"))
    db = create_sqlite(root / "db")
    return Workspace(root / "ws", db)


def guarded_args(ws, **extra):
    extra.setdefault("allow_data_loss", False)
    return ws.args(**extra)


# (case, module, args(ws), words the message must contain)
MODULE_CASES = [
    ("unknown app", "django_migrate_guarded",
     lambda ws: guarded_args(ws, app="nosuchapp"), ["nosuchapp"]),
    ("unknown migration prefix", "django_migrate_guarded",
     lambda ws: guarded_args(ws, app="books", migration="0099"), ["no migration matching"]),
    ("ambiguous migration prefix", "django_migrate_guarded",
     lambda ws: guarded_args(ws, app="books", migration="000"), ["more than one migration"]),
    ("bad settings module", "django_migrate_guarded",
     lambda ws: guarded_args(ws, settings="demo.no_such_settings"), ["demo.no_such_settings"]),
    ("missing manage.py", "django_migrate_guarded",
     lambda ws: dict(guarded_args(ws), project_path=ws.empty), ["manage.py"]),
    ("interpreter does not exist", "django_migrate_guarded",
     lambda ws: guarded_args(ws, python="/nonexistent/bin/python3"), ["/nonexistent/bin/python3"]),
    ("interpreter without Django", "django_migrate_guarded",
     lambda ws: guarded_args(ws, python="/usr/bin/python3"), ["jango"]),
    ("unknown database alias", "django_migrate_guarded",
     lambda ws: guarded_args(ws, database="nosuchalias"), ["nosuchalias"]),
    ("rollback that loses data, not allowed", "django_migrate_guarded",
     lambda ws: guarded_args(ws, app="books", migration="0002"), ["allow_data_loss"]),
    ("negative keep", "django_migrate_guarded",
     lambda ws: guarded_args(ws, app="books", migration="0002", keep=-1), ["keep"]),
    ("conflicting options fake + fake_initial", "django_migrate_guarded",
     lambda ws: guarded_args(ws, fake=True, fake_initial=True), ["mutually exclusive"]),
    ("backup without backup_dir", "django_migrate_guarded",
     lambda ws: dict((k, v) for k, v in guarded_args(ws).items() if k != "backup_dir"),
     ["backup_dir"]),
    ("python and virtualenv both given", "django_showmigrations",
     lambda ws: dict(demo.module_args(ws.project, ws.db), virtualenv="/opt/venv"),
     ["mutually exclusive"]),
    ("restore a truncated backup", "db_backup",
     lambda ws: ws.args(state="restore", src=ws.damaged["truncated"]), ["truncated"]),
    ("restore a corrupt backup (one byte flipped)", "db_backup",
     lambda ws: ws.args(state="restore", src=ws.damaged["flipped"]), ["damaged"]),
    ("restore a foreign backup (another engine's)", "db_backup",
     lambda ws: ws.args(state="restore", src=ws.damaged["foreign"]),
     ["taken from a postgresql database"]),
    ("restore a backup that does not exist", "db_backup",
     lambda ws: ws.args(state="restore", src=os.path.join(ws.backups, "nothing.sqlite.zst")),
     ["does not exist"]),
    ("negative keep (prune)", "db_backup",
     lambda ws: ws.args(state="pruned", keep=-1), ["keep must be 1 or more"]),
    ("backup_dir below a regular file", "db_backup",
     lambda ws: ws.args(backup_dir=os.path.join(ws.damaged["truncated"], "sub")),
     ["backup directory"]),
    ("unknown state", "db_backup",
     lambda ws: ws.args(state="explode"), ["state"]),
    ("project options and explicit engine both given", "db_backup",
     lambda ws: ws.args(engine="sqlite"), ["mutually exclusive"]),
    ("drift check of an unknown database alias", "django_schema_drift",
     lambda ws: demo.module_args(ws.project, ws.db, database="nosuchalias"), ["nosuchalias"]),
]


@pytest.mark.parametrize("name,module,make_args,words", MODULE_CASES,
                         ids=[c[0].replace(" ", "-") for c in MODULE_CASES])
def test_bad_module_input(case, workspace, name, module, make_args, words):
    case("R3", "sqlite", "%s: %s" % (module, name))
    before_db, before_files = workspace.state()

    result = harness.watched_run(workspace.db, module, make_args(workspace), "R3")

    case.message = result.get("msg", "")
    assert result["failed"] is True, result
    assert all(word in result["msg"] for word in words), (words, result["msg"])
    after_db, after_files = workspace.state()
    assert diff_snapshots(before_db, after_db) == []
    assert after_files == before_files


@pytest.mark.parametrize("engine,fault", [("postgresql", "server down"),
                                          ("postgresql", "database does not exist"),
                                          ("mysql", "wrong password"),
                                          ("mysql", "server down")])
def test_unreachable_database(case, engine, fault, fresh_database, tmp_path):
    case("R3", engine, "django_migrate_guarded: %s" % fault)
    db = fresh_database(engine)
    project = harness.prepared(db, tmp_path)
    demo.add_slow_migration(project, 0)
    before_db, before_files = harness.snapshot(db), harness.tree(tmp_path)
    env = {"server down": {"DEMO_DB_PORT": "1"},
           "database does not exist": {"DEMO_DB_NAME": db.name + "_missing"},
           "wrong password": {"DEMO_DB_PASSWORD": "wrong-" + db.password}}[fault]
    args = demo.module_args(project, db, backup_dir=str(tmp_path / "backups"))
    args["environment"].update(env)

    result = harness.watched_run(db, "django_migrate_guarded", args, "R3 %s" % fault)

    case.message = result.get("msg", "")
    words = {"server down": ["127.0.0.1", "1"], "database does not exist": ["_missing"],
             "wrong password": ["denied"]}[fault]
    assert result["failed"] is True
    assert all(word in result["msg"] for word in words), (words, result["msg"])
    assert diff_snapshots(before_db, harness.snapshot(db)) == []
    assert harness.tree(tmp_path) == before_files


PLAYBOOK_CASES = [
    ("reset.yml without the confirmation", "reset", {"reset_hosts": "dev"},
     "Refused: resetting dev wipes its database"),
    ("reset.yml confirmed for another host", "reset", {"reset_hosts": "dev", "reset_confirm": "prod"},
     "Refused: resetting dev wipes its database"),
    ("restore_from_prod.yml onto a production host", "restore_from_prod",
     {"restore_from": "dev", "restore_to": "prod"}, "prod is protected (group production)"),
    ("rollback.yml without rollback_allow_data_loss", "rollback",
     {"rollback_hosts": "dev", "rollback_app": "books", "rollback_to": "0002"},
     "rollback_allow_data_loss=true"),
]


@pytest.mark.parametrize("name,book,extra_vars,expected", PLAYBOOK_CASES,
                         ids=[c[0].replace(" ", "-") for c in PLAYBOOK_CASES])
def test_bad_playbook_input(case, workspace, tmp_path, name, book, extra_vars, expected):
    case("R3", "sqlite", name)
    reports = str(tmp_path / "reports")
    inv = inventory(tmp_path, {"production": {"prod": workspace_host(workspace, reports)},
                               "development": {"dev": workspace_host(workspace, reports)}})
    before_db, before_files = workspace.state()

    rc, output = playbook(book, inv, tmp_path, **extra_vars)

    case.message = expected if expected in output else output[-300:]
    assert rc != 0 and expected in output, output[-3000:]
    after_db, after_files = workspace.state()
    assert diff_snapshots(before_db, after_db) == []
    assert after_files == before_files


def workspace_host(ws, reports):
    python = demo.default_python()
    return {"ansible_connection": "local", "ansible_python_interpreter": python,
            "django_migrate_project_path": ws.project, "django_migrate_python": python,
            "django_migrate_environment": dict(ws.db.demo_env(), PYTHONDONTWRITEBYTECODE="1",
                                               DEMO_MEDIA_ROOT=os.path.join(ws.project, "media")),
            "django_migrate_backup_dir": ws.backups, "django_migrate_media_root":
            os.path.join(ws.project, "media"), "django_migrate_report_dir": reports,
            "django_migrate_start_command": [], "django_migrate_stop_command": [],
            "django_migrate_status_command": []}
