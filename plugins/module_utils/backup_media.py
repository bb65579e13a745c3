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
    """``BackupStore.restore_media`` (see there)."""
    archive = str(archive) if os.sep in str(archive) else store.path(archive)
    media_root = os.path.abspath(str(media_root)).rstrip(os.sep)
    if not os.path.isfile(archive):
        raise BackupError("media archive %s does not exist" % archive)
    if sha256 and sha256_file(archive) != sha256:
        raise BackupError("media archive %s is damaged (sha256 differs from the manifest); "
                          "the media in %s were not changed" % (archive, media_root))
    parent, base = os.path.split(media_root)
    incoming = tempfile.mkdtemp(prefix=base + ".dbsafe-new-", dir=parent)
    try:
        with decompressed(store.runner, archive, Compression("gzip")) as stream:
            safe_extract(stream, incoming)
    except BaseException as error:
        shutil.rmtree(incoming, ignore_errors=True)
        if isinstance(error, (DbsafeError, OSError, tarfile.TarError)):
            raise BackupError("cannot unpack media archive %s: %s. The media in %s were "
                              "not changed." % (os.path.basename(archive), reason(error),
                                                media_root))
        raise
    if not os.path.lexists(media_root):
        os.rename(incoming, media_root)
        return
    previous = tempfile.mkdtemp(prefix=base + ".dbsafe-old-", dir=parent)
    os.rename(media_root, previous)  # onto the empty directory just made
    try:
        os.rename(incoming, media_root)
    except OSError:
        os.rename(previous, media_root)
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    shutil.rmtree(previous, ignore_errors=True)
