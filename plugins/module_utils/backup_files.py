# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The files of the backup store: hashing, synced writes, removal, safe tar extraction.

Plain file work with no knowledge of dumps or compression; the store's other parts build on it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import shutil
import stat
import tarfile

from ansible_collections.dbsafe.django.plugins.module_utils.errors import BackupError

CHUNK = 1024 * 1024


def is_directory_backup(manifest):
    """True for a backup kept as a dump directory (its manifest lists its files); False for
    one file, including an earlier version's ``.pgdir.tar``."""
    return manifest.get("files") is not None


def files_sha256(files):
    """The sha256 of a directory backup: of its canonical file list (name, size, sha256 of
    each file, sorted by name), so it changes when any file does."""
    canonical = sorted(([entry["name"], entry["size"], entry["sha256"]] for entry in files),
                       key=lambda row: row[0])
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode("utf-8")) \
        .hexdigest()


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_member(path, sync):
    """(size, sha256) of one file of a directory backup; with ``sync`` made 0600 and fsynced
    first."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if sync:
            os.fchmod(fd, 0o600)
            os.fsync(fd)
        size = os.fstat(fd).st_size
        digest = hashlib.sha256()
        with os.fdopen(os.dup(fd), "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                digest.update(chunk)
        return size, digest.hexdigest()
    finally:
        os.close(fd)


def tree_hash(directory):
    """sha256 over the sorted relative paths, kinds and contents (link targets) of a tree."""
    digest = hashlib.sha256()
    entries = []
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            full = os.path.join(root, name)
            entries.append((os.path.relpath(full, directory), full))
    for relative, full in sorted(entries):
        mode = os.lstat(full).st_mode
        if stat.S_ISLNK(mode):
            record = "l:%s:%s" % (relative, os.readlink(full))
        elif stat.S_ISDIR(mode):
            record = "d:%s" % relative
        else:
            record = "f:%s:%s" % (relative, sha256_file(full))
        digest.update(record.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def write_synced(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def fsync_directory(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_any(path):
    """A file, or a directory backup (its partial) with everything in it."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        remove(path)


def safe_extract(fileobj, target):
    """Unpack a tar stream into ``target``, refusing anything that could land outside it."""
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for member in tar:
            check_member(member)
            if hasattr(tarfile, "tar_filter"):
                # 'tar' keeps owners (media must stay the web server's) but drops setuid bits.
                tar.extract(member, target, filter="tar")
            else:
                tar.extract(member, target)


def check_member(member):
    name = member.name
    parts = [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise BackupError("archive member %r points outside the target directory" % name)
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise BackupError("archive member %r is a device or fifo; refusing it" % name)
    if member.issym() or member.islnk():
        link_parts = member.linkname.replace("\\", "/").split("/")
        # Without '..' and absolute targets, no chain of links can leave the directory.
        if member.linkname.startswith("/") or ".." in link_parts:
            raise BackupError("archive member %r links to %r, outside the target directory"
                              % (name, member.linkname))
