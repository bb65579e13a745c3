# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writing one backup: the dump streamed (dump tool -> compressor) into ``<name>.partial``,
synced, re-read and checked (``backup_verify``), its manifest written, and only then both
renamed to their final names. On any failure everything this write made goes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import re

from ansible_collections.dbsafe.django.plugins.module_utils.backup_files import (
    files_sha256,
    fsync_directory,
    remove_any,
    write_synced,
)
from ansible_collections.dbsafe.django.plugins.module_utils.backup_streams import stream_to_file
from ansible_collections.dbsafe.django.plugins.module_utils.backup_verify import (
    check_written,
    hash_and_test_directory,
)
from ansible_collections.dbsafe.django.plugins.module_utils.compression import (
    Compression,
    auto_compression,
)
from ansible_collections.dbsafe.django.plugins.module_utils.engines.registry import dump_format
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    BackupError,
    DbsafeError,
    details_of,
    reason,
)

FORMAT_VERSION = 1
DBSAFE_VERSION = "0.1.0"
MANIFEST_SUFFIX = ".json"
PARTIAL_SUFFIX = ".partial"
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_STAMP = "%Y%m%dT%H%M%S%fZ"


def write_backup(store, label, engine, stream_writer=None, compression=None, fmt=None, jobs=1,
                 migrations=None, media_root=None):
    """``BackupStore.write`` (see there): returns the manifest plus ``path``."""
    if not _LABEL.match(label or ""):
        raise BackupError("backup label %r must be 1-64 letters, digits, '.', '_' or '-' "
                          "and start with a letter or digit" % (label,))
    fmt = engine.check_format(fmt)
    dump = dump_format(fmt)
    if compression in (None, "auto"):
        compression = auto_compression(dump.self_compressed)
    compression = Compression(compression)
    if dump.directory and compression.enabled:
        raise BackupError(
            "the %s format is kept as the directory its tool writes and its tool compresses "
            "each file itself: use compression auto or none (got %s)" % (fmt, compression.name))
    if compression.enabled:
        compression.tool()
    stamp = datetime.datetime.now(datetime.timezone.utc)
    base = "%s-%s-%s" % (label, engine.name, stamp.strftime(_STAMP))
    file_name = "%s.%s%s" % (base, dump.extension, compression.extension)
    final = store.path(file_name)
    partial = final + PARTIAL_SUFFIX
    manifest_final = final + MANIFEST_SUFFIX
    manifest_partial = manifest_final + PARTIAL_SUFFIX
    made = [partial, manifest_partial]
    try:
        # Which database this is (a query): asked before the dump, so a backup never names
        # the wrong one.
        identity = engine.instance_identity()
        tool_versions = engine.tool_versions()
        files = None
        if dump.directory:
            files = _dump_directory(store.runner, partial, engine, fmt, jobs, stream_writer)
            size = sum(entry["size"] for entry in files)
            sha256 = files_sha256(files)
        else:
            writer = stream_writer or (lambda out: engine.dump(out, fmt=fmt, jobs=jobs))
            # A format that can be read while it is written (pg custom) is, overlapping the dump.
            follow = dump if dump.follows_writes and not compression.enabled else None
            size = stream_to_file(store.runner, partial, writer, compression, follow=follow)
            sha256 = check_written(store.runner, partial, size, compression, fmt,
                                   read=follow is not None)
        media = None
        if media_root:
            media = store.archive_media(media_root, base)
            made.append(store.path(media["file"]))
        public = engine.connection.public()
        manifest = {
            "format_version": FORMAT_VERSION,
            "dbsafe_version": DBSAFE_VERSION,
            "label": label,
            "engine": engine.name,
            "database": public["name"],
            "host": public["host"],
            "port": public["port"],
            "user": public["user"],
            # For people only: the order is ``sequence``'s (below), never the writer's clock.
            "created_at": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "instance": identity,
            "file": file_name,
            "size": size,
            "sha256": sha256,
            "compression": compression.name,
            "format": fmt,
            "tool_versions": tool_versions,
            "migrations": [list(row) for row in migrations] if migrations is not None
            else None,
            "media": media,
        }
        if files is not None:
            manifest["files"] = files
        # The re-read above tested the stream (and read a dump to its end): the bytes behind
        # this sha256 passed it, so a restore may rely on the sha256 alone.
        manifest["stream_checked"] = True
        with store.sequence_lock():
            # Numbered in the order backups of this database complete in this directory.
            manifest["sequence"] = store.next_sequence(identity)
            write_synced(manifest_partial, (json.dumps(manifest, indent=2, sort_keys=True)
                                            + "\n").encode("utf-8"))
            # Data first: a manifest never points at a missing file.
            # Listed for clean-up only once renamed: a rename that fails (a directory of the
            # same name exists) must not make the clean-up remove what is not ours.
            os.rename(partial, final)
            made.append(final)
            os.rename(manifest_partial, manifest_final)
            made.append(manifest_final)
            fsync_directory(store.directory)
    except BaseException as error:
        for path in made:
            remove_any(path)
        if isinstance(error, (DbsafeError, OSError)):
            raise BackupError(
                "backup of %s failed: %s. No backup file was left in %s."
                % (engine.describe(), reason(error), store.directory),
                file=file_name, **details_of(error))
        raise
    manifest["path"] = final
    return manifest


def _dump_directory(runner, partial, engine, fmt, jobs, stream_writer):
    """The dump tool writes straight into ``partial`` (a new 0700 directory; with
    ``stream_writer(path)`` instead of ``engine.dump``); then every file is made 0600, synced
    and hashed while the dump is read to its end, and the directory is synced. Returns the
    manifest's ``files`` list."""
    os.mkdir(partial, 0o700)
    os.chmod(partial, 0o700)  # whatever the umask
    if stream_writer:
        stream_writer(partial)
    else:
        engine.dump(partial, fmt=fmt, jobs=jobs)
    files, test_error = hash_and_test_directory(runner, partial, fmt, sync=True)
    if test_error is not None:
        raise test_error
    fsync_directory(partial)
    return files
