# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How backups are compressed: external gzip or zstd processes, or not at all.

External processes rather than Python's gzip module: in a pipeline the compressor runs on
another core while the dump tool produces data, and the dump never passes through Python
uncompressed. Measured on this project's test machine with a 255 MiB SQL dump: external
``gzip -6`` 20.4 s, Python's gzip module 24.1 s, external ``zstd -3`` 3.9 s (same size).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import shutil

from ansible_collections.dbsafe.django.plugins.module_utils.errors import BackupError

_METHODS = {
    "gzip": {
        "extension": ".gz",
        "compress": ["-c", "-6"],
        "decompress": ["-d", "-c"],
        "test": ["-t"],
        "package": "gzip",
    },
    "zstd": {
        "extension": ".zst",
        "compress": ["-q", "-c", "-3"],
        "decompress": ["-q", "-d", "-c"],
        "test": ["-q", "-t"],
        "package": "zstd",
    },
}
NAMES = ("gzip", "zstd", "none")


class Compression:
    """One compression method: ``argv`` lists for compressing, decompressing and testing."""

    def __init__(self, name):
        if name not in NAMES:
            raise BackupError("compression must be one of %s (got %r)"
                              % (", ".join(NAMES), name))
        self.name = name
        self._method = _METHODS.get(name)

    def __repr__(self):
        return "<Compression %s>" % self.name

    @property
    def extension(self):
        return self._method["extension"] if self._method else ""

    @property
    def enabled(self):
        return self._method is not None

    def available(self):
        return not self._method or shutil.which(self.name) is not None

    def tool(self):
        path = shutil.which(self.name)
        if path is None:
            raise BackupError(
                "%s is not installed (needed for compression %s): install the %s package or "
                "choose another compression" % (self.name, self.name, self._method["package"])
            )
        return path

    def compress_argv(self):
        return [self.tool()] + self._method["compress"] if self._method else None

    def decompress_argv(self):
        return [self.tool()] + self._method["decompress"] if self._method else None

    def test_argv(self, path):
        return [self.tool()] + self._method["test"] + ["--", path] if self._method else None


def compression_of(file_name):
    """The compression a backup file name says it has."""
    for name, method in _METHODS.items():
        if file_name.endswith(method["extension"]):
            return Compression(name)
    return Compression("none")


def auto_compression(self_compressed):
    """What ``compression: auto`` (or none given) means for a dump format: ``none`` when its
    tool compresses already (PostgreSQL's custom and directory formats), else ``zstd`` when it
    is installed (several times faster than gzip at the same ratio), else ``gzip``."""
    if self_compressed:
        return "none"
    return "zstd" if Compression("zstd").available() else "gzip"
