# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL's dump formats as the backup store keeps them, and how each is proven complete.

- ``custom`` (``.pgdump``): pg_dump's archive, compressed by pg_dump. ``pg_restore`` reads it
  to its end (to /dev/null, no server): an archive cut short fails with 'end of file' even
  where its table of contents is whole. The read runs while pg_dump writes the file.
- ``plain`` (``.sql``): a script; complete when it ends with pg_dump's last comment.
- ``directory`` (``.pgdir``): the directory ``pg_dump -j`` writes, read to its end like an
  archive. Earlier versions packed it into one ``.pgdir.tar``; such a file is checked as a tar.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import tarfile
import tempfile
import time

from ansible_collections.dbsafe.django.plugins.module_utils.engines.base import (
    DumpFormat,
    find_tool,
)
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    BackupError,
    CommandError,
    reason,
)
from ansible_collections.dbsafe.django.plugins.module_utils.processes import Background

CHUNK = 1024 * 1024
# pg_restore processes that read one archive side by side: the machine's cores are shared with
# the hashing of the same backup (and the database server).
READERS = 2
# A TOC entry with data of its own (pg_restore --list: '<id>; <catalog> <oid> TABLE DATA
# <schema> <name> <owner>'); large objects are BLOBS (15) or LARGE OBJECTS (17).
_DATA_ENTRY = re.compile(br"^\d+; \d+ \d+ (TABLE DATA|BLOBS|LARGE OBJECTS) ")


def pg_restore():
    return find_tool(["pg_restore"], "pg_restore (postgresql-client) checks PostgreSQL archives")


def pg_restore_argv(runner, *args):
    """pg_restore with ``args``: behind the runner's db_command_prefix when it has one (the
    tools are there, maybe not on this host; the archive then reaches it on stdin)."""
    prefix = list(getattr(runner, "db_command_prefix", None) or [])
    return prefix + ["pg_restore" if prefix else pg_restore()] + list(args)


class CustomArchive(DumpFormat):
    name = "custom"
    extension = "pgdump"
    self_compressed = True
    magic = b"PGDMP"
    follows_writes = True

    def check_file(self, path, runner, read=False):
        super(CustomArchive, self).check_file(path, runner)
        if not read:
            read_archive(runner, path, self.name)

    def read_while_written(self, path, written, runner):
        read_while_written(runner, path, written)


class PlainScript(DumpFormat):
    name = "plain"
    extension = "sql"
    # pg_dump's last comment; a script without it was cut off.
    trailer = b"-- PostgreSQL database dump complete"


class DirectoryDump(DumpFormat):
    name = "directory"
    extension = "pgdir"
    directory = True
    self_compressed = True

    def check_file(self, path, runner, read=False):
        # An earlier version's .pgdir.tar: one tar of the dump directory.
        try:
            with tarfile.open(path, "r:") as tar:
                tar.getmembers()
        except (tarfile.TarError, OSError) as error:
            raise BackupError("%s is not an intact tar archive: %s"
                              % (os.path.basename(path), error))

    def check_directory(self, path, runner):
        read_archive(runner, path, self.name)


DUMP_FORMATS = (CustomArchive(), PlainScript(), DirectoryDump())


def read_archive(runner, path, fmt):
    """pg_restore reads the whole custom archive or dump directory (to /dev/null, no
    server): an archive cut short fails with 'end of file' even where its table of
    contents is whole; a dump directory without its toc.dat or a data file, or with a
    data file cut short, fails too.

    The data entries are split over ``READERS`` pg_restore processes (``--use-list``; each also
    reads every other entry): decompressing the data is the check's whole cost and one
    pg_restore uses one core. A custom archive that pg_dump wrote to a file has the data
    offsets for that; one cut short before they were written is read front to back by each
    process, and still fails where it ends."""
    try:
        if fmt == "custom" and getattr(runner, "db_command_prefix", None):
            # Behind a prefix this host's path need not exist: one reader, fed on stdin.
            runner.read_through(pg_restore_argv(runner, "--format=custom", "--file=" + os.devnull),
                                os.open(path, os.O_RDONLY))
            return
        tool = pg_restore()
        base = [tool, "--format=%s" % fmt, "--file=" + os.devnull]
        groups = data_entry_groups(runner, tool, path, fmt)
        if not groups:
            runner.read_through(base + [path])
            return
        with tempfile.TemporaryDirectory(prefix="dbsafe-toc-") as lists:  # 0700
            readers = []
            for index, entries in enumerate(groups):
                list_file = os.path.join(lists, "%d.list" % index)
                with open(list_file, "wb") as handle:
                    handle.write(b"\n".join(entries) + b"\n")
                readers.append(Background(runner.read_through,
                                          base + ["--use-list=" + list_file, path]))
            for reader in readers:
                reader.join()
            for reader in readers:
                if reader.error is not None:
                    raise reader.error
    except CommandError as error:
        raise BackupError("%s is not a complete PostgreSQL %s archive: %s"
                          % (os.path.basename(path), fmt, error.msg))


def data_entry_groups(runner, tool, path, fmt="directory"):
    """The dump's table of contents (``pg_restore --list``, which reads all of toc.dat) as
    ``READERS`` lists that share the entries without data and split the data entries
    round-robin; None when there is nothing to split."""
    listing = runner.pipeline([[tool, "--format=%s" % fmt, "--list", path]])
    entries = [line for line in listing.splitlines() if line and not line.startswith(b";")]
    data = [line for line in entries if _DATA_ENTRY.search(line)]
    if len(data) < 2:
        return None
    shared = [line for line in entries if not _DATA_ENTRY.search(line)]
    return [shared + data[index::READERS] for index in range(READERS)]


def read_while_written(runner, path, written):
    """Feed ``path`` to ``pg_restore --file=/dev/null`` as pg_dump appends to it, to the end
    once ``written`` is set: the completeness read of a custom archive (see ``read_archive``)
    overlaps the dump instead of following it. pg_dump only appends, except for rewriting its
    table of contents in place at the end (same length; only the data offsets change, which a
    reader of a stream does not use)."""
    argv = pg_restore_argv(runner, "--format=custom", "--file=" + os.devnull)
    read_fd, write_fd = os.pipe()
    reader = Background(runner.read_through, argv, read_fd)
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
                          % (os.path.basename(path), reason(reader.error)))
