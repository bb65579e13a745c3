# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Proving a backup intact: size and sha256 against its manifest, and the dump itself complete
(the compressed stream decompresses to its end; the engine's format says what complete means:
see ``engines.base.DumpFormat``). The same checks run when a backup is written and before
anyone relies on it."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.dbsafe.django.plugins.module_utils.backup_files import (
    files_sha256,
    hash_member,
    is_directory_backup,
    sha256_file,
)
from ansible_collections.dbsafe.django.plugins.module_utils.backup_streams import (
    decompressed_tail,
)
from ansible_collections.dbsafe.django.plugins.module_utils.compression import Compression
from ansible_collections.dbsafe.django.plugins.module_utils.engines.registry import dump_format
from ansible_collections.dbsafe.django.plugins.module_utils.errors import BackupError
from ansible_collections.dbsafe.django.plugins.module_utils.processes import Background

# Files of a directory backup hashed at the same time: the machine's cores are shared with
# pg_restore's completeness read (and the database server).
HASH_WORKERS = 2


def check_written(runner, path, size, compression, fmt, read=False):
    """Re-read what is on disk: size and stream must hold; returns the file's sha256.
    ``read``: the dump was already read to its end while it was written."""
    actual_size = os.path.getsize(path)
    if actual_size != size:
        raise BackupError("%s has %d bytes on disk but %d were written"
                          % (path, actual_size, size))
    sha256, test_error = hash_and_test(runner, path, compression, fmt, read=read)
    if test_error is not None:
        raise test_error
    return sha256


def hash_and_test(runner, path, compression, fmt, read=False):
    """(sha256 of ``path``, the stream test's error or None): the test runs in other processes
    while this one hashes, so a check costs the longer of the two, not their sum."""
    test = Background(_test_stream, runner, path, compression, fmt, read)
    try:
        sha256 = sha256_file(path)
    finally:
        test.join()
    return sha256, test.error


def hash_and_test_directory(runner, directory, fmt, sync=False, test=True):
    """([{name, size, sha256}] sorted by name, the completeness test's error or None) for a
    directory backup: the format's reader reads the whole dump in other processes while the
    files are hashed, ``HASH_WORKERS`` at a time (hashlib and file reads release the GIL).
    With ``sync`` each file is first made 0600 and fsynced; without ``test`` the files are
    only hashed."""
    names = sorted(os.listdir(directory))
    for name in names:
        if not stat.S_ISREG(os.lstat(os.path.join(directory, name)).st_mode):
            raise BackupError("%s in backup %s is not a regular file"
                              % (name, os.path.basename(directory)))
    checker = Background(dump_format(fmt).check_directory, directory, runner) if test else None
    try:
        # The biggest files first, so the workers finish together.
        by_size = sorted(names, key=lambda name: -os.path.getsize(os.path.join(directory, name)))
        with ThreadPoolExecutor(max_workers=HASH_WORKERS) as pool:
            hashed = dict(zip(by_size, pool.map(
                lambda name: hash_member(os.path.join(directory, name), sync), by_size)))
    finally:
        if checker is not None:
            checker.join()
    files = [{"name": name, "size": hashed[name][0], "sha256": hashed[name][1]}
             for name in names]
    return files, checker.error if checker is not None else None


def _test_stream(runner, path, compression, fmt, read=False):
    dump = dump_format(fmt)
    if compression.enabled:
        tail = decompressed_tail(runner, path, compression,
                                 dump.tail_bytes if dump.trailer else None)
        dump.check_tail(os.path.basename(path), tail)
        return
    dump.check_file(path, runner, read=read)


def sha256_suffices(manifest, engine, jobs):
    """Before a restore: the stream was tested when written, and the engine's restore of this
    file itself reads all of it before any change shows (``restore_is_all_or_nothing``)."""
    return (manifest.get("stream_checked") is True
            and manifest.get("compression", "none") == "none"
            and not is_directory_backup(manifest)
            and hasattr(engine, "restore_is_all_or_nothing")
            and engine.restore_is_all_or_nothing(manifest.get("format"), jobs))


def verify_file(runner, manifest, test=True):
    data = manifest["path"]
    if not os.path.isfile(data) or os.path.islink(data):
        raise BackupError("backup %s is not a regular file" % manifest["file"],
                          file=manifest["file"])
    size = os.path.getsize(data)
    if size != manifest.get("size"):
        raise BackupError(
            "backup %s is truncated or damaged: %d bytes on disk, %s in its manifest"
            % (manifest["file"], size, manifest.get("size")), file=manifest["file"])
    if test:
        sha256, test_error = hash_and_test(
            runner, data, Compression(manifest.get("compression", "none")),
            manifest.get("format"))
    else:
        sha256, test_error = sha256_file(data), None
    if sha256 != manifest.get("sha256"):
        raise BackupError(
            "backup %s is damaged: its sha256 does not match the manifest"
            % manifest["file"], file=manifest["file"])
    if test_error is not None:
        raise test_error


def verify_directory(runner, manifest, test=True):
    data, name = manifest["path"], manifest["file"]

    def refuse(message, *args):
        raise BackupError(("backup %s " % name) + message % args, file=name)

    if not os.path.isdir(data) or os.path.islink(data):
        refuse("should be a directory (a PostgreSQL directory-format dump)")
    listed = manifest.get("files")
    try:
        intact = files_sha256(listed) == manifest.get("sha256")
    except (KeyError, TypeError, ValueError):
        intact = False
    if not intact:
        refuse("has a damaged manifest: its file list does not match its sha256")
    if not dump_format(manifest.get("format")).directory:
        refuse("has a damaged manifest: it lists files for the %s format, which is one file",
               manifest.get("format"))
    expected = dict((entry["name"], entry) for entry in listed)
    present = set(os.listdir(data))
    missing = sorted(set(expected) - present)
    if missing:
        refuse("is incomplete: its file %s is missing", ", ".join(missing))
    extra = sorted(present - set(expected))
    if extra:
        refuse("holds a file its manifest does not list: %s", ", ".join(extra))
    for entry in listed:
        full = os.path.join(data, entry["name"])
        if not stat.S_ISREG(os.lstat(full).st_mode):
            refuse("is damaged: its file %s is not a regular file", entry["name"])
        size = os.path.getsize(full)
        if size != entry["size"]:
            refuse("is truncated or damaged: its file %s has %d bytes on disk, %s in the "
                   "manifest", entry["name"], size, entry["size"])
    files, test_error = hash_and_test_directory(runner, data, manifest["format"], test=test)
    actual = dict((entry["name"], entry["sha256"]) for entry in files)
    for entry in sorted(listed, key=lambda entry: entry["name"]):
        if actual.get(entry["name"]) != entry["sha256"]:
            refuse("is damaged: the sha256 of its file %s does not match the manifest",
                   entry["name"])
    if test_error is not None:
        raise test_error


def verify_media(manifest):
    media = manifest.get("media")
    if media:
        media_path = os.path.join(os.path.dirname(manifest["path"]), media["file"])
        if not os.path.isfile(media_path):
            raise BackupError("the media archive %s of backup %s is missing"
                              % (media["file"], manifest["file"]), file=manifest["file"])
        if (os.path.getsize(media_path) != media.get("size")
                or sha256_file(media_path) != media.get("sha256")):
            raise BackupError("the media archive %s of backup %s is damaged"
                              % (media["file"], manifest["file"]), file=manifest["file"])
