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
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import datetime
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.dbsafe.django.plugins.module_utils.compression import Compression
from ansible_collections.dbsafe.django.plugins.module_utils.engines.base import find_tool
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    BackupError,
    CommandError,
    DbsafeError,
    RestoreFailed,
)
from ansible_collections.dbsafe.django.plugins.module_utils.processes import Background
from ansible_collections.dbsafe.django.plugins.module_utils.runner import Runner

FORMAT_VERSION = 1
DBSAFE_VERSION = "0.1.0"
CHUNK = 1024 * 1024
FORMAT_EXTENSIONS = {
    "sqlite": "sqlite",
    "custom": "pgdump",
    "plain": "sql",
    "sql": "sql",
    "directory": "pgdir",
}
# What earlier versions wrote for the directory format (one tar of the dump directory): still
# verified and restored, no longer written.
LEGACY_DIRECTORY_EXTENSION = "pgdir.tar"
# Formats whose dump is a directory, kept as one (PostgreSQL's; the engines' directory_formats).
DIRECTORY_FORMATS = ("directory",)
# Formats whose tool compresses already: stored as they are unless asked otherwise.
SELF_COMPRESSED = ("custom", "directory")
MEDIA_SUFFIX = ".media.tar.gz"
MANIFEST_SUFFIX = ".json"
PARTIAL_SUFFIX = ".partial"
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_STAMP = "%Y%m%dT%H%M%S%fZ"
_MAGIC = {"custom": b"PGDMP", "sqlite": b"SQLite format 3\x00"}
# The line each text dump tool writes when it has finished: a dump cut short lacks it, also
# when the tool (or a wrapper) claimed success. mariadb-dump/mysqldump; pg_dump's plain format
# (15.18+ follows it with an \\unrestrict line, hence a tail, not the last line).
_TRAILERS = {"sql": b"-- Dump completed", "plain": b"-- PostgreSQL database dump complete"}
_TAIL_BYTES = 4096
# Files of a directory backup hashed at the same time: the machine's cores are shared with
# pg_restore's completeness read (and the database server).
_HASH_WORKERS = 2
# A TOC entry with data of its own in a dump directory (pg_restore --list: '<id>; <catalog>
# <oid> TABLE DATA <schema> <name> <owner>'); large objects are BLOBS (15) or LARGE OBJECTS (17).
_DATA_ENTRY = re.compile(br"^\d+; \d+ \d+ (TABLE DATA|BLOBS|LARGE OBJECTS) ")


def _check_trailer(path, tail, trailer):
    if trailer not in tail:
        raise BackupError(
            "%s is incomplete: its dump does not end with the line %r that the dump tool "
            "writes when it has finished (the dump was cut short)"
            % (os.path.basename(path), trailer.decode("ascii")))


def auto_compression(fmt):
    """The compression used when none is asked for."""
    if fmt in SELF_COMPRESSED:
        return "none"
    return "zstd" if Compression("zstd").available() else "gzip"


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
        empty 0700 directory to dump into). ``compression`` is 'gzip', 'zstd' or 'none'; None
        (auto) means 'none' for formats that compress themselves (pg custom and directory;
        the directory format takes no other), else zstd when it is
        installed (several times faster than gzip at the same ratio), else gzip.
        ``migrations`` (the applied migrations) and the archive of ``media_root`` go into the
        manifest.
        """
        if not _LABEL.match(label or ""):
            raise BackupError("backup label %r must be 1-64 letters, digits, '.', '_' or '-' "
                              "and start with a letter or digit" % (label,))
        fmt = engine.check_format(fmt)
        compression = Compression(compression or auto_compression(fmt))
        directory_format = engine.is_directory_format(fmt)
        if directory_format and compression.enabled:
            raise BackupError(
                "the %s format is kept as the directory its tool writes and its tool compresses "
                "each file itself: use compression auto or none (got %s)"
                % (fmt, compression.name))
        if compression.enabled:
            compression.tool()
        stamp = datetime.datetime.now(datetime.timezone.utc)
        base = "%s-%s-%s" % (label, engine.name, stamp.strftime(_STAMP))
        file_name = "%s.%s%s" % (base, FORMAT_EXTENSIONS[fmt], compression.extension)
        final = self.path(file_name)
        partial = final + PARTIAL_SUFFIX
        manifest_final = final + MANIFEST_SUFFIX
        manifest_partial = manifest_final + PARTIAL_SUFFIX
        made = [partial, manifest_partial]
        try:
            tool_versions = engine.tool_versions()
            files = None
            if directory_format:
                files = self._dump_directory(partial, engine, fmt, jobs, stream_writer)
                size = sum(entry["size"] for entry in files)
                sha256 = files_sha256(files)
            else:
                writer = stream_writer or (lambda out: engine.dump(out, fmt=fmt, jobs=jobs))
                # A custom archive is read to its end by pg_restore WHILE pg_dump writes it.
                follow = fmt == "custom" and not compression.enabled
                size = self._stream_to_file(partial, writer, compression, follow=follow)
                sha256 = self._check_written(partial, size, compression, fmt, read=follow)
            media = None
            if media_root:
                media = self.archive_media(media_root, base)
                made.append(self.path(media["file"]))
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
                "created_at": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
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
            # The re-read above tested the stream (and read a dump to its end): the bytes
            # behind this sha256 passed it, so a restore may rely on the sha256 alone.
            manifest["stream_checked"] = True
            _write_synced(manifest_partial, (json.dumps(manifest, indent=2, sort_keys=True)
                                             + "\n").encode("utf-8"))
            # Data first: a manifest never points at a missing file.
            # Listed for clean-up only once renamed: a rename that fails (a directory of the
            # same name exists) must not make the clean-up remove what is not ours.
            os.rename(partial, final)
            made.append(final)
            os.rename(manifest_partial, manifest_final)
            made.append(manifest_final)
            _fsync_directory(self.directory)
        except BaseException as error:
            for path in made:
                _remove_any(path)
            if isinstance(error, (DbsafeError, OSError)):
                raise BackupError(
                    "backup of %s failed: %s. No backup file was left in %s."
                    % (engine.describe(), _reason(error), self.directory),
                    file=file_name, **_details(error))
            raise
        manifest["path"] = final
        return manifest

    def _dump_directory(self, partial, engine, fmt, jobs, stream_writer):
        """The dump tool writes straight into ``partial`` (a new 0700 directory; with
        ``stream_writer(path)`` instead of ``engine.dump``); then every file is made 0600,
        synced and hashed while the dump is read to its end, and the directory is synced.
        Returns the manifest's ``files`` list."""
        os.mkdir(partial, 0o700)
        os.chmod(partial, 0o700)  # whatever the umask
        if stream_writer:
            stream_writer(partial)
        else:
            engine.dump(partial, fmt=fmt, jobs=jobs)
        files, test_error = self._hash_and_test_directory(partial, fmt, sync=True)
        if test_error is not None:
            raise test_error
        _fsync_directory(partial)
        return files

    def _stream_to_file(self, partial, writer, compression, follow=False):
        """writer -> [pipe -> compressor] -> ``partial`` (0600, synced); returns its size.

        The last stage writes the file itself (pg_dump's stdout, the compressor's stdout, or
        the writer's own writes): no copy through Python, and pg_dump sees a seekable file.
        The sha256 is taken by ``_check_written`` on the re-read that verifies the file
        anyway. Whichever side fails first makes the other stop: a full disk kills the
        compressor, the dump tool then dies of EPIPE.

        With ``follow`` (a PostgreSQL custom archive) pg_restore reads the file to its end
        while it is written (see ``_read_while_written``); its verdict is raised after the
        writer's own error, if any.
        """
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        written = threading.Event()
        follower = Background(self._read_while_written, partial, written) if follow else None
        try:
            with os.fdopen(fd, "wb") as sink:
                if compression.enabled:
                    self._write_compressed(sink, writer, compression)
                else:
                    writer(sink)
                    sink.flush()
                os.fsync(sink.fileno())
                size = os.fstat(sink.fileno()).st_size
        finally:
            written.set()
            if follower is not None:
                follower.join()
        if follower is not None and follower.error is not None:
            raise follower.error
        return size

    def _read_while_written(self, path, written):
        """Feed ``path`` to ``pg_restore --file=/dev/null`` as pg_dump appends to it, to the
        end once ``written`` is set: the completeness read of a custom archive (see
        ``_read_pg_archive``) overlaps the dump instead of following it. pg_dump only appends,
        except for rewriting its table of contents in place at the end (same length; only
        the data offsets change, which a reader of a stream does not use)."""
        argv = [find_tool(["pg_restore"], "pg_restore (postgresql-client) checks PostgreSQL "
                          "archives"), "--format=custom", "--file=" + os.devnull]
        read_fd, write_fd = os.pipe()
        reader = Background(self._read_to_devnull, argv, read_fd)
        try:
            with open(path, "rb") as source, os.fdopen(write_fd, "wb") as target:
                while True:
                    done = written.is_set()  # before the read: a last read after it
                    chunk = source.read(CHUNK)
                    if chunk:
                        target.write(chunk)
                    elif done:
                        break
                    else:
                        time.sleep(0.02)
        except BrokenPipeError:
            pass  # pg_restore stopped early: its own error says why
        finally:
            reader.join()
        if reader.error is not None:
            raise BackupError("%s is not a complete PostgreSQL custom archive: %s"
                              % (os.path.basename(path), _reason(reader.error)))

    def _write_compressed(self, sink, writer, compression):
        dump_read, dump_write = os.pipe()
        compressor = Background(self._compress, compression.compress_argv(), dump_read,
                                os.dup(sink.fileno()))
        writer_error = None
        out = os.fdopen(dump_write, "wb")
        try:
            writer(out)
            out.flush()
        except BaseException as error:  # noqa: B902 - reported below, by priority
            writer_error = error
        finally:
            try:
                out.close()  # end of stream for the compressor
            except OSError as error:
                writer_error = writer_error or error
        compressor.join()
        # The root cause first: the compressor (it is the one that meets a full disk), then
        # the dump itself.
        for error in (compressor.error, writer_error):
            if error is not None:
                raise error

    def _compress(self, argv, read_fd, write_fd):
        """``argv`` from ``read_fd`` (None: no input) to ``write_fd``; both are closed."""
        with os.fdopen(write_fd, "wb") as target:
            if read_fd is None:
                self.runner.pipeline([argv], stdout=target)
                return
            with os.fdopen(read_fd, "rb") as source:
                self.runner.pipeline([argv], stdin=source, stdout=target)

    def _check_written(self, path, size, compression, fmt, read=False):
        """Re-read what is on disk: size and stream must hold; returns the file's sha256.
        ``read``: the archive was already read to its end while it was written."""
        actual_size = os.path.getsize(path)
        if actual_size != size:
            raise BackupError("%s has %d bytes on disk but %d were written"
                              % (path, actual_size, size))
        sha256, test_error = self._hash_and_test(path, compression, fmt, read=read)
        if test_error is not None:
            raise test_error
        return sha256

    def _hash_and_test(self, path, compression, fmt, read=False):
        """(sha256 of ``path``, the stream test's error or None): the decompress test runs in
        another process while this one hashes, so a check costs the longer of the two, not
        their sum. ``read``: skip the completeness read of a pg archive (done already)."""
        test = Background(self._test_stream, path, compression, fmt, read)
        try:
            sha256 = _sha256_file(path)
        finally:
            test.join()
        return sha256, test.error

    def _hash_and_test_directory(self, directory, fmt, sync=False, test=True):
        """([{name, size, sha256}] sorted by name, the completeness test's error or None) for
        a directory backup: pg_restore reads the whole dump in another process while the
        files are hashed, ``_HASH_WORKERS`` at a time (hashlib and file reads release the
        GIL). With ``sync`` each file is first made 0600 and fsynced; without ``test`` the
        files are only hashed."""
        names = sorted(os.listdir(directory))
        for name in names:
            if not stat.S_ISREG(os.lstat(os.path.join(directory, name)).st_mode):
                raise BackupError("%s in backup %s is not a regular file"
                                  % (name, os.path.basename(directory)))
        test = Background(self._read_pg_archive, directory, fmt) if test else None
        try:
            # The biggest files first, so the workers finish together.
            by_size = sorted(names, key=lambda name: -os.path.getsize(
                os.path.join(directory, name)))
            with ThreadPoolExecutor(max_workers=_HASH_WORKERS) as pool:
                hashed = dict(zip(by_size, pool.map(
                    lambda name: _hash_member(os.path.join(directory, name), sync), by_size)))
        finally:
            if test is not None:
                test.join()
        files = [{"name": name, "size": hashed[name][0], "sha256": hashed[name][1]}
                 for name in names]
        return files, test.error if test is not None else None

    def _test_stream(self, path, compression, fmt, read=False):
        trailer = _TRAILERS.get(fmt)
        if compression.enabled:
            tail = self._decompressed_tail(path, compression, bool(trailer))
            if trailer:
                _check_trailer(path, tail, trailer)
            return
        magic = _MAGIC.get(fmt)
        if magic:
            with open(path, "rb") as handle:
                if handle.read(len(magic)) != magic:
                    raise BackupError("%s does not start like a %s dump"
                                      % (os.path.basename(path), fmt))
        if fmt == "custom":
            if not read:
                self._read_pg_archive(path, fmt)
        elif trailer:
            with open(path, "rb") as handle:
                handle.seek(max(0, os.path.getsize(path) - _TAIL_BYTES))
                _check_trailer(path, handle.read(), trailer)
        elif fmt == "directory":
            try:
                with tarfile.open(path, "r:") as tar:
                    tar.getmembers()
            except (tarfile.TarError, OSError) as error:
                raise BackupError("%s is not an intact tar archive: %s"
                                  % (os.path.basename(path), error))

    def _decompressed_tail(self, path, compression, keep_tail):
        """Decompress ``path`` to its end (a broken or truncated stream fails); returns the
        last bytes of the content when ``keep_tail``, else just tests the stream.

        One pass either way: ``zstd -d`` / ``gzip -d`` check the frame checksum (zstd) or
        CRC and length (gzip) exactly as ``-t`` does, and every stage's exit status counts,
        so a separate ``-t`` run would read the stream a second time for nothing."""
        try:
            if not keep_tail:
                with open(os.devnull, "wb") as devnull:
                    self.runner.pipeline([compression.test_argv(path)], stdout=devnull)
                return b""
            tail_argv = [find_tool(["tail"], "tail (coreutils) reads the end of a dump"),
                         "-c", str(_TAIL_BYTES)]
            with open(path, "rb") as source:
                return self.runner.pipeline([compression.decompress_argv(), tail_argv],
                                            stdin=source)
        except CommandError as error:
            raise BackupError("%s is not an intact %s stream: %s"
                              % (os.path.basename(path), compression.name, error.msg))

    def _read_pg_archive(self, path, fmt):
        """pg_restore reads the whole custom archive or dump directory (to /dev/null, no
        server): an archive cut short fails with 'end of file' even where its table of
        contents is whole; a dump directory without its toc.dat or a data file, or with a
        data file cut short, fails too.

        The data entries are split over ``_HASH_WORKERS`` pg_restore processes
        (``--use-list``; each also reads every other entry): decompressing the data is the
        check's whole cost and one pg_restore uses one core. A custom archive that pg_dump
        wrote to a file has the data offsets for that; one cut short before they were written
        is read front to back by each process, and still fails where it ends."""
        pg_restore = find_tool(["pg_restore"], "pg_restore (postgresql-client) checks "
                               "PostgreSQL archives")
        base = [pg_restore, "--format=%s" % fmt, "--file=" + os.devnull]
        try:
            groups = self._data_entry_groups(pg_restore, path, fmt)
            if not groups:
                with open(os.devnull, "wb") as devnull:
                    self.runner.pipeline([base + [path]], stdout=devnull)
                return
            with tempfile.TemporaryDirectory(prefix="dbsafe-toc-") as lists:  # 0700
                readers = []
                for index, entries in enumerate(groups):
                    list_file = os.path.join(lists, "%d.list" % index)
                    with open(list_file, "wb") as handle:
                        handle.write(b"\n".join(entries) + b"\n")
                    readers.append(Background(self._read_to_devnull,
                                              base + ["--use-list=" + list_file, path]))
                for reader in readers:
                    reader.join()
                for reader in readers:
                    if reader.error is not None:
                        raise reader.error
        except CommandError as error:
            raise BackupError("%s is not a complete PostgreSQL %s archive: %s"
                              % (os.path.basename(path), fmt, error.msg))

    def _data_entry_groups(self, pg_restore, path, fmt="directory"):
        """The dump's table of contents (``pg_restore --list``, which reads all of toc.dat)
        as ``_HASH_WORKERS`` lists that share the entries without data and split the data
        entries round-robin; None when there is nothing to split."""
        listing = self.runner.pipeline([[pg_restore, "--format=%s" % fmt, "--list", path]])
        entries = [line for line in listing.splitlines() if line and not line.startswith(b";")]
        data = [line for line in entries if _DATA_ENTRY.search(line)]
        if len(data) < 2:
            return None
        shared = [line for line in entries if not _DATA_ENTRY.search(line)]
        return [shared + data[index::_HASH_WORKERS] for index in range(_HASH_WORKERS)]

    def _read_to_devnull(self, argv, read_fd=None):
        """``argv`` [< the pipe ``read_fd``] > /dev/null (a check that only needs its status)."""
        self._compress(argv, read_fd, os.open(os.devnull, os.O_WRONLY))

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
        test = restore_jobs is None or not _sha256_suffices(manifest, engine, restore_jobs)
        if is_directory_backup(manifest):
            self._verify_directory(manifest, test)
        else:
            self._verify_file(manifest, test)
        self._verify_media(manifest)
        return manifest

    def _verify_file(self, manifest, test=True):
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
            sha256, test_error = self._hash_and_test(
                data, Compression(manifest.get("compression", "none")), manifest.get("format"))
        else:
            sha256, test_error = _sha256_file(data), None
        if sha256 != manifest.get("sha256"):
            raise BackupError(
                "backup %s is damaged: its sha256 does not match the manifest"
                % manifest["file"], file=manifest["file"])
        if test_error is not None:
            raise test_error

    def _verify_directory(self, manifest, test=True):
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
        if manifest.get("format") not in DIRECTORY_FORMATS:
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
        files, test_error = self._hash_and_test_directory(data, manifest["format"], test=test)
        actual = dict((entry["name"], entry["sha256"]) for entry in files)
        for entry in sorted(listed, key=lambda entry: entry["name"]):
            if actual.get(entry["name"]) != entry["sha256"]:
                refuse("is damaged: the sha256 of its file %s does not match the manifest",
                       entry["name"])
        if test_error is not None:
            raise test_error

    def _verify_media(self, manifest):
        media = manifest.get("media")
        if media:
            media_path = os.path.join(os.path.dirname(manifest["path"]), media["file"])
            if not os.path.isfile(media_path):
                raise BackupError("the media archive %s of backup %s is missing"
                                  % (media["file"], manifest["file"]), file=manifest["file"])
            if (os.path.getsize(media_path) != media.get("size")
                    or _sha256_file(media_path) != media.get("sha256")):
                raise BackupError("the media archive %s of backup %s is damaged"
                                  % (media["file"], manifest["file"]), file=manifest["file"])

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
                    with self._decompressed(data, compression) as stream:
                        _safe_extract(stream, staging)
                else:
                    with open(data, "rb") as handle:
                        _safe_extract(handle, staging)
                yield os.path.join(staging, "dump")
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return
        if not compression.enabled:
            with open(data, "rb") as handle:
                yield handle
            return
        with self._decompressed(data, compression) as stream:
            yield stream

    @contextlib.contextmanager
    def _decompressed(self, path, compression):
        read_fd, write_fd = os.pipe()
        decompressor = Background(self._compress, compression.decompress_argv(),
                                  os.open(path, os.O_RDONLY), write_fd)
        stream = os.fdopen(read_fd, "rb")
        try:
            yield stream
            # Read to the end so the decompressor finishes (and its exit status means
            # something) even when the consumer stopped early.
            while stream.read(CHUNK):
                pass
        finally:
            stream.close()
            decompressor.join()
        if decompressor.error is not None:
            raise BackupError("decompressing %s failed: %s"
                              % (os.path.basename(path), _reason(decompressor.error)))

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
                file=manifest["file"], **_details(error))
        return manifest

    # -- listing and retention ------------------------------------------------------------

    def list(self, label=None, engine=None):
        """Complete backups (data file and manifest), newest first."""
        found = []
        for name in os.listdir(self.directory):
            if not name.endswith(MANIFEST_SUFFIX) or name.startswith("."):
                continue
            try:
                manifest = self.read_manifest(os.path.join(self.directory, name))
            except BackupError:
                continue
            if not _backup_exists(manifest):
                continue
            if label is not None and manifest.get("label") != label:
                continue
            if engine is not None and manifest.get("engine") != getattr(engine, "name", engine):
                continue
            found.append(manifest)
        found.sort(key=lambda item: (item.get("created_at") or "", item["file"]), reverse=True)
        return found

    def newest(self, label=None, engine=None):
        backups = self.list(label, engine)
        return backups[0] if backups else None

    def prune(self, keep, protect=None, label=None, engine=None, dry_run=False):
        """Keep the ``keep`` newest backups per label and engine; returns the removed names
        (with ``dry_run``, the names that would be removed; nothing is touched).

        Backups named in ``protect`` (names or paths; e.g. the one just taken) are never
        removed and count towards ``keep``.
        """
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise BackupError("keep must be a whole number of at least 1 (got %r): pruning "
                              "every backup is never what you want" % (keep,))
        protected = set(os.path.basename(str(name)) for name in (protect or []))
        groups = {}
        for manifest in self.list(label, engine):
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
        _remove(manifest["path"] + MANIFEST_SUFFIX)
        _remove_any(manifest["path"])
        if manifest.get("media"):
            _remove(os.path.join(self.directory, manifest["media"]["file"]))
        _fsync_directory(self.directory)

    # -- media ----------------------------------------------------------------------------

    def archive_media(self, media_root, name):
        """Archive ``media_root`` into ``<name>.media.tar.gz``; returns {file, sha256, size,
        files} for the manifest."""
        media_root = os.path.abspath(str(media_root))
        if not os.path.isdir(media_root):
            raise BackupError("the media directory %s does not exist" % media_root)
        file_name = os.path.basename(name) + MEDIA_SUFFIX
        final = self.path(file_name)
        partial = final + PARTIAL_SUFFIX
        counter = {"files": 0}

        def write(out):
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                tar.add(media_root, arcname=".", recursive=False)
                for root, dirs, files in os.walk(media_root):
                    dirs.sort()
                    for entry in sorted(dirs) + sorted(files):
                        full = os.path.join(root, entry)
                        tar.add(full, arcname=os.path.relpath(full, media_root),
                                recursive=False)
                        if entry in files and os.path.isfile(full) \
                                and not os.path.islink(full):
                            counter["files"] += 1

        gzip = Compression("gzip")
        try:
            size = self._stream_to_file(partial, write, gzip)
            sha256 = self._check_written(partial, size, gzip, None)
            os.rename(partial, final)
            _fsync_directory(self.directory)
        except BaseException as error:
            _remove(partial)
            if isinstance(error, (DbsafeError, OSError)):
                raise BackupError("archiving the media in %s failed: %s"
                                  % (media_root, _reason(error)), **_details(error))
            raise
        return {"file": file_name, "sha256": sha256, "size": size, "files": counter["files"]}

    def restore_media(self, archive, media_root, sha256=None):
        """Replace ``media_root`` with the contents of ``archive``.

        The archive is unpacked next to it first; only a complete, safe extraction is swapped
        in (old -> ``<media_root>.dbsafe-old-*``, new -> media_root, old removed). A failure
        leaves the current media untouched.
        """
        archive = str(archive) if os.sep in str(archive) else self.path(archive)
        media_root = os.path.abspath(str(media_root)).rstrip(os.sep)
        if not os.path.isfile(archive):
            raise BackupError("media archive %s does not exist" % archive)
        if sha256 and _sha256_file(archive) != sha256:
            raise BackupError("media archive %s is damaged (sha256 differs from the manifest); "
                              "the media in %s were not changed" % (archive, media_root))
        parent, base = os.path.split(media_root)
        incoming = tempfile.mkdtemp(prefix=base + ".dbsafe-new-", dir=parent)
        try:
            with self._decompressed(archive, Compression("gzip")) as stream:
                _safe_extract(stream, incoming)
        except BaseException as error:
            shutil.rmtree(incoming, ignore_errors=True)
            if isinstance(error, (DbsafeError, OSError, tarfile.TarError)):
                raise BackupError("cannot unpack media archive %s: %s. The media in %s were "
                                  "not changed." % (os.path.basename(archive), _reason(error),
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


# -- helpers ----------------------------------------------------------------------------------

def _sha256_suffices(manifest, engine, jobs):
    """Before a restore: the stream was tested when written, and the engine's restore of this
    file itself reads all of it before any change shows (``restore_is_all_or_nothing``)."""
    return (manifest.get("stream_checked") is True
            and manifest.get("compression", "none") == "none"
            and not is_directory_backup(manifest)
            and hasattr(engine, "restore_is_all_or_nothing")
            and engine.restore_is_all_or_nothing(manifest.get("format"), jobs))


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


def _backup_exists(manifest):
    path = manifest["path"]
    if os.path.islink(path):
        return False
    return os.path.isdir(path) if is_directory_backup(manifest) else os.path.isfile(path)


def _hash_member(path, sync):
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


def _safe_extract(fileobj, target):
    """Unpack a tar stream into ``target``, refusing anything that could land outside it."""
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for member in tar:
            _check_member(member)
            if hasattr(tarfile, "tar_filter"):
                # 'tar' keeps owners (media must stay the web server's) but drops setuid bits.
                tar.extract(member, target, filter="tar")
            else:
                tar.extract(member, target)


def _check_member(member):
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
            record = "f:%s:%s" % (relative, _sha256_file(full))
        digest.update(record.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def _sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_synced(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_directory(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _remove_any(path):
    """A file, or a directory backup (its partial) with everything in it."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        _remove(path)


def _reason(error):
    if isinstance(error, DbsafeError):
        return error.msg
    if isinstance(error, OSError):
        if error.errno == errno.ENOSPC:
            return "no space left on the device (%s)" % (error.filename or "disk full")
        if error.errno == errno.EPIPE:
            return "the stream was cut off (broken pipe)"
        return error.strerror or str(error)
    return str(error)


def _details(error):
    details = dict(getattr(error, "details", {}) or {})
    details.pop("file", None)
    return details
