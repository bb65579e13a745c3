# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dump streams into and out of backup files: compressed on the way in, decompressed on the
way out, through the compressor processes the Runner starts (nothing uncompressed is ever
written next to the backups)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import threading

from ansible_collections.dbsafe.django.plugins.module_utils.backup_files import CHUNK
from ansible_collections.dbsafe.django.plugins.module_utils.engines.base import find_tool
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    BackupError,
    CommandError,
    DbsafeError,
    details_of,
    reason,
)
from ansible_collections.dbsafe.django.plugins.module_utils.processes import Background


def stream_to_file(runner, partial, writer, compression, follow=None):
    """writer -> [pipe -> compressor] -> ``partial`` (0600, synced); returns its size.

    The last stage writes the file itself (pg_dump's stdout, the compressor's stdout, or
    the writer's own writes): no copy through Python, and pg_dump sees a seekable file.
    The sha256 is taken on the re-read that verifies the file anyway. Whichever side fails
    first makes the other stop: a full disk kills the compressor, the dump tool then dies of
    EPIPE.

    ``follow``: a DumpFormat that reads the file to its end while it is written (its
    ``read_while_written``); its verdict is raised after the writer's own error, if any.
    """
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    written = threading.Event()
    follower = Background(follow.read_while_written, partial, written, runner) \
        if follow is not None else None
    try:
        with os.fdopen(fd, "wb") as sink:
            if compression.enabled:
                _write_compressed(runner, sink, writer, compression)
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


def _write_compressed(runner, sink, writer, compression):
    dump_read, dump_write = os.pipe()
    compressor = Background(runner.stream, compression.compress_argv(), dump_read,
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
    # The root cause first: the compressor (it is the one that meets a full disk), then the
    # dump itself.
    for error in (compressor.error, writer_error):
        if error is not None:
            raise error


@contextlib.contextmanager
def decompressed(runner, path, compression):
    """The content of the compressed file ``path`` as a binary stream."""
    read_fd, write_fd = os.pipe()
    decompressor = Background(runner.stream, compression.decompress_argv(),
                              os.open(path, os.O_RDONLY), write_fd)
    stream = os.fdopen(read_fd, "rb")
    try:
        yield stream
        # Read to the end so the decompressor finishes (and its exit status means
        # something) even when the consumer stopped early.
        while stream.read(CHUNK):
            pass
    except DbsafeError as consumer_error:
        stream.close()
        decompressor.join()
        # The stage that died first is the cause: a killed decompressor cuts the dump short
        # and the consumer then fails on it (an "SQL syntax error"). One that only lost its
        # reader (a broken pipe) died of the consumer's failure.
        if decompressor.error is None or _lost_its_reader(decompressor.error):
            raise
        raise BackupError("decompressing %s failed: %s; the restore reading it then stopped: %s"
                          % (os.path.basename(path), reason(decompressor.error),
                             consumer_error.msg), **details_of(consumer_error))
    finally:
        stream.close()
        decompressor.join()
    if decompressor.error is not None:
        raise BackupError("decompressing %s failed: %s"
                          % (os.path.basename(path), reason(decompressor.error)))


def _lost_its_reader(error):
    """A compressor that failed because its reader went away (SIGPIPE, EPIPE)."""
    details = getattr(error, "details", None) or {}
    return details.get("rc") == -13 or "broken pipe" in (details.get("stderr") or "").lower() \
        or getattr(error, "errno", None) == 32


def decompressed_tail(runner, path, compression, tail_bytes=None):
    """Decompress ``path`` to its end (a broken or truncated stream fails); returns the last
    ``tail_bytes`` of the content (None: only tests the stream, returns b"").

    One pass either way: ``zstd -d`` / ``gzip -d`` check the frame checksum (zstd) or CRC and
    length (gzip) exactly as ``-t`` does, and every stage's exit status counts, so a separate
    ``-t`` run would read the stream a second time for nothing."""
    try:
        if not tail_bytes:
            with open(os.devnull, "wb") as devnull:
                runner.pipeline([compression.test_argv(path)], stdout=devnull)
            return b""
        tail_argv = [find_tool(["tail"], "tail (coreutils) reads the end of a dump"),
                     "-c", str(tail_bytes)]
        with open(path, "rb") as source:
            return runner.pipeline([compression.decompress_argv(), tail_argv], stdin=source)
    except CommandError as error:
        raise BackupError("%s is not an intact %s stream: %s"
                          % (os.path.basename(path), compression.name, error.msg))
