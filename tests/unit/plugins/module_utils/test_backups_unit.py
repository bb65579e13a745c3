"""The pure parts of the backup store: names, manifests, retention rules, tar member checks,
tree hashes and the streaming writer with Python-only writers (no database, no tools)."""
import errno
import json
import os
import stat
import tarfile

import pytest

from ansible_collections.dbsafe.django.plugins.module_utils.backup_files import (
    check_member,
    files_sha256,
    is_directory_backup,
    tree_hash,
)
from ansible_collections.dbsafe.django.plugins.module_utils.backups import BackupStore
from ansible_collections.dbsafe.django.plugins.module_utils.compression import (
    Compression,
    auto_compression,
    compression_of,
)
from ansible_collections.dbsafe.django.plugins.module_utils.connection import Connection
from ansible_collections.dbsafe.django.plugins.module_utils.engines.registry import (
    ENGINE_CLASSES,
    dump_format,
)
from ansible_collections.dbsafe.django.plugins.module_utils.errors import BackupError

SQLITE_BYTES = b"SQLite format 3\x00" + b"\x00" * 4080


class StubEngine:
    """Just enough of an Engine for the store: no database behind it."""

    name = "sqlite"
    formats = ("sqlite",)

    def __init__(self, path="/srv/app/db.sqlite3"):
        self.connection = Connection("sqlite", path)
        self.dumped = 0

    def check_format(self, fmt):
        fmt = fmt or "sqlite"
        if fmt not in self.formats:
            raise BackupError("bad format %s" % fmt)
        return fmt

    def is_directory_format(self, fmt):
        return False

    def describe(self):
        return self.connection.describe()

    def tool_versions(self):
        return {"sqlite": "3.40.1"}

    def instance_identity(self):
        return {"engine": "sqlite", "host": None, "port": None, "name": self.connection.name,
                "server": "sqlite:unit-test-host"}

    def dump(self, out, fmt=None, jobs=1):
        self.dumped += 1
        out.write(SQLITE_BYTES)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_store_creates_a_private_directory(tmp_path):
    directory = tmp_path / "a" / "b"
    BackupStore(str(directory))
    assert mode(str(directory)) == 0o700


def test_uncompressed_write_names_hashes_and_manifest(tmp_path):
    store = BackupStore(str(tmp_path))
    engine = StubEngine()
    backup = store.write("nightly", engine, compression="none", migrations=[("shop", "0001")])
    name = os.path.basename(backup["path"])
    assert name.startswith("nightly-sqlite-") and name.endswith("Z.sqlite")
    stamp = name[len("nightly-sqlite-"):-len(".sqlite")]
    assert len(stamp) == len("20240101T101010123456Z") and stamp[8] == "T"
    manifest = json.loads(open(backup["path"] + ".json").read())
    assert manifest == {key: value for key, value in backup.items() if key != "path"}
    assert manifest["migrations"] == [["shop", "0001"]]
    assert manifest["size"] == len(SQLITE_BYTES)
    assert manifest["database"] == "/srv/app/db.sqlite3" and manifest["host"] is None
    assert mode(backup["path"]) == 0o600
    assert store.verify(name, engine)["sha256"] == manifest["sha256"]


@pytest.mark.parametrize("label", ["", "-x", "a/b", "a b", "x" * 65, None])
def test_bad_labels_are_refused(tmp_path, label):
    engine = StubEngine()
    with pytest.raises(BackupError):
        BackupStore(str(tmp_path)).write(label, engine, compression="none")
    assert engine.dumped == 0


def test_writer_errors_leave_nothing_and_name_the_cause(tmp_path):
    store = BackupStore(str(tmp_path))

    def disk_full(out):
        out.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(BackupError) as failure:
        store.write("pre", StubEngine(), disk_full, compression="none")
    assert "no space left on the device" in failure.value.msg
    assert os.listdir(str(tmp_path)) == []

    def not_sqlite(out):
        out.write(b"not a database")

    with pytest.raises(BackupError) as failure:
        store.write("pre", StubEngine(), not_sqlite, compression="none")
    assert "does not start like a sqlite dump" in failure.value.msg
    assert os.listdir(str(tmp_path)) == []

    def interrupted(out):
        raise KeyboardInterrupt()

    with pytest.raises(KeyboardInterrupt):
        store.write("pre", StubEngine(), interrupted, compression="none")
    assert os.listdir(str(tmp_path)) == []


def test_list_ignores_partial_and_foreign_files(tmp_path):
    store = BackupStore(str(tmp_path))
    backup = store.write("pre", StubEngine(), compression="none")
    for name, content in (("x.partial", "x"), ("broken.json", "{"), ("other.json", "{}"),
                          ("orphan.sqlite.json", json.dumps({"file": "orphan.sqlite"})),
                          ("pre-sqlite-1.sqlite.json.partial", "{}")):
        (tmp_path / name).write_text(content)
    assert [m["file"] for m in store.list()] == [backup["file"]]
    assert store.prune(1) == []
    assert (tmp_path / "broken.json").exists()  # never deletes what it did not write


def test_prune_rules(tmp_path):
    store = BackupStore(str(tmp_path))
    taken = [store.write("a", StubEngine(), compression="none") for _attempt in range(3)]
    with pytest.raises(BackupError):
        store.prune(0)
    with pytest.raises(BackupError):
        store.prune(True)
    assert store.prune(5) == []
    assert store.prune(1, protect=[taken[0]["file"]]) == sorted(
        [taken[1]["file"], taken[2]["file"]])
    assert [m["file"] for m in store.list()] == [taken[0]["file"]]


def test_verify_names_each_problem(tmp_path):
    store = BackupStore(str(tmp_path))
    backup = store.write("pre", StubEngine(), compression="none")
    with pytest.raises(BackupError, match="cannot be restored into mysql"):
        store.verify(backup["path"], "mysql")
    with pytest.raises(BackupError, match="does not exist"):
        store.verify(str(tmp_path / "nope.sqlite"))
    with open(backup["path"], "ab") as handle:
        handle.write(b"x")
    with pytest.raises(BackupError, match="truncated or damaged"):
        store.verify(backup["path"])


def test_compression_methods():
    assert Compression("gzip").extension == ".gz"
    assert Compression("zstd").extension == ".zst"
    assert Compression("none").extension == "" and not Compression("none").enabled
    assert Compression("none").compress_argv() is None
    with pytest.raises(BackupError):
        Compression("bzip2")
    assert compression_of("a.sql.gz").name == "gzip"
    assert compression_of("a.sql.zst").name == "zstd"
    assert compression_of("a.pgdump").name == "none"
    gzip = Compression("gzip")
    if gzip.available():
        assert gzip.test_argv("/x")[-2:] == ["--", "/x"]


def test_auto_compression(monkeypatch):
    def auto(fmt):
        return auto_compression(dump_format(fmt).self_compressed)

    assert auto("custom") == "none"
    assert auto("directory") == "none"
    monkeypatch.setattr(Compression, "available", lambda self: False)
    assert auto("sql") == "gzip" and auto("plain") == "gzip"
    monkeypatch.setattr(Compression, "available", lambda self: True)
    assert auto("sqlite") == "zstd"


def test_each_engine_owns_its_dump_formats():
    formats = [dump for engine in ENGINE_CLASSES.values() for dump in engine.dump_formats]
    assert len(set(dump.name for dump in formats)) == len(formats)
    assert dump_format("custom").extension == "pgdump"
    assert dump_format("directory").extension == "pgdir" and dump_format("directory").directory
    assert dump_format("plain").extension == dump_format("sql").extension == "sql"
    assert set(dump.name for dump in formats if dump.self_compressed) == {"custom", "directory"}
    assert dump_format("unknown").extension is None and not dump_format(None).trailer


@pytest.mark.parametrize("fmt,content,complete", [
    ("sql", b"-- MariaDB dump\nINSERT ...;\n-- Dump completed on 2024-01-01\n", True),
    ("sql", b"-- MariaDB dump\nINSERT ...;\n", False),
    ("plain", b"SET x;\n--\n-- PostgreSQL database dump complete\n--\n\\unrestrict k\n", True),
    ("plain", b"SET x;\n", False),
    ("sqlite", SQLITE_BYTES, True),
    ("sqlite", b"not a database", False),
])
def test_the_format_says_whether_a_dump_file_is_complete(tmp_path, fmt, content, complete):
    path = tmp_path / "dump"
    path.write_bytes(content)
    check = dump_format(fmt).check_file
    if complete:
        check(str(path), runner=None)
    else:
        with pytest.raises(BackupError):
            check(str(path), runner=None)


def _info(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize("name,kind,linkname", [
    ("ok.txt", tarfile.REGTYPE, ""),
    ("./dir/file", tarfile.REGTYPE, ""),
    ("dir", tarfile.DIRTYPE, ""),
    ("latest", tarfile.SYMTYPE, "uploads/2024"),
    ("copy", tarfile.LNKTYPE, "uploads/a.txt"),
])
def test_safe_members_pass(name, kind, linkname):
    check_member(_info(name, kind, linkname))


@pytest.mark.parametrize("name,kind,linkname", [
    ("/etc/passwd", tarfile.REGTYPE, ""),
    ("../up", tarfile.REGTYPE, ""),
    ("a/../../up", tarfile.REGTYPE, ""),
    ("a\\..\\..\\up", tarfile.REGTYPE, ""),
    ("link", tarfile.SYMTYPE, "/etc"),
    ("link", tarfile.SYMTYPE, "a/../.."),
    ("link", tarfile.SYMTYPE, ".."),
    ("hard", tarfile.LNKTYPE, "../x"),
    ("dev", tarfile.CHRTYPE, ""),
    ("fifo", tarfile.FIFOTYPE, ""),
])
def test_unsafe_members_are_refused(name, kind, linkname):
    with pytest.raises(BackupError):
        check_member(_info(name, kind, linkname))


def test_tree_hash(tmp_path):
    def build(root, order):
        os.makedirs(str(root / "d" / "e"))
        for name in order:
            (root / name).write_bytes(name.encode())
        os.symlink("d", str(root / "link"))

    one, two = tmp_path / "one", tmp_path / "two"
    build(one, ["a", "b", "d/c"])
    build(two, ["d/c", "b", "a"])
    assert tree_hash(str(one)) == tree_hash(str(two))
    (two / "a").write_bytes(b"changed")
    assert tree_hash(str(one)) != tree_hash(str(two))
    (two / "a").write_bytes(b"a")
    os.rename(str(two / "b"), str(two / "b2"))
    assert tree_hash(str(one)) != tree_hash(str(two))
    os.rename(str(two / "b2"), str(two / "b"))
    os.rmdir(str(two / "d" / "e"))
    assert tree_hash(str(one)) != tree_hash(str(two))
    os.makedirs(str(two / "d" / "e"))
    os.unlink(str(two / "link"))
    os.symlink("d/e", str(two / "link"))
    assert tree_hash(str(one)) != tree_hash(str(two))


def test_directory_backup_checksum_is_of_the_file_list():
    files = [{"name": "toc.dat", "size": 10, "sha256": "a" * 64},
             {"name": "3338.dat.gz", "size": 99, "sha256": "b" * 64}]
    checksum = files_sha256(files)
    assert len(checksum) == 64 and checksum == files_sha256(list(reversed(files)))
    for key, value in (("name", "3339.dat.gz"), ("size", 98), ("sha256", "c" * 64)):
        changed = [dict(files[0]), dict(files[1], **{key: value})]
        assert files_sha256(changed) != checksum, key
    assert files_sha256(files[:1]) != checksum
    assert is_directory_backup({"files": files})
    assert not is_directory_backup({"file": "x.pgdir.tar"})


def test_list_ignores_a_leftover_partial_directory(tmp_path):
    store = BackupStore(str(tmp_path))
    backup = store.write("pre", StubEngine(), compression="none")
    leftover = tmp_path / "pre-postgresql-20260101T000000000000Z.pgdir.partial"
    leftover.mkdir()
    (leftover / "toc.dat").write_bytes(b"PGDMP")
    # A manifest whose directory backup is a file, or whose file backup is a directory: not
    # a backup.
    (tmp_path / "odd.pgdir").write_text("x")
    (tmp_path / "odd.pgdir.json").write_text(json.dumps({"file": "odd.pgdir", "files": []}))
    (tmp_path / "odd.sqlite").mkdir()
    (tmp_path / "odd.sqlite.json").write_text(json.dumps({"file": "odd.sqlite"}))
    assert [m["file"] for m in store.list()] == [backup["file"]]
    assert store.prune(1) == []
    assert leftover.is_dir()
