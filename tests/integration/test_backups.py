"""BackupStore with the real engines and servers: round trips, damage, full disks, retention,
media."""
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile

import pytest

from runner_double import add_bulk_rows, engine_of, execute, make_runner, seed

from ansible_collections.dbsafe.django.plugins.module_utils.backup_files import (
    files_sha256,
    tree_hash,
)
from ansible_collections.dbsafe.django.plugins.module_utils.backups import BackupStore
from ansible_collections.dbsafe.django.plugins.module_utils.connection import Connection
from ansible_collections.dbsafe.django.plugins.module_utils.engines import postgresql_archive
from ansible_collections.dbsafe.django.plugins.module_utils.engines.registry import engine_for
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    BackupError,
    RestoreFailed,
)
from ansible_collections.dbsafe.django.plugins.module_utils.snapshots import diff_snapshots

NAME = re.compile(r"^(?P<label>[\w.-]+)-(?P<engine>sqlite|postgresql|mysql)-"
                  r"(?P<stamp>\d{8}T\d{12}Z)\.(?P<ext>[a-z.]+)$")


def mutate(db):
    execute(db, "DELETE FROM shop_product WHERE title = 'nothing';")
    execute(db, "CREATE TABLE made_later (id integer PRIMARY KEY);")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@contextlib.contextmanager
def tmpfs(path, options):
    """A tmpfs mounted at ``path`` (root only); None when mounting is not possible here."""
    os.makedirs(path, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path],
                          capture_output=True, check=False)
    if proc.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", path], check=True)


# -- round trips --------------------------------------------------------------------------------

@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_write_verify_restore_round_trip(database, tmp_path, compression):
    seed(database)
    engine = engine_of(database)
    before = engine.snapshot()
    directory = str(tmp_path / "backups")
    store = BackupStore(directory, make_runner())
    assert mode(directory) == 0o700
    backup = store.write("pre-migrate", engine, compression=compression,
                         migrations=before["migrations"])
    name = os.path.basename(backup["path"])
    match = NAME.match(name)
    assert match, name
    assert match.group("label") == "pre-migrate" and match.group("engine") == database.engine
    assert name.endswith(".gz" if compression == "gzip" else ".zst")
    assert sorted(os.listdir(directory)) == [name, name + ".json"]
    assert mode(backup["path"]) == 0o600 and mode(backup["path"] + ".json") == 0o600

    with open(backup["path"] + ".json") as handle:
        manifest_text = handle.read()
    manifest = json.loads(manifest_text)
    if database.password:
        assert database.password not in manifest_text
    assert manifest["engine"] == database.engine and manifest["database"] == database.name
    assert manifest["file"] == name and manifest["compression"] == compression
    assert manifest["format"] == engine.default_format()
    assert manifest["migrations"] == before["migrations"]
    assert manifest["size"] == os.path.getsize(backup["path"])
    with open(backup["path"], "rb") as handle:  # the hash is of the bytes on disk
        assert manifest["sha256"] == hashlib.sha256(handle.read()).hexdigest()
    assert manifest["media"] is None and manifest["format_version"] == 1
    assert manifest["tool_versions"] and manifest["dbsafe_version"]
    assert set(manifest) >= {"host", "port", "label", "created_at", "sha256"}

    assert store.verify(backup["path"], engine)["sha256"] == manifest["sha256"]
    assert store.verify(name)["file"] == name  # by name, relative to the store
    mutate(database)
    store.restore(backup["path"], engine)
    assert engine.snapshot() == before


def test_postgresql_formats_through_the_store(postgres_database, tmp_path):
    seed(postgres_database)
    engine = engine_of(postgres_database)
    before = engine.snapshot()
    store = BackupStore(str(tmp_path / "backups"), make_runner())
    auto = "zstd" if shutil.which("zstd") else "gzip"
    for fmt, ending, compression in (("custom", ".pgdump", "none"),
                                     ("plain", ".sql.gz" if auto == "gzip" else ".sql.zst", auto),
                                     ("directory", ".pgdir", "none")):
        backup = store.write("pg", engine, fmt=fmt, jobs=2)
        assert backup["path"].endswith(ending) and backup["compression"] == compression
        mutate(postgres_database)
        store.restore(backup["path"], engine, jobs=2)
        assert engine.snapshot() == before, fmt
    assert [m["format"] for m in store.list()] == ["directory", "plain", "custom"]
    assert not [n for n in os.listdir(store.directory) if n.startswith(".")]


def test_open_for_restore_streams_the_exact_dump(sqlite_database, tmp_path):
    seed(sqlite_database)
    engine = engine_of(sqlite_database)
    direct = io.BytesIO()
    engine.dump(direct)
    store = BackupStore(str(tmp_path / "backups"))
    for compression in ("gzip", "zstd", "none"):
        backup = store.write("s", engine, compression=compression)
        with store.open_for_restore(backup["path"], "sqlite") as stream:
            assert stream.read() == direct.getvalue()


# -- refusing damaged backups -------------------------------------------------------------------

def test_damaged_backups_are_refused_before_the_database_is_touched(database, tmp_path):
    seed(database)
    engine = engine_of(database)
    store = BackupStore(str(tmp_path / "backups"), make_runner())
    backup = store.write("pre", engine, compression="gzip")
    path, manifest_path = backup["path"], backup["path"] + ".json"
    pristine = open(path, "rb").read()
    pristine_manifest = open(manifest_path, "rb").read()
    mutate(database)
    current = engine.snapshot()

    def put(data=pristine, manifest=pristine_manifest):
        for target, content in ((path, data), (manifest_path, manifest)):
            if content is None:
                os.unlink(target)
            else:
                with open(target, "wb") as handle:
                    handle.write(content)

    middle = len(pristine) // 2
    flipped = pristine[:middle] + bytes([pristine[middle] ^ 0x01]) + pristine[middle + 1:]
    other = "mysql" if database.engine != "mysql" else "postgresql"
    cases = [
        ("truncated", dict(data=pristine[:-20]), "truncated or damaged"),
        ("flipped byte", dict(data=flipped), "sha256 does not match"),
        ("missing file", dict(data=None), "does not exist"),
        ("missing manifest", dict(manifest=None), "manifest"),
        ("other engine", dict(manifest=pristine_manifest.replace(
            b'"engine": "%s"' % database.engine.encode(), b'"engine": "%s"' % other.encode())),
         "was taken from a %s database" % other),
    ]
    for case, damage, expected in cases:
        put(**damage)
        with pytest.raises(BackupError) as failure:
            store.restore(path, engine)
        assert expected in failure.value.msg, (case, failure.value.msg)
        assert engine.snapshot() == current, case  # not touched
        put()
    # A stream damaged inside, with a manifest that matches the damage, fails the full
    # decompress test.
    damaged_manifest = json.loads(pristine_manifest)
    damaged_manifest["sha256"] = __import__("hashlib").sha256(flipped).hexdigest()
    put(data=flipped, manifest=json.dumps(damaged_manifest).encode())
    with pytest.raises(BackupError) as failure:
        store.restore(path, engine)
    assert "is not an intact gzip stream" in failure.value.msg
    assert engine.snapshot() == current
    put()
    store.restore(path, engine)  # the undamaged backup still restores


def test_a_backup_of_another_engine_is_refused(sqlite_database, postgres_database, tmp_path):
    seed(sqlite_database)
    store = BackupStore(str(tmp_path / "backups"), make_runner())
    backup = store.write("pre", engine_of(sqlite_database))
    target = engine_of(postgres_database)
    with pytest.raises(BackupError) as failure:
        store.restore(backup["path"], target)
    assert "was taken from a sqlite database; it cannot be restored into postgresql" \
        in failure.value.msg
    assert target.snapshot()["schema"] == {}


def test_a_failed_restore_says_so(sqlite_database, tmp_path):
    seed(sqlite_database)
    store = BackupStore(str(tmp_path / "backups"))
    backup = store.write("pre", engine_of(sqlite_database))
    nowhere = engine_for(Connection("sqlite", str(tmp_path / "missing-dir" / "db.sqlite3")),
                         make_runner())
    with pytest.raises(RestoreFailed) as failure:
        store.restore(backup["path"], nowhere)
    assert failure.value.msg.startswith("restoring %s into sqlite database" % backup["file"])
    assert "does not exist" in failure.value.msg


# -- writing failures ---------------------------------------------------------------------------

def test_unwritable_or_impossible_directories_are_refused(tmp_path):
    with tmpfs(str(tmp_path / "ro"), "size=64k,ro") as readonly:
        if readonly is None:
            readonly = str(tmp_path / "ro")
            os.chmod(readonly, 0o500)
            if os.geteuid() == 0:
                pytest.skip("cannot make an unwritable directory for root here")
        with pytest.raises(BackupError) as failure:
            BackupStore(readonly)
        assert "is not writable" in failure.value.msg
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(BackupError) as failure:
        BackupStore(str(a_file))
    assert "not a directory" in failure.value.msg
    with pytest.raises(BackupError) as failure:
        BackupStore(str(a_file / "sub"))
    assert "cannot create the backup directory" in failure.value.msg


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_a_full_disk_leaves_no_backup_file(sqlite_database, tmp_path, compression):
    execute(sqlite_database, "CREATE TABLE blobs (data BLOB); "
                             "INSERT INTO blobs VALUES (randomblob(400000));")
    engine = engine_of(sqlite_database)
    with tmpfs(str(tmp_path / "small"), "size=64k,mode=0700") as small:
        if small is None:
            small = str(tmp_path / "small")
            store = BackupStore(small)

            def writer(out):
                out.write(b"x" * 1000)
                raise OSError(28, "No space left on device")
            with pytest.raises(BackupError) as failure:
                store.write("pre", engine, writer, compression=compression)
        else:
            store = BackupStore(small)
            with pytest.raises(BackupError) as failure:
                store.write("pre", engine, compression=compression)
        assert "no space left" in failure.value.msg.lower(), failure.value.msg
        assert "No backup file was left" in failure.value.msg
        assert os.listdir(small) == []


def test_a_failing_dump_leaves_no_backup_file(postgres_database, tmp_path):
    seed(postgres_database)
    store = BackupStore(str(tmp_path / "backups"), make_runner())
    with pytest.raises(BackupError) as failure:
        store.write("pre", engine_of(postgres_database, port=1))
    assert "cannot connect to postgresql database" in failure.value.msg
    engine = engine_of(postgres_database)

    def dies_midway(out):
        engine.dump(out)
        raise OSError(5, "Input/output error")
    with pytest.raises(BackupError) as failure:
        store.write("pre", engine, dies_midway, compression="gzip")
    assert "Input/output error" in failure.value.msg
    assert os.listdir(store.directory) == []


# -- retention ----------------------------------------------------------------------------------

def test_prune_keeps_exactly_n_and_never_the_protected_one(sqlite_database, tmp_path):
    seed(sqlite_database)
    engine = engine_of(sqlite_database)
    store = BackupStore(str(tmp_path / "backups"))
    media = tmp_path / "media"
    media.mkdir()
    (media / "a.txt").write_text("a")
    a = [store.write("a", engine, compression="none", media_root=str(media)) for _attempt in range(4)]
    b = [store.write("b", engine, compression="none") for _attempt in range(2)]
    listed = store.list(label="a")
    assert [m["file"] for m in listed] == [m["file"] for m in reversed(a)]  # newest first
    assert store.newest(label="b")["file"] == b[-1]["file"]
    assert store.newest(label="nothing") is None

    removed = store.prune(2, protect=[a[0]["path"]])
    assert removed == sorted([a[1]["file"], a[2]["file"]])
    assert [m["file"] for m in store.list(label="a")] == [a[3]["file"], a[0]["file"]]
    assert len(store.list(label="b")) == 2
    for gone in (a[1], a[2]):
        assert not os.path.exists(gone["path"]) and not os.path.exists(gone["path"] + ".json")
        assert not os.path.exists(os.path.join(store.directory, gone["media"]["file"]))

    assert store.prune(1, protect=[a[0]["file"]], label="a") == [a[3]["file"]]
    assert [m["file"] for m in store.list()] == [b[1]["file"], b[0]["file"], a[0]["file"]]
    assert store.prune(1, engine="postgresql") == []
    for keep in (0, -1, "2"):
        with pytest.raises(BackupError):
            store.prune(keep)


# -- media --------------------------------------------------------------------------------------

def make_media(root):
    os.makedirs(os.path.join(root, "uploads", "2024", "ünïcode dir"))
    os.makedirs(os.path.join(root, "empty"))
    with open(os.path.join(root, "uploads", "2024", "ünïcode dir", "photo.bin"), "wb") as handle:
        handle.write(os.urandom(50000))
    with open(os.path.join(root, "readme.txt"), "w") as handle:
        handle.write("media\n")
    os.symlink("uploads/2024", os.path.join(root, "latest"))
    os.chmod(root, 0o755)


def test_media_archive_and_restore_round_trip(sqlite_database, tmp_path):
    seed(sqlite_database)
    engine = engine_of(sqlite_database)
    media_root = str(tmp_path / "site" / "media")
    make_media(media_root)
    original = tree_hash(media_root)
    store = BackupStore(str(tmp_path / "backups"))
    backup = store.write("pre", engine, media_root=media_root)
    media = backup["media"]
    assert backup["compression"] == ("zstd" if shutil.which("zstd") else "gzip")
    assert media["files"] == 2 and media["file"].endswith(".media.tar.gz")
    archive = os.path.join(store.directory, media["file"])
    assert mode(archive) == 0o600 and media["size"] == os.path.getsize(archive)
    assert store.verify(backup["path"])["media"] == media

    os.unlink(os.path.join(media_root, "readme.txt"))
    with open(os.path.join(media_root, "new.txt"), "w") as handle:
        handle.write("after the backup")
    assert tree_hash(media_root) != original
    store.restore_media(media["file"], media_root, sha256=media["sha256"])
    assert tree_hash(media_root) == original
    assert mode(media_root) == 0o755
    assert sorted(os.listdir(str(tmp_path / "site"))) == ["media"]  # no old/new leftovers

    # A damaged archive is refused and the current media stay as they are.
    os.unlink(os.path.join(media_root, "readme.txt"))
    current = tree_hash(media_root)
    broken = os.path.join(str(tmp_path), "broken.media.tar.gz")
    data = open(archive, "rb").read()
    with open(broken, "wb") as handle:
        handle.write(data[:len(data) // 2] + b"\0garbage" + data[len(data) // 2 + 8:])
    with pytest.raises(BackupError) as failure:
        store.restore_media(broken, media_root)
    assert "were not changed" in failure.value.msg
    assert tree_hash(media_root) == current
    assert sorted(os.listdir(str(tmp_path / "site"))) == ["media"]
    with pytest.raises(BackupError):
        store.restore_media(archive, media_root, sha256="0" * 64)
    with pytest.raises(BackupError):
        store.archive_media(str(tmp_path / "no-such-media"), "x")


def _tar_gz(path, add):
    with tarfile.open(path, "w:gz") as tar:
        add(tar)
    return path


def _member(tar, name, kind=tarfile.REGTYPE, linkname="", data=b"evil"):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


@pytest.mark.parametrize("attack", [
    ("../escaped.txt", tarfile.REGTYPE, ""),
    ("/tmp/dbsafe-absolute-escape.txt", tarfile.REGTYPE, ""),
    ("sub/../../escaped.txt", tarfile.REGTYPE, ""),
    ("link", tarfile.SYMTYPE, "/etc"),
    ("link", tarfile.SYMTYPE, "../outside"),
    ("hard", tarfile.LNKTYPE, "../outside"),
    ("device", tarfile.CHRTYPE, ""),
])
def test_media_archives_cannot_write_outside_the_media_root(tmp_path, attack):
    name, kind, linkname = attack
    site = tmp_path / "site"
    media_root = str(site / "media")
    os.makedirs(media_root)
    with open(os.path.join(media_root, "keep.txt"), "w") as handle:
        handle.write("keep")
    before = tree_hash(media_root)
    archive = _tar_gz(str(tmp_path / "evil.media.tar.gz"),
                      lambda tar: (_member(tar, "ok.txt"), _member(tar, name, kind, linkname),
                                   _member(tar, "link/passwd") if kind == tarfile.SYMTYPE
                                   else None))
    store = BackupStore(str(tmp_path / "backups"))
    with pytest.raises(BackupError) as failure:
        store.restore_media(archive, media_root)
    assert "outside the target directory" in failure.value.msg or "device" in failure.value.msg
    assert tree_hash(media_root) == before
    assert sorted(os.listdir(str(site))) == ["media"]
    assert not os.path.exists(str(site / "escaped.txt"))
    assert not os.path.exists("/tmp/dbsafe-absolute-escape.txt")


def test_restore_media_creates_a_missing_media_root(tmp_path):
    source = str(tmp_path / "source")
    make_media(source)
    store = BackupStore(str(tmp_path / "backups"))
    media = store.archive_media(source, "m")
    target = str(tmp_path / "new-site" / "media")
    os.makedirs(os.path.dirname(target))
    store.restore_media(media["file"], target)
    assert tree_hash(target) == tree_hash(source)


def test_store_helpers_with_a_real_engine_name(tmp_path):
    # engine_for + Connection from the module-options shape, as the modules build them.
    connection = Connection.from_params({"engine": "sqlite3", "name": str(tmp_path / "x.db")})
    engine = engine_for(connection, make_runner())
    engine.create_database(connection.name)
    store = BackupStore(str(tmp_path / "b"))
    backup = store.write("empty", engine)
    assert store.verify(backup["path"], "sqlite")["database"] == connection.name
    shutil.rmtree(str(tmp_path / "b"))


# -- PostgreSQL directory format: kept as the directory pg_dump wrote ---------------------------

def directory_backup(store, engine, label="pg"):
    return store.write(label, engine, fmt="directory", jobs=2)


def data_files(path):
    """The dump's table data files, biggest first."""
    names = [n for n in os.listdir(path) if n.endswith(".dat.gz")]
    return sorted(names, key=lambda n: -os.path.getsize(os.path.join(path, n)))


def file_sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def test_pg_directory_backup_is_a_private_directory_that_round_trips(postgres_database, tmp_path):
    seed(postgres_database)
    add_bulk_rows(postgres_database, 3000)
    engine = engine_of(postgres_database)
    before = engine.snapshot()
    store = BackupStore(str(tmp_path / "backups"), make_runner())
    backup = directory_backup(store, engine)
    path, name = backup["path"], backup["file"]
    assert name.endswith(".pgdir") and NAME.match(name), name
    assert sorted(os.listdir(store.directory)) == [name, name + ".json"]  # no .partial left
    assert os.path.isdir(path) and mode(path) == 0o700
    listing = sorted(os.listdir(path))
    assert "toc.dat" in listing and data_files(path)
    for entry in listing:
        assert mode(os.path.join(path, entry)) == 0o600, entry

    manifest = json.load(open(path + ".json"))
    assert mode(path + ".json") == 0o600
    assert manifest["format"] == "directory" and manifest["compression"] == "none"
    assert [entry["name"] for entry in manifest["files"]] == listing
    for entry in manifest["files"]:
        full = os.path.join(path, entry["name"])
        assert entry["size"] == os.path.getsize(full)
        assert entry["sha256"] == file_sha256(full)
    assert manifest["size"] == sum(entry["size"] for entry in manifest["files"])
    assert manifest["sha256"] == files_sha256(manifest["files"]) == backup["sha256"]
    assert store.verify(path + os.sep, engine)["file"] == name  # also as 'x.pgdir/'
    # The completeness read is split over two pg_restore processes: together they read every
    # entry of the table of contents, each table's data exactly once.
    listing = subprocess.run(["pg_restore", "--list", path], capture_output=True, check=True)
    entries = [line for line in listing.stdout.splitlines() if line and not line.startswith(b";")]
    groups = postgresql_archive.data_entry_groups(store.runner, shutil.which("pg_restore"), path)
    assert len(groups) == 2 and set(groups[0]) | set(groups[1]) == set(entries)
    data = [line for line in entries if b" TABLE DATA " in line]
    assert sorted(line for group in groups for line in group if line in data) == sorted(data)
    assert store.newest(label="pg")["file"] == name

    mutate(postgres_database)
    assert diff_snapshots(before, engine.snapshot()) != []
    store.restore(path, engine, jobs=2)
    assert diff_snapshots(before, engine.snapshot()) == []
    assert engine.snapshot() == before
    assert sorted(os.listdir(store.directory)) == [name, name + ".json"]  # no staging copy


def test_damaged_pg_directory_backups_are_refused_before_the_database_is_touched(
        postgres_database, tmp_path):
    seed(postgres_database)
    add_bulk_rows(postgres_database, 3000)
    engine = engine_of(postgres_database)
    store = BackupStore(str(tmp_path / "backups"), make_runner())
    backup = directory_backup(store, engine)
    path, manifest_path = backup["path"], backup["path"] + ".json"
    pristine = str(tmp_path / "pristine")
    shutil.copytree(path, pristine)
    pristine_manifest = open(manifest_path, "rb").read()
    biggest = data_files(path)[0]
    mutate(postgres_database)
    current = engine.snapshot()

    def put_back():
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
        shutil.copytree(pristine, path)
        with open(manifest_path, "wb") as handle:
            handle.write(pristine_manifest)

    def truncate(name):
        with open(os.path.join(path, name), "r+b") as handle:
            handle.truncate(os.path.getsize(os.path.join(path, name)) // 2)

    def flip(name):
        with open(os.path.join(path, name), "r+b") as handle:
            handle.seek(os.path.getsize(os.path.join(path, name)) // 2)
            byte = handle.read(1)
            handle.seek(-1, os.SEEK_CUR)
            handle.write(bytes([byte[0] ^ 0xFF]))

    def write_manifest(change):
        manifest = json.loads(pristine_manifest)
        change(manifest)
        with open(manifest_path, "w") as handle:
            json.dump(manifest, handle)

    def flip_and_fix_the_manifest():
        # A data file damaged inside, with a manifest rewritten to match the damage: the
        # hashes agree, pg_restore's read of the gzip stream does not.
        flip(biggest)

        def match(manifest):
            for entry in manifest["files"]:
                if entry["name"] == biggest:
                    entry["sha256"] = file_sha256(os.path.join(path, biggest))
            manifest["sha256"] = files_sha256(manifest["files"])
        write_manifest(match)

    def drop_from_list(manifest):
        manifest["files"] = [e for e in manifest["files"] if e["name"] != biggest]

    cases = [
        ("missing data file", lambda: os.unlink(os.path.join(path, biggest)),
         "is incomplete: its file %s is missing" % biggest),
        ("missing toc.dat", lambda: os.unlink(os.path.join(path, "toc.dat")),
         "is incomplete: its file toc.dat is missing"),
        ("extra file", lambda: open(os.path.join(path, "9999.dat.gz"), "wb").close(),
         "holds a file its manifest does not list: 9999.dat.gz"),
        ("truncated data file", lambda: truncate(biggest),
         "is truncated or damaged: its file %s has" % biggest),
        ("truncated toc.dat", lambda: truncate("toc.dat"),
         "is truncated or damaged: its file toc.dat has"),
        ("flipped byte in a data file", lambda: flip(biggest),
         "the sha256 of its file %s does not match" % biggest),
        ("flipped byte in toc.dat", lambda: flip("toc.dat"),
         "the sha256 of its file toc.dat does not match"),
        ("damage the manifest matches", flip_and_fix_the_manifest,
         "is not a complete PostgreSQL directory archive"),
        ("file list edited", lambda: write_manifest(drop_from_list),
         "has a damaged manifest"),
        ("format edited", lambda: write_manifest(lambda m: m.update(format="custom")),
         "lists files for the custom format"),
        ("missing directory", lambda: shutil.rmtree(path), "does not exist"),
        ("missing manifest", lambda: os.unlink(manifest_path), "manifest"),
        ("other engine", lambda: write_manifest(lambda m: m.update(engine="mysql")),
         "was taken from a mysql database"),
        ("a file instead of the directory",
         lambda: (shutil.rmtree(path), open(path, "wb").close()), "should be a directory"),
    ]
    for case, damage, expected in cases:
        damage()
        with pytest.raises(BackupError) as failure:
            store.restore(path, engine, jobs=2)
        assert expected in failure.value.msg, (case, failure.value.msg)
        assert engine.snapshot() == current, case  # not touched
        put_back()
    store.restore(path, engine, jobs=2)  # the undamaged backup still restores
    assert diff_snapshots(engine.snapshot(), current) != []


@pytest.mark.parametrize("cut", ["data file cut short", "toc.dat never written",
                                 "data file never written"])
def test_a_pg_directory_dump_cut_short_is_refused_even_when_pg_dump_exits_0(
        postgres_database, tmp_path, cut):
    seed(postgres_database)
    add_bulk_rows(postgres_database, 3000)
    engine = engine_of(postgres_database)
    store = BackupStore(str(tmp_path / "backups"), make_runner())

    def dump_cut_short(target):
        engine.dump(target, fmt="directory", jobs=2)  # exits 0
        biggest = os.path.join(target, data_files(target)[0])
        if cut == "data file cut short":
            with open(biggest, "r+b") as handle:
                handle.truncate(os.path.getsize(biggest) // 2)
        elif cut == "toc.dat never written":
            os.unlink(os.path.join(target, "toc.dat"))
        else:
            os.unlink(biggest)

    with pytest.raises(BackupError) as failure:
        store.write("pg", engine, dump_cut_short, fmt="directory", jobs=2)
    assert "is not a complete PostgreSQL directory archive" in failure.value.msg, \
        failure.value.msg
    assert "No backup file was left" in failure.value.msg
    assert os.listdir(store.directory) == []


def test_pg_directory_format_refuses_a_second_compression(postgres_database, tmp_path):
    engine = engine_of(postgres_database)
    store = BackupStore(str(tmp_path / "backups"), make_runner())
    with pytest.raises(BackupError) as failure:
        store.write("pg", engine, fmt="directory", compression="gzip")
    assert "compresses each file itself" in failure.value.msg
    assert os.listdir(store.directory) == []


def test_retention_keeps_exactly_n_pg_directory_backups(postgres_database, tmp_path):
    seed(postgres_database)
    engine = engine_of(postgres_database)
    store = BackupStore(str(tmp_path / "backups"), make_runner())
    taken = [directory_backup(store, engine) for _attempt in range(4)]
    # A dump interrupted before its rename: never a backup, never counted, never pruned.
    leftover = taken[0]["path"][:-len(".pgdir")] + "9.pgdir.partial"
    shutil.copytree(taken[0]["path"], leftover)
    assert [m["file"] for m in store.list()] == [m["file"] for m in reversed(taken)]
    assert store.newest(label="pg")["file"] == taken[-1]["file"]

    removed = store.prune(2, protect=[taken[0]["path"]])
    assert removed == sorted([taken[1]["file"], taken[2]["file"]])
    assert [m["file"] for m in store.list()] == [taken[3]["file"], taken[0]["file"]]
    for gone in (taken[1], taken[2]):
        assert not os.path.lexists(gone["path"]) and not os.path.exists(gone["path"] + ".json")
    assert os.path.isdir(leftover)
    assert store.prune(2) == []
    for kept in (taken[0], taken[3]):
        store.verify(kept["path"], engine)


def write_legacy_tar_backup(store, engine, label="old"):
    """A directory-format backup as versions before the directory layout wrote it: the dump
    directory in one uncompressed tar (member 'dump/'), one size and sha256 in the manifest."""
    dump = os.path.join(str(store.directory), ".old-dump")
    os.mkdir(dump, 0o700)
    engine.dump(os.path.join(dump, "dump"), fmt="directory", jobs=2)
    name = "%s-postgresql-20261120T010203040506Z.pgdir.tar" % label
    path = os.path.join(store.directory, name)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(os.path.join(dump, "dump"), arcname="dump")
    shutil.rmtree(dump)
    os.chmod(path, 0o600)
    public = engine.connection.public()
    manifest = {"format_version": 1, "dbsafe_version": "0.1.0", "label": label,
                "engine": "postgresql", "database": public["name"], "host": public["host"],
                "port": public["port"], "user": public["user"],
                "created_at": "2026-11-20T01:02:03.040506Z", "file": name,
                "size": os.path.getsize(path), "sha256": file_sha256(path),
                "compression": "none", "format": "directory",
                "tool_versions": engine.tool_versions(), "migrations": None, "media": None}
    with open(path + ".json", "w") as handle:
        json.dump(manifest, handle)
    return path


def test_an_earlier_versions_pgdir_tar_backup_still_verifies_and_restores(postgres_database,
                                                                          tmp_path):
    seed(postgres_database)
    add_bulk_rows(postgres_database, 1000)
    engine = engine_of(postgres_database)
    before = engine.snapshot()
    store = BackupStore(str(tmp_path / "backups"), make_runner())
    path = write_legacy_tar_backup(store, engine)
    assert store.verify(path, engine)["format"] == "directory"
    assert store.newest(label="old")["path"] == path
    mutate(postgres_database)
    store.restore(path, engine, jobs=2)
    assert engine.snapshot() == before
    assert sorted(os.listdir(store.directory)) == sorted([os.path.basename(path),
                                                          os.path.basename(path) + ".json"])
    # Damage is still refused before the database is touched.
    mutate(postgres_database)
    current = engine.snapshot()
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    with open(path, "wb") as handle:
        handle.write(bytes(data))
    with pytest.raises(BackupError) as failure:
        store.restore(path, engine, jobs=2)
    assert "sha256 does not match" in failure.value.msg
    assert engine.snapshot() == current
    assert store.prune(1, label="old") == []


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
@pytest.mark.parametrize("engine_fixture,fmt", [("mysql_database", "sql"),
                                                ("postgres_database", "plain")])
def test_a_corrupt_text_dump_stream_is_refused_by_its_one_decompression_pass(
        request, engine_fixture, fmt, compression, tmp_path):
    """The completeness check of a compressed text dump decompresses once (through tail, for
    the dump tool's last line): that one pass must still refuse a stream damaged inside, also
    when the manifest matches the damage, and a whole stream whose dump was cut short."""
    db = request.getfixturevalue(engine_fixture)
    seed(db)
    add_bulk_rows(db, 3000)
    engine = engine_of(db)
    store = BackupStore(str(tmp_path / "backups"), make_runner())
    backup = store.write("pre", engine, fmt=fmt, compression=compression)
    path = backup["path"]
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    with open(path, "wb") as handle:
        handle.write(bytes(data))
    manifest = json.load(open(path + ".json"))
    manifest["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    with open(path + ".json", "w") as handle:
        json.dump(manifest, handle)
    mutate(db)
    current = engine.snapshot()
    with pytest.raises(BackupError) as failure:
        store.restore(path, engine)
    assert "is not an intact %s stream" % compression in failure.value.msg, failure.value.msg
    assert engine.snapshot() == current

    def cut_short(out):
        # A whole, valid compressed stream of a dump that stops early; its tool "exited 0".
        whole = str(tmp_path / "whole.dump")
        with open(whole, "wb") as handle:
            engine.dump(handle, fmt=fmt)
        out.write(open(whole, "rb").read()[:-300])
    with pytest.raises(BackupError) as failure:
        store.write("cut", engine, cut_short, fmt=fmt, compression=compression)
    assert "is incomplete" in failure.value.msg and "cut short" in failure.value.msg
    assert not [n for n in os.listdir(store.directory) if n.startswith("cut-")]
