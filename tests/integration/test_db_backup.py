"""db_backup through Ansible on the real demo project, SQLite, PostgreSQL and MariaDB."""
import json
import os
import threading
import time

import pytest

import demo
from ansible_run import run_module
from runner_double import engine_of
from ansible_collections.dbsafe.django.plugins.module_utils.backup_files import tree_hash
from ansible_collections.dbsafe.django.plugins.module_utils.snapshots import diff_snapshots


def project_args(project, db, tmp_path, **extra):
    extra.setdefault("backup_dir", str(tmp_path / "backups"))
    return demo.module_args(project, db, **extra)


def loaded_project(db, tmp_path):
    project = demo.copy_demo(tmp_path)
    demo.manage(project, db, "migrate")
    demo.manage(project, db, "loaddata", "demo")
    return project


def test_dump_change_restore_gives_back_data_schema_and_media(database, tmp_path):
    project = loaded_project(database, tmp_path)
    media = os.path.join(project, "media")
    before, media_before = engine_of(database).snapshot(), tree_hash(media)

    dumped = run_module("db_backup", project_args(project, database, tmp_path,
                                                  include_media=True, keep=3))
    assert not dumped["failed"], dumped.get("msg")
    backup = dumped["backup"]
    assert dumped["changed"] and os.path.isfile(backup["path"]) and backup["media"]
    manifest = json.load(open(backup["path"] + ".json"))
    assert manifest["engine"] == database.engine and manifest["sha256"] == backup["sha256"]
    assert ["books", "0005_remove_book_notes"] in manifest["migrations"]
    assert os.stat(backup["path"]).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "backups").st_mode & 0o777 == 0o700

    demo.manage(project, database, "shell", "-c",
                "from books.models import Book\nBook.objects.all().delete()\n")
    demo.manage(project, database, "migrate", "books", "0003", "--noinput")
    with open(os.path.join(media, "covers", "intruder.txt"), "w") as handle:
        handle.write("not in the backup")
    assert diff_snapshots(before, engine_of(database).snapshot()) != []

    restored = run_module("db_backup", project_args(project, database, tmp_path,
                                                    state="restore", include_media=True))

    assert not restored["failed"], restored.get("msg")
    assert restored["restored"] and restored["media_restored"]
    assert restored["backup"]["path"] == backup["path"]  # the newest was chosen
    assert diff_snapshots(before, engine_of(database).snapshot()) == []
    assert tree_hash(media) == media_before
    if database.password:
        assert database.password not in json.dumps([dumped, restored])


def test_check_mode_writes_nothing_and_verify_reads_only(sqlite_database, tmp_path):
    db = sqlite_database
    project = loaded_project(db, tmp_path)
    checked = run_module("db_backup", project_args(project, db, tmp_path), check=True)
    assert not checked["failed"] and checked["changed"]
    assert not os.path.exists(tmp_path / "backups")

    dumped = run_module("db_backup", project_args(project, db, tmp_path))
    verified = run_module("db_backup", project_args(project, db, tmp_path, state="verify",
                                                    src=dumped["backup"]["path"]))
    assert not verified["failed"] and verified["verified"] and verified["changed"] is False

    raw = open(db.name, "rb").read()
    would = run_module("db_backup", project_args(project, db, tmp_path, state="restore"),
                       check=True)
    assert would["changed"] and open(db.name, "rb").read() == raw


@pytest.mark.parametrize("damage", ["truncated", "flipped", "other_engine", "missing"])
def test_damaged_backups_are_refused_before_touching_the_database(
        sqlite_database, tmp_path, damage):
    db = sqlite_database
    project = loaded_project(db, tmp_path)
    path = run_module("db_backup", project_args(project, db, tmp_path))["backup"]["path"]
    demo.damage_backup(path, damage)
    demo.manage(project, db, "shell", "-c",
                "from books.models import Book\nBook.objects.all().delete()\n")
    before = engine_of(db).snapshot()

    result = run_module("db_backup", project_args(project, db, tmp_path, state="restore",
                                                  src=path))

    assert result["failed"] is True
    expected = {"truncated": "truncated", "flipped": "damaged",
                "other_engine": "taken from a postgresql database",
                "missing": "does not exist"}[damage]
    assert expected in result["msg"], result["msg"]
    assert diff_snapshots(before, engine_of(db).snapshot()) == []


@pytest.mark.parametrize("engine_fixture", ["postgres_database", "mysql_database"])
def test_wrong_password_and_down_server_fail_clearly(request, engine_fixture, tmp_path):
    db = request.getfixturevalue(engine_fixture)
    explicit = dict(db.connection(), backup_dir=str(tmp_path / "backups"))
    if db.engine == "postgresql":
        # Local PostgreSQL trusts every connection: a wrong password shows only on a server
        # that asks for one, so here the down-server case stands for both.
        explicit["port"] = 1
        expected = "127.0.0.1:1"
    else:
        explicit["password"] = "wrong-" + db.password
        expected = "denied"
    result = run_module("db_backup", explicit)
    assert result["failed"] is True
    assert expected in result["msg"], result["msg"]
    assert os.listdir(tmp_path / "backups") == []
    assert db.password not in json.dumps(result)


def test_unwritable_backup_dir_fails_and_leaves_nothing(sqlite_database, tmp_path):
    db = sqlite_database
    project = loaded_project(db, tmp_path)
    readonly = tmp_path / "backups"
    readonly.mkdir(mode=0o500)
    # root ignores permissions: make the directory a read-only mount point stand-in by
    # pointing at a path under a file instead (always unwritable, root included).
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    result = run_module("db_backup", project_args(project, db, tmp_path,
                                                  backup_dir=str(blocked / "backups")))
    assert result["failed"] is True
    assert "backup directory" in result["msg"], result["msg"]


def test_retention_keeps_exactly_n_and_never_the_new_one(sqlite_database, tmp_path):
    db = sqlite_database
    project = loaded_project(db, tmp_path)
    for _attempt in range(4):
        run_module("db_backup", project_args(project, db, tmp_path))
    last = run_module("db_backup", project_args(project, db, tmp_path, keep=2))
    data = sorted(n for n in os.listdir(tmp_path / "backups") if not n.endswith(".json"))
    assert len(data) == 2 and os.path.basename(last["backup"]["path"]) in data
    assert len(last["pruned"]) == 3
    nothing = run_module("db_backup", project_args(project, db, tmp_path, state="pruned", keep=2))
    assert nothing["changed"] is False
    negative = run_module("db_backup", project_args(project, db, tmp_path, state="pruned", keep=-1))
    assert negative["failed"] and "keep must be 1 or more" in negative["msg"]
    assert len(os.listdir(tmp_path / "backups")) == 4


@pytest.mark.parametrize("engine_fixture", ["postgres_database", "mysql_database"])
def test_password_never_in_any_process_argv_during_dump(request, engine_fixture, tmp_path):
    db = request.getfixturevalue(engine_fixture)
    project = loaded_project(db, tmp_path)
    seen = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open("/proc/%s/cmdline" % pid, "rb") as handle:
                        argv = handle.read().decode("utf-8", "replace")
                except OSError:
                    continue
                if db.password in argv:
                    seen.append(argv.replace("\0", " "))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        dumped = run_module("db_backup", project_args(project, db, tmp_path))
        restored = run_module("db_backup", project_args(project, db, tmp_path, state="restore"))
    finally:
        stop.set()
        sampler.join()
    assert not dumped["failed"] and not restored["failed"], (dumped.get("msg"), restored.get("msg"))
    assert seen == []


def test_pg_directory_format_through_the_module(postgres_database, tmp_path):
    db = postgres_database
    project = loaded_project(db, tmp_path)
    before = engine_of(db).snapshot()
    args = dict(format="directory", jobs=2, keep=2)
    taken = [run_module("db_backup", project_args(project, db, tmp_path, **args))
             for _attempt in range(3)]
    assert not any(result["failed"] for result in taken), [r.get("msg") for r in taken]
    newest = taken[-1]["backup"]
    assert newest["path"].endswith(".pgdir") and os.path.isdir(newest["path"])
    assert os.stat(newest["path"]).st_mode & 0o777 == 0o700
    assert taken[-1]["pruned"] == [os.path.basename(taken[0]["backup"]["path"])]
    assert taken[-1]["diff"]["after"]["backups"] == [
        os.path.basename(t["backup"]["path"]) for t in reversed(taken[1:])]
    assert sorted(os.listdir(tmp_path / "backups")) == sorted(
        name for t in taken[1:] for name in (os.path.basename(t["backup"]["path"]),
                                             os.path.basename(t["backup"]["path"]) + ".json"))

    demo.manage(project, db, "shell", "-c",
                "from books.models import Book\nBook.objects.all().delete()\n")
    verified = run_module("db_backup", project_args(project, db, tmp_path, state="verify"))
    assert verified["verified"] and verified["backup"]["sha256"] == newest["sha256"]
    restored = run_module("db_backup", project_args(project, db, tmp_path, state="restore",
                                                    jobs=2))
    assert not restored["failed"], restored.get("msg")
    assert restored["backup"]["path"] == newest["path"]
    assert diff_snapshots(before, engine_of(db).snapshot()) == []
