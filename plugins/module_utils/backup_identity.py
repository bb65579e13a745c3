# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which database a backup belongs to, and which of a database's backups is the newest. Pure.

A manifest's ``instance`` is the database it was taken from (``Engine.instance_identity``):
engine, host, port, name and ``server``, the server's own identity (PostgreSQL's system
identifier, MySQL's server_uuid, MariaDB's server_uid, for SQLite the machine). Two databases
are the same when engine, name and server are equal; host and port only decide when a server
identity is missing (a server that does not tell, or a manifest of an earlier version, which
has no ``instance`` and is matched by its engine, database, host and port).

Backups are ordered by ``sequence``, a number the store gives each backup of a database when
it completes it (one more than the highest of that database's backups in the directory), so
the writer's clock plays no part. Manifests of earlier versions have none: they sort below
every numbered backup (they were written before the upgrade), among themselves by their
``created_at``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os


def manifest_identity(manifest):
    """The identity of the database ``manifest``'s backup was taken from; an earlier version's
    manifest gives its engine, database, host and port with ``server`` None."""
    instance = manifest.get("instance")
    if isinstance(instance, dict):
        return instance
    name = manifest.get("database")
    if manifest.get("engine") == "sqlite" and name:
        name = os.path.normpath(name)
    return {"engine": manifest.get("engine"), "host": manifest.get("host"),
            "port": manifest.get("port"), "name": name, "server": None}


def same_database(one, other):
    """Whether two identities name the same database."""
    if one.get("engine") != other.get("engine") or one.get("name") != other.get("name"):
        return False
    if one.get("server") and other.get("server"):
        return one["server"] == other["server"]
    # Without a server identity the address decides ("localhost" on two machines is not told
    # apart: manifests of earlier versions only).
    return (one.get("host") or "") == (other.get("host") or "") and \
        (one.get("port") or None) == (other.get("port") or None)


def belongs_to(manifest, identity):
    """Whether ``manifest``'s backup was taken from the database ``identity``."""
    return same_database(manifest_identity(manifest), identity)


def is_legacy(manifest):
    """A manifest of an earlier version: no sequence (ordered by its clock) or no instance."""
    return not isinstance(manifest.get("sequence"), int) or not isinstance(
        manifest.get("instance"), dict)


def order_key(manifest):
    """Sort key, newest last: numbered backups by sequence above every unnumbered one; those
    by created_at, then by name."""
    sequence = manifest.get("sequence")
    if isinstance(sequence, int) and not isinstance(sequence, bool):
        return (1, sequence, "", manifest.get("file") or "")
    return (0, 0, manifest.get("created_at") or "", manifest.get("file") or "")


def newest_first(manifests):
    return sorted(manifests, key=order_key, reverse=True)


def next_sequence(manifests, identity):
    """The sequence number of the next backup of ``identity`` among ``manifests``."""
    numbers = [m["sequence"] for m in manifests
               if isinstance(m.get("sequence"), int) and belongs_to(m, identity)]
    return max(numbers) + 1 if numbers else 1


def database_key(identity):
    """A short stable name for ``identity`` (the run marker's file name)."""
    if identity.get("server"):
        parts = [identity.get("engine"), identity["server"], identity.get("name")]
    else:
        parts = [identity.get("engine"), identity.get("host") or "", identity.get("port"),
                 identity.get("name")]
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()[:12]


def describe_identity(identity):
    """'postgresql database "shop" at db1:5432 (server postgresql:7716...)' for messages."""
    if identity.get("engine") == "sqlite":
        where = "sqlite database %s" % identity.get("name")
    else:
        where = "%s database %r at %s:%s" % (identity.get("engine"), identity.get("name"),
                                             identity.get("host") or "localhost",
                                             identity.get("port") or "default port")
    server = identity.get("server")
    return "%s (%s)" % (where, "server %s" % server if server else "no server identity")


def could_belong(file_name, label, engine_name):
    """Whether a manifest named ``file_name`` (that cannot be read) may be one of the backups
    of ``label`` and ``engine_name``: its name is all that is left to go by."""
    if label is None:
        return ("-%s-" % engine_name) in file_name if engine_name else True
    prefix = "%s-%s-" % (label, engine_name) if engine_name else "%s-" % label
    return file_name.startswith(prefix)
