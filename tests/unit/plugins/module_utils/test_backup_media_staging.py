"""Media restores in two steps: staged beside the media directory (space checked first), then
swapped in by renames; and the messages when the swap fails after the database was restored.
Files only (gzip through the store's runner), no database."""
import os
from collections import namedtuple

import pytest

from ansible_collections.dbsafe.django.plugins.module_utils import backup_media
from ansible_collections.dbsafe.django.plugins.module_utils.backup_restore import (
    media_swap_failure_message,
)
from ansible_collections.dbsafe.django.plugins.module_utils.backups import BackupStore
from ansible_collections.dbsafe.django.plugins.module_utils.errors import BackupError

StatVfs = namedtuple("StatVfs", "f_bavail f_frsize")


def write_tree(root, files):
    for name, text in files.items():
        path = os.path.join(str(root), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)


def read_tree(root):
    found = {}
    for directory, _dirs, names in os.walk(str(root)):
        for name in names:
            path = os.path.join(directory, name)
            with open(path) as handle:
                found[os.path.relpath(path, str(root))] = handle.read()
    return found


@pytest.fixture
def archived(tmp_path):
    """(store, archive info, media root): an archive of {a.txt, sub/b.txt}, then the media
    changed to {c.txt}."""
    store = BackupStore(str(tmp_path / "backups"))
    media = tmp_path / "site" / "media"
    write_tree(media, {"a.txt": "a" * 5000, "sub/b.txt": "b"})
    info = backup_media.archive_media(store, str(media), "x")
    for name in ("a.txt", "sub/b.txt"):
        os.unlink(str(media / name))
    write_tree(media, {"c.txt": "current"})
    return store, info, media


def siblings(media):
    return sorted(os.listdir(os.path.dirname(str(media))))


def test_staging_then_swap_replaces_the_media_and_leaves_nothing_beside(archived):
    store, info, media = archived
    staged = backup_media.stage_media(store, info["file"], str(media), info["sha256"])
    assert read_tree(media) == {"c.txt": "current"}  # staged: nothing replaced yet
    assert read_tree(staged) == {"a.txt": "a" * 5000, "sub/b.txt": "b"}
    previous = backup_media.swap_in_media(staged, str(media))
    assert read_tree(media) == {"a.txt": "a" * 5000, "sub/b.txt": "b"}
    assert read_tree(previous) == {"c.txt": "current"}
    backup_media.put_back_media(previous, str(media))
    assert read_tree(media) == {"c.txt": "current"}
    assert siblings(media) == ["media"]


def test_too_little_space_is_refused_before_anything_is_unpacked(archived, monkeypatch):
    store, info, media = archived
    monkeypatch.setattr(backup_media.os, "statvfs", lambda path: StatVfs(1, 4096))
    with pytest.raises(BackupError) as failure:
        backup_media.stage_media(store, info["file"], str(media), info["sha256"])
    assert "not enough space" in failure.value.msg
    assert "were not changed" in failure.value.msg
    assert failure.value.details["space_needed"] >= 5000 + backup_media.SPACE_MARGIN
    assert read_tree(media) == {"c.txt": "current"}
    assert siblings(media) == ["media"]


def test_a_failing_unpack_removes_the_staging_directory(archived, monkeypatch):
    store, info, media = archived

    def full_disk(stream, target):
        with open(os.path.join(target, "partial"), "w") as handle:
            handle.write("x")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(backup_media, "safe_extract", full_disk)
    with pytest.raises(BackupError) as failure:
        backup_media.stage_media(store, info["file"], str(media), info["sha256"])
    assert "no space left" in failure.value.msg.lower()
    assert "were not changed" in failure.value.msg
    assert read_tree(media) == {"c.txt": "current"}
    assert siblings(media) == ["media"]


def test_a_damaged_archive_is_refused(archived):
    store, info, media = archived
    with pytest.raises(BackupError) as failure:
        backup_media.stage_media(store, info["file"], str(media), "0" * 64)
    assert "damaged" in failure.value.msg
    assert siblings(media) == ["media"]


def test_swap_failure_messages_say_the_state_of_database_and_media():
    safety = {"path": "/b/safety.sql.gz"}
    put_back = media_swap_failure_message("rename failed.", "db x", "/m", safety)
    assert "put back from the safety backup /b/safety.sql.gz" in put_back
    assert "both as they were before" in put_back
    none = media_swap_failure_message("rename failed.", "db x", "/m", None)
    assert "WAS restored" in none and "previous ones" in none and "do not match" in none
    failed = media_swap_failure_message("rename failed.", "db x", "/m", safety, "disk gone")
    assert "ALSO FAILED: disk gone" in failed and "unknown state" in failed
