"""What a restore checks before it touches the database, on the real servers.

A backup written by this version records that its stream was tested at write time. Right
before a single-stream restore of a PostgreSQL custom archive, size and sha256 are then enough:
equal hashes are the bytes that were read to their end at write time, and the restore itself
reads the archive inside one transaction (COMMIT only at the end; zlib checks every data
block), so even table data damaged behind a manifest that matches the damage changes nothing.
Every other restore re-reads the stream first (test_backups.py)."""
import hashlib
import json
import os
import shutil
import subprocess

import pytest

from runner_double import add_bulk_rows, engine_of, execute, make_runner, seed
from ansible_collections.dbsafe.django.plugins.module_utils.backups import BackupStore
from ansible_collections.dbsafe.django.plugins.module_utils.engines import postgresql_archive
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    BackupError,
    RestoreFailed,
)


def damage_behind_a_matching_manifest(path):
    with open(path, "rb") as handle:
        data = bytearray(handle.read())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0x5A for b in data[middle:middle + 64])
    with open(path, "wb") as handle:
        handle.write(bytes(data))
    with open(path + ".json") as handle:
        manifest = json.load(handle)
    manifest["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    with open(path + ".json", "w") as handle:
        json.dump(manifest, handle)


def test_single_stream_custom_restore_trusts_the_sha256_and_still_changes_nothing(
        postgres_database, tmp_path):
    seed(postgres_database)
    add_bulk_rows(postgres_database, 3000)  # several zlib blocks of table data
    engine = engine_of(postgres_database)
    store = BackupStore(str(tmp_path / "backups"), make_runner())
    backup = store.write("pre", engine)
    assert backup["format"] == "custom" and backup["stream_checked"] is True
    execute(postgres_database, "DELETE FROM shop_category WHERE name LIKE 'bulk %' AND id % 2 = 0")
    changed = engine.snapshot()

    store.restore(backup["path"], engine)  # intact: size + sha256, then the load
    restored = engine.snapshot()
    assert restored != changed

    execute(postgres_database, "DELETE FROM shop_category WHERE name LIKE 'bulk %' AND id % 2 = 0")
    changed = engine.snapshot()
    damage_behind_a_matching_manifest(backup["path"])
    with pytest.raises(RestoreFailed):  # refused by the load itself, not by a re-read first
        store.restore(backup["path"], engine)
    assert engine.snapshot() == changed  # the one transaction rolled back: untouched
    # The explicit check (state: verify) still reads the archive to its end.
    with pytest.raises(BackupError) as failure:
        store.verify(backup["path"], engine)
    assert "not a complete PostgreSQL custom archive" in failure.value.msg


def test_the_completeness_read_of_a_custom_archive_is_split_over_two_readers(
        postgres_database, tmp_path):
    """Both readers together read every entry of the table of contents, each table's data
    once; and a custom archive cut short still fails the split read."""
    seed(postgres_database)
    add_bulk_rows(postgres_database, 3000)
    store = BackupStore(str(tmp_path / "backups"), make_runner())
    backup = store.write("pre", engine_of(postgres_database))
    pg_restore = shutil.which("pg_restore")
    listing = subprocess.run([pg_restore, "--list", backup["path"]], capture_output=True,
                             check=True).stdout
    entries = [line for line in listing.splitlines() if line and not line.startswith(b";")]
    groups = postgresql_archive.data_entry_groups(store.runner, pg_restore, backup["path"],
                                                  "custom")
    assert len(groups) == 2 and set(groups[0]) | set(groups[1]) == set(entries)
    data = [line for line in entries if b" TABLE DATA " in line]
    assert sorted(line for group in groups for line in group if line in data) == sorted(data)

    cut = str(tmp_path / "cut.pgdump")
    with open(backup["path"], "rb") as source, open(cut, "wb") as target:
        target.write(source.read(os.path.getsize(backup["path"]) * 2 // 3))
    with pytest.raises(BackupError) as failure:
        postgresql_archive.read_archive(store.runner, cut, "custom")
    assert "not a complete PostgreSQL custom archive" in failure.value.msg
