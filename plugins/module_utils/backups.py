# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup store: verified dump files with JSON manifests in one private directory.

A file with a final name is always complete and verified: every backup is streamed (dump tool
-> compressor) into ``<name>.partial``, synced, re-read (sha256 for the manifest) and
decompress-tested, and only then renamed. On any failure the partial file goes and a
BackupError is raised. Nothing uncompressed is ever written next to the backups.

Layout: ``<label>-<engine>-<UTC YYYYmmddTHHMMSSffffffZ>.<ext>`` with ext ``sqlite.gz``,
``pgdump`` (pg custom), ``sql.gz`` (pg plain, MySQL), ``pgdir`` (pg directory) or the
``.zst`` / uncompressed variants; ``<same>.json`` is the manifest and
``<label>-<engine>-<stamp>.media.tar.gz`` the optional media archive. All files 0600, the
directory 0700.

A PostgreSQL directory-format backup stays the directory pg_dump wrote (``<name>.pgdir``, 0700,
its files 0600): pg_dump -j writes it as ``<name>.pgdir.partial``, every file is synced, hashed
and the dump read to its end by pg_restore before the rename; its manifest lists each file's
name, size and sha256 (``files``), and its ``sha256`` is the sha256 of that list, so one
checksum still names the whole backup. ``pg_restore -j`` restores straight from it. Earlier
versions packed the directory into one ``<name>.pgdir.tar``; those still verify and restore.

This file is the store itself: its directory, names, manifests, listing and retention, and
the entry points. The work is done by ``backup_write`` (writing), ``backup_verify``
(checking), ``backup_media`` (media archives), ``backup_streams`` (compressors) and
``backup_files`` (file helpers); what makes a dump complete is the engines' knowledge
(``engines.base.DumpFormat``: trailers, magic bytes, reading an archive to its end).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import fcntl
import json
import os
import shutil
import tempfile

from ansible_collections.dbsafe.django.plugins.module_utils import (
    backup_identity,
    backup_media,
    backup_verify,
    backup_write,
)
from ansible_collections.dbsafe.django.plugins.module_utils.backup_files import (
    fsync_directory,
    is_directory_backup,
    remove,
    remove_any,
    safe_extract,
)
from ansible_collections.dbsafe.django.plugins.module_utils.backup_streams import decompressed
from ansible_collections.dbsafe.django.plugins.module_utils.backup_write import MANIFEST_SUFFIX
from ansible_collections.dbsafe.django.plugins.module_utils.compression import Compression
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    BackupError,
    DbsafeError,
    RestoreFailed,
    details_of,
)
from ansible_collections.dbsafe.django.plugins.module_utils.runner import Runner


def _no_run_command(*args, **kwargs):
    raise BackupError("this BackupStore has no run_command; it only streams through pipelines")


class BackupStore:
    """Backups of one or more databases in ``directory``.

    ``runner`` runs the compressors; without one a Runner that can only stream pipelines is
    made (that is all the store needs).
    """

    def __init__(self, directory, runner=None):
        self.directory = os.path.abspath(os.path.expanduser(str(directory)))
        self.runner = runner or Runner(_no_run_command)
        if not os.path.exists(self.directory):
            try:
                os.makedirs(self.directory, 0o700)
                os.chmod(self.directory, 0o700)
            except OSError as error:
                raise BackupError("cannot create the backup directory %s: %s"
                                  % (self.directory, error.strerror), directory=self.directory)
        if not os.path.isdir(self.directory):
            raise BackupError("the backup directory %s exists but is not a directory"
                              % self.directory, directory=self.directory)
        self._probe_writable()

    def _probe_writable(self):
        # access() says yes to root even on a read-only mount: really create a file.
        try:
            fd, probe = tempfile.mkstemp(prefix=".dbsafe-probe-", dir=self.directory)
            os.close(fd)
            os.unlink(probe)
        except OSError as error:
            raise BackupError(
                "the backup directory %s is not writable (%s): fix its owner or permissions, "
                "or choose another directory" % (self.directory, error.strerror),
                directory=self.directory)

    def path(self, name):
        return os.path.join(self.directory, os.path.basename(name))

    # -- writing --------------------------------------------------------------------------

    def write(self, label, engine, stream_writer=None, compression=None, fmt=None, jobs=1,
              migrations=None, media_root=None):
        """Take a backup of ``engine``'s database; returns its manifest (plus ``path``).

        ``stream_writer(out)`` writes the dump into the binary file object ``out`` (by default
        ``engine.dump(out, fmt, jobs)``; for a directory format it gets the path of the new,
        empty 0700 directory to dump into). ``compression`` is 'gzip', 'zstd' or 'none';
        None or 'auto' is ``compression.auto_compression``: 'none' for formats that compress
        themselves (pg custom and directory; the directory format takes no other), else zstd
        when it is installed, else gzip. ``migrations`` (the applied migrations) and the
        archive of ``media_root`` go into the manifest.
        """
        return backup_write.write_backup(self, label, engine, stream_writer, compression, fmt,
                                         jobs, migrations, media_root)

    # -- reading --------------------------------------------------------------------------

    def _paths(self, path):
        """(data file, manifest) for a backup named by its data file, manifest or name."""
        path = str(path).rstrip(os.sep) or str(path)  # a directory backup given as 'x.pgdir/'
        name = os.path.basename(path)
        if name.endswith(MANIFEST_SUFFIX):
            name = name[:-len(MANIFEST_SUFFIX)]
        directory = os.path.dirname(os.path.abspath(path)) if os.sep in path \
            else self.directory
        data = os.path.join(directory, name)
        return data, data + MANIFEST_SUFFIX

    def read_manifest(self, path):
        data, manifest_path = self._paths(path)
        try:
            with open(manifest_path, "rb") as handle:
                manifest = json.loads(handle.read().decode("utf-8"))
        except FileNotFoundError:
            raise BackupError("the manifest %s of backup %s is missing: the backup is incomplete "
                              "and cannot be trusted" % (manifest_path, os.path.basename(data)),
                              file=os.path.basename(data))
        except (OSError, ValueError) as error:
            raise BackupError("the manifest %s cannot be read: %s" % (manifest_path, error),
                              file=os.path.basename(data))
        if not isinstance(manifest, dict) or manifest.get("file") != os.path.basename(data):
            raise BackupError("the manifest %s does not describe %s"
                              % (manifest_path, os.path.basename(data)))
        manifest["path"] = data
        return manifest

    def verify(self, path, engine=None, restore_jobs=None):
        """Check a backup completely before anyone relies on it; returns its manifest.

        The file and its manifest must exist, size and sha256 must match, the compressed
        stream must decompress to its end, and ``engine`` (an Engine or a name), when given,
        must be the engine the backup was taken from. A media archive is checked too. A
        directory backup must hold exactly the files of its manifest, each with its size and
        sha256, and its dump must read to the end.

        ``restore_jobs`` (right before a restore with that many jobs): where the restore
        itself refuses a damaged archive without changing anything, and the manifest says the
        archive was read to its end when it was written (``stream_checked``), size and sha256
        suffice - equal hashes mean the very bytes that passed then. The engine says which
        restores those are (``restore_is_all_or_nothing``: PostgreSQL's one-stream restore,
        one transaction that commits only after the whole dump arrived); uncompressed files
        only. Every other restore gets the full check first.
        """
        data, _manifest_path = self._paths(path)
        if not os.path.lexists(data):
            raise BackupError("backup file %s does not exist" % data, file=os.path.basename(data))
        manifest = self.read_manifest(path)
        engine_name = getattr(engine, "name", engine)
        if engine_name and manifest.get("engine") != engine_name:
            raise BackupError(
                "backup %s was taken from a %s database; it cannot be restored into %s"
                % (manifest["file"], manifest.get("engine"), engine_name), file=manifest["file"])
        test = (restore_jobs is None
                or not backup_verify.sha256_suffices(manifest, engine, restore_jobs))
        if is_directory_backup(manifest):
            backup_verify.verify_directory(self.runner, manifest, test)
        else:
            backup_verify.verify_file(self.runner, manifest, test)
        backup_verify.verify_media(manifest)
        return manifest

    @contextlib.contextmanager
    def open_for_restore(self, path, engine=None, manifest=None):
        """A verified source for ``engine.restore``: a decompressing binary stream, or for a
        directory format the dump directory itself (an earlier version's ``.pgdir.tar``: the
        path of its unpacked copy, removed afterwards)."""
        if manifest is None:
            manifest = self.verify(path, engine)
        data = manifest["path"]
        compression = Compression(manifest.get("compression", "none"))
        if is_directory_backup(manifest):
            yield data
            return
        if manifest.get("format") == "directory":
            staging = tempfile.mkdtemp(prefix=".restore-", dir=os.path.dirname(data))
            try:
                if compression.enabled:
                    with decompressed(self.runner, data, compression) as stream:
                        safe_extract(stream, staging)
                else:
                    with open(data, "rb") as handle:
                        safe_extract(handle, staging)
                yield os.path.join(staging, "dump")
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return
        if not compression.enabled:
            with open(data, "rb") as handle:
                yield handle
            return
        with decompressed(self.runner, data, compression) as stream:
            yield stream

    def restore(self, path, engine, jobs=1, manifest=None):
        """Verify the backup, then restore it into ``engine``'s database; returns the manifest.

        Nothing touches the database before the backup has verified (``verify`` with
        ``restore_jobs=jobs``; ``manifest``: what such a verify of this backup returned).
        """
        if manifest is None:
            manifest = self.verify(path, engine, restore_jobs=jobs)
        try:
            with self.open_for_restore(path, engine, manifest=manifest) as source:
                engine.restore(source, fmt=manifest["format"], jobs=jobs)
        except DbsafeError as error:
            if isinstance(error, (BackupError, RestoreFailed)):
                raise
            raise RestoreFailed(
                "restoring %s into %s failed: %s" % (manifest["file"], engine.describe(),
                                                     error.msg),
                file=manifest["file"], **details_of(error))
        return manifest

    # -- listing and retention ------------------------------------------------------------

    def manifests(self):
        """[(manifest file name, its manifest or the BackupError reading it)] of every
        manifest in the directory, in no order."""
        found = []
        for name in os.listdir(self.directory):
            if not name.endswith(MANIFEST_SUFFIX) or name.startswith("."):
                continue
            try:
                found.append((name, self.read_manifest(os.path.join(self.directory, name))))
            except BackupError as error:
                found.append((name, error))
        return found

    def list(self, label=None, engine=None, database=None, strict=None):
        """Complete backups (data file and manifest), newest first (``backup_identity``:
        by sequence, earlier versions' backups below by their created_at).

        ``engine`` (an Engine, or a name) and ``label`` filter. ``database`` (an identity,
        ``Engine.instance_identity()``; an Engine given as ``engine`` gives its own) keeps only
        that database's backups - other databases' backups with the same label in a shared
        directory are never seen. ``strict`` (default: when a database is given): a manifest
        that may be one of them but cannot be read, or whose data is gone, raises a
        BackupError naming it instead of being left out.
        """
        engine_name = getattr(engine, "name", engine)
        if database is None and hasattr(engine, "instance_identity"):
            database = engine.instance_identity()
        if strict is None:
            strict = database is not None
        found, damaged = [], []
        for name, manifest in self.manifests():
            if isinstance(manifest, BackupError):
                if backup_identity.could_belong(name, label, engine_name):
                    damaged.append("%s (%s)" % (name, manifest.msg))
                continue
            if label is not None and manifest.get("label") != label:
                continue
            if engine_name is not None and manifest.get("engine") != engine_name:
                continue
            if database is not None and not backup_identity.belongs_to(manifest, database):
                continue
            if not _backup_exists(manifest):
                damaged.append("%s (its backup %s is missing)" % (name, manifest["file"]))
                continue
            found.append(manifest)
        if damaged and strict:
            whose = backup_identity.describe_identity(database) if database else "label %s" % label
            raise BackupError(
                "damaged backup manifest(s) among the backups of %s in %s: %s. No backup was "
                "chosen, restored or removed, and the database was not changed (which backup is "
                "the newest cannot be told while one cannot be read). Repair or remove those "
                "manifests (and their backup files), then run again; a restore can also name its "
                "backup (src)" % (whose, self.directory, "; ".join(sorted(damaged))),
                damaged=sorted(damaged), directory=self.directory)
        return backup_identity.newest_first(found)

    def newest(self, label=None, engine=None, database=None):
        backups = self.list(label, engine, database)
        return backups[0] if backups else None

    @contextlib.contextmanager
    def sequence_lock(self):
        """Held while a backup gets its sequence number and its final names: an exclusive
        flock on the directory itself (no file of ours appears in it). A file system that has
        no flock for directories (NFS) gets no lock: two backups of one database completing in
        the same millisecond could then share a number."""
        try:
            fd = os.open(self.directory, os.O_RDONLY)
        except OSError:
            yield
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                pass
            yield
        finally:
            os.close(fd)  # releases the flock

    def next_sequence(self, identity):
        """The sequence number of the next backup of ``identity`` (under ``sequence_lock``)."""
        readable = [manifest for _name, manifest in self.manifests()
                    if not isinstance(manifest, BackupError)]
        return backup_identity.next_sequence(readable, identity)

    def prune(self, keep, protect=None, label=None, engine=None, dry_run=False, database=None):
        """Keep the ``keep`` newest backups per label and engine of one database (``database``,
        or the Engine ``engine``'s own; see ``list``); returns the removed names (with
        ``dry_run``, the names that would be removed; nothing is touched).

        Backups named in ``protect`` (names or paths; e.g. the one just taken) are never
        removed and count towards ``keep``. A damaged manifest among them removes nothing.
        """
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise BackupError("keep must be a whole number of at least 1 (got %r): pruning "
                              "every backup is never what you want" % (keep,))
        protected = set(os.path.basename(str(name)) for name in (protect or []))
        groups = {}
        for manifest in self.list(label, engine, database):
            groups.setdefault((manifest["label"], manifest["engine"]), []).append(manifest)
        removed = []
        for backups in groups.values():
            kept = [m for m in backups if m["file"] in protected]
            for manifest in backups:
                if manifest["file"] in protected:
                    continue
                if len(kept) < keep:
                    kept.append(manifest)
                    continue
                if not dry_run:
                    self._remove_backup(manifest)
                removed.append(manifest["file"])
        return sorted(removed)

    def _remove_backup(self, manifest):
        # Manifest first: a half-removed backup is never listed.
        remove(manifest["path"] + MANIFEST_SUFFIX)
        remove_any(manifest["path"])
        if manifest.get("media"):
            remove(os.path.join(self.directory, manifest["media"]["file"]))
        fsync_directory(self.directory)

    # -- media ----------------------------------------------------------------------------

    def archive_media(self, media_root, name):
        """Archive ``media_root`` into ``<name>.media.tar.gz``; returns {file, sha256, size,
        files} for the manifest."""
        return backup_media.archive_media(self, media_root, name)

    def restore_media(self, archive, media_root, sha256=None):
        """Replace ``media_root`` with the contents of ``archive``.

        The archive is unpacked next to it first; only a complete, safe extraction is swapped
        in (old -> ``<media_root>.dbsafe-old-*``, new -> media_root, old removed). A failure
        leaves the current media untouched.
        """
        backup_media.restore_media(self, archive, media_root, sha256)


def _backup_exists(manifest):
    path = manifest["path"]
    if os.path.islink(path):
        return False
    return os.path.isdir(path) if is_directory_backup(manifest) else os.path.isfile(path)
