# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The media archive of a backup: ``<name>.media.tar.gz`` beside it, and putting it back."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import tarfile
import tempfile

from ansible_collections.dbsafe.django.plugins.module_utils.backup_files import (
    fsync_directory,
    remove,
    safe_extract,
    sha256_file,
)
from ansible_collections.dbsafe.django.plugins.module_utils.backup_streams import (
    decompressed,
    stream_to_file,
)
from ansible_collections.dbsafe.django.plugins.module_utils.backup_verify import check_written
from ansible_collections.dbsafe.django.plugins.module_utils.backup_write import PARTIAL_SUFFIX
from ansible_collections.dbsafe.django.plugins.module_utils.compression import Compression
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    BackupError,
    DbsafeError,
    details_of,
    reason,
)

MEDIA_SUFFIX = ".media.tar.gz"


def archive_media(store, media_root, name):
    """``BackupStore.archive_media`` (see there)."""
    media_root = os.path.abspath(str(media_root))
    if not os.path.isdir(media_root):
        raise BackupError("the media directory %s does not exist" % media_root)
    file_name = os.path.basename(name) + MEDIA_SUFFIX
    final = store.path(file_name)
    partial = final + PARTIAL_SUFFIX
    counter = {"files": 0}

    def write(out):
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            tar.add(media_root, arcname=".", recursive=False)
            for root, dirs, files in os.walk(media_root):
                dirs.sort()
                for entry in sorted(dirs) + sorted(files):
                    full = os.path.join(root, entry)
                    tar.add(full, arcname=os.path.relpath(full, media_root), recursive=False)
                    if entry in files and os.path.isfile(full) and not os.path.islink(full):
                        counter["files"] += 1

    gzip = Compression("gzip")
    try:
        size = stream_to_file(store.runner, partial, write, gzip)
        sha256 = check_written(store.runner, partial, size, gzip, None)
        os.rename(partial, final)
        fsync_directory(store.directory)
    except BaseException as error:
        remove(partial)
        if isinstance(error, (DbsafeError, OSError)):
            raise BackupError("archiving the media in %s failed: %s"
                              % (media_root, reason(error)), **details_of(error))
        raise
    return {"file": file_name, "sha256": sha256, "size": size, "files": counter["files"]}


def restore_media(store, archive, media_root, sha256=None):
    """``BackupStore.restore_media`` (see there): stage, then swap."""
    staged = stage_media(store, archive, media_root, sha256)
    previous = swap_in_media(staged, media_root)
    discard(previous)


# Room left free beyond the unpacked media: directories, metadata, what others write meanwhile.
SPACE_MARGIN = 1024 * 1024


def needed_space(total_size, entries):
    """Bytes an unpacked archive of ``entries`` members of ``total_size`` bytes needs, with
    one 4 KiB block per member and the margin."""
    return total_size + 4096 * entries + SPACE_MARGIN


def stage_media(store, archive, media_root, sha256=None):
    """Unpack the media archive into a new directory beside ``media_root`` (the same
    filesystem: the swap is a rename) and return its path; nothing else is touched.

    The archive is read once to learn its unpacked size and refused when the filesystem has
    less room than that; a failure while unpacking (a full disk after all) removes the staging
    directory. Either way the media in ``media_root`` are unchanged.
    """
    archive = str(archive) if os.sep in str(archive) else store.path(archive)
    media_root = os.path.abspath(str(media_root)).rstrip(os.sep)
    if not os.path.isfile(archive):
        raise BackupError("media archive %s does not exist; the media in %s were not changed"
                          % (archive, media_root))
    if sha256 and sha256_file(archive) != sha256:
        raise BackupError("media archive %s is damaged (sha256 differs from the manifest); "
                          "the media in %s were not changed" % (archive, media_root))
    parent, base = os.path.split(media_root)
    if not os.path.isdir(parent):
        raise BackupError("the directory %s that holds the media directory does not exist; "
                          "the media in %s were not changed" % (parent, media_root))
    try:
        total, entries = _unpacked_size(store, archive)
        stats = os.statvfs(parent)
    except (DbsafeError, OSError, tarfile.TarError) as error:
        raise BackupError("cannot read media archive %s: %s. The media in %s were not changed."
                          % (os.path.basename(archive), reason(error), media_root))
    free = stats.f_bavail * stats.f_frsize
    needed = needed_space(total, entries)
    if free < needed:
        raise BackupError(
            "not enough space for the media beside %s: unpacking %s needs %s, the filesystem "
            "has %s free. The media in %s were not changed; free space there and restore again."
            % (media_root, os.path.basename(archive), _size_text(needed), _size_text(free),
               media_root), space_needed=needed, space_free=free)
    try:
        incoming = tempfile.mkdtemp(prefix=base + STAGED_MARK, dir=parent)
    except OSError as error:
        raise BackupError("cannot create a staging directory beside %s: %s. The media in %s "
                          "were not changed." % (media_root, error.strerror, media_root))
    try:
        with decompressed(store.runner, archive, Compression("gzip")) as stream:
            safe_extract(stream, incoming)
    except BaseException as error:
        shutil.rmtree(incoming, ignore_errors=True)
        if isinstance(error, (DbsafeError, OSError, tarfile.TarError)):
            raise BackupError("cannot unpack media archive %s beside %s: %s. The media in %s "
                              "were not changed." % (os.path.basename(archive), media_root,
                                                     reason(error), media_root))
        raise
    return incoming


def swap_in_media(staged, media_root):
    """Put the staged directory in place of ``media_root`` (two renames on one filesystem);
    returns where the previous media went (None when there were none). On a failure the
    previous media are back in place and the staged copy is removed."""
    media_root = os.path.abspath(str(media_root)).rstrip(os.sep)
    parent, base = os.path.split(media_root)
    try:
        if not os.path.lexists(media_root):
            os.rename(staged, media_root)
            return None
        previous = tempfile.mkdtemp(prefix=base + OLD_MARK, dir=parent)
        os.rename(media_root, previous)  # onto the empty directory just made
    except OSError as error:
        shutil.rmtree(staged, ignore_errors=True)
        raise BackupError("cannot swap the restored media into %s: %s. The media in %s were "
                          "not changed." % (media_root, error.strerror, media_root))
    try:
        os.rename(staged, media_root)
    except OSError as error:
        os.rename(previous, media_root)
        shutil.rmtree(staged, ignore_errors=True)
        raise BackupError("cannot swap the restored media into %s: %s. The media in %s were "
                          "not changed." % (media_root, error.strerror, media_root))
    return previous


def put_back_media(previous, media_root):
    """Undo ``swap_in_media``: the previous media (``previous``, None: there were none) back
    in ``media_root``; the restored ones are removed."""
    media_root = os.path.abspath(str(media_root)).rstrip(os.sep)
    parent, base = os.path.split(media_root)
    restored = tempfile.mkdtemp(prefix=base + OLD_MARK, dir=parent)
    os.rename(media_root, restored)
    if previous is not None:
        os.rename(previous, media_root)
    shutil.rmtree(restored, ignore_errors=True)


def discard(path):
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


STAGED_MARK = ".dbsafe-new-"
OLD_MARK = ".dbsafe-old-"


def _unpacked_size(store, archive):
    total = entries = 0
    with decompressed(store.runner, archive, Compression("gzip")) as stream:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                entries += 1
                if member.isfile():
                    total += member.size
    return total, entries


def _size_text(size):
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return ("%d %s" % (size, unit)) if unit == "bytes" else ("%.1f %s" % (size, unit))
        size /= 1024.0
