# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What ``db_backup`` does for each ``state``, over the engine layer and the backup store."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import time

from ansible_collections.dbsafe.django.plugins.module_utils.access_check import refuse_inaccessible, restorer_for
from ansible_collections.dbsafe.django.plugins.module_utils import backup_identity
from ansible_collections.dbsafe.django.plugins.module_utils.backup_restore import restore_backup
from ansible_collections.dbsafe.django.plugins.module_utils.processes import interruptions
from ansible_collections.dbsafe.django.plugins.module_utils.backups import BackupStore
from ansible_collections.dbsafe.django.plugins.module_utils.connection import Connection
from ansible_collections.dbsafe.django.plugins.module_utils.engines.registry import engine_for
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    BackupError,
    DbsafeError,
    ProjectError,
    details_of,
)

CONNECTION_OPTIONS = ("engine", "host", "port", "name", "user", "password")


def backup_label(connection):
    """'<alias>-<database>' with only the characters a backup name may hold."""
    name = os.path.basename(connection.name) if connection.engine == "sqlite" else connection.name
    label = "%s-%s" % (connection.alias or "db", name)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label)[:64]


def public_manifest(manifest):
    keep = ("path", "file", "label", "engine", "database", "host", "port", "created_at", "size",
            "sha256", "compression", "format", "tool_versions", "media", "sequence", "instance")
    return dict((key, manifest.get(key)) for key in keep)


class BackupJob:
    """One db_backup call. ``project`` is a DjangoProject or None (explicit connection)."""

    def __init__(self, params, runner, project=None, check_mode=False):
        self.params = params
        self.runner = runner
        self.project = project
        self.check_mode = check_mode
        self.introspection = None

    # -- where -------------------------------------------------------------------------

    def connection(self):
        if self.project is not None:
            self.introspection = self.project.facts(
                database=self.params["database"], pending=False)
            return self.project.connection(self.introspection)
        given = [name for name in CONNECTION_OPTIONS if self.params.get(name)]
        if not given:
            raise ProjectError("give project_path (to read the connection from the Django "
                               "settings) or engine and name (an explicit connection)")
        return Connection.from_params(self.params)

    def media_root(self):
        if self.params.get("media_root"):
            return self.params["media_root"]
        if self.introspection and self.introspection.get("media_root"):
            return self.introspection["media_root"]
        raise BackupError("include_media needs media_root (or a project whose settings set "
                          "MEDIA_ROOT)")

    def applied(self):
        if not self.introspection:
            return None
        return [row.split(".", 1) for row in self.introspection["facts"]["applied_rows"]]

    # -- states ------------------------------------------------------------------------

    def run(self):
        connection = self.connection()
        # The configured database: its backups are the ones "newest" looks at, also when
        # restore_into names another database to restore into.
        self.source_engine = engine_for(connection, self.runner)
        engine = self.source_engine
        if self.params.get("restore_into"):
            connection = connection.with_name(self.params["restore_into"])
            engine = engine_for(connection, self.runner)
        label = self.params.get("label") or backup_label(connection)
        state = self.params["state"]
        if state == "verify":
            return self.verify(engine)
        if self.check_mode and state == "dump" and not os.path.isdir(self.params["backup_dir"]):
            engine.ping()
            return {"changed": True, "database": connection.public(),
                    "msg": "would create %s and back up %s into it"
                    % (self.params["backup_dir"], engine.describe()),
                    "diff": {"before": {"backups": []}, "after": {"backups": ["(new backup)"]}}}
        store = self._store()
        before = self._names(store, label, engine)
        result = getattr(self, state)(store, engine, label)
        after = before if self.check_mode else self._names(store, label, engine)
        result.setdefault("diff", {"before": {"backups": before},
                                   "after": {"backups": result.pop("_after", after)}})
        result["database"] = connection.public()
        return result

    def dump(self, store, engine, label):
        fmt = engine.check_format(self.params.get("format"))
        media = self.media_root() if self.params["include_media"] else None
        if self.check_mode:
            engine.ping()
            return {"changed": True, "msg": "would back up %s into %s"
                    % (engine.describe(), store.directory)}
        manifest = store.write(
            label, engine, fmt=fmt, jobs=self.params["jobs"],
            compression=self.params["compression"],
            migrations=self.applied(), media_root=media,
        )
        pruned = []
        if self.params.get("keep"):
            try:
                pruned = store.prune(self.params["keep"], protect=[manifest["path"]],
                                     label=label, engine=engine.name,
                                     database=self.database_of(engine))
            except BackupError as error:
                raise BackupError("backed up %s to %s, but keep removed nothing: %s"
                                  % (engine.describe(), manifest["path"], error.msg),
                                  backup=public_manifest(manifest), **details_of(error))
        return {"changed": True, "backup": public_manifest(manifest), "pruned": pruned,
                "msg": "backed up %s to %s" % (engine.describe(), manifest["path"])}

    def restore(self, store, engine, label):
        source_label = self.params.get("label") or backup_label(self.source_engine.connection)
        source = self._source(store, source_label, self.source_engine)
        store = self._store_of(source, store)
        manifest = store.verify(source, engine, restore_jobs=self.params["jobs"])
        into_other = self._check_same_database(manifest, engine)
        media = None
        if self.params["include_media"] and manifest.get("media"):
            media = self.media_root()
        elif self.params["include_media"]:
            raise BackupError("backup %s has no media archive (include_media: true)"
                              % manifest["file"])
        if self.check_mode:
            return {"changed": True, "backup": public_manifest(manifest),
                    "restored_into_other_database": into_other,
                    "msg": "would restore %s into %s%s" % (
                        manifest["file"], engine.describe(), self._notes(manifest, into_other))}
        safety = None
        created = False
        if self.params.get("restore_into") and not engine.database_exists(engine.connection.name):
            engine.create_database(engine.connection.name)
            created = True
        # Only the restore itself runs as a privileged restore login; the safety backup and
        # the lock keep the connection's own user.
        restorer = self.restorer(engine)
        for restoring in (engine, restorer):
            if hasattr(restoring, "restore_method"):
                restoring.restore_method = self.params.get("restore_method") or "swap"
        lock_started = time.time()
        # The guard's lock (same name): a restore never interleaves with a migrate, a reset
        # or another restore of this database.
        with engine.lock(timeout=self.params.get("lock_timeout", 300)) as holder:
            lock = {"holder": holder, "waited": round(time.time() - lock_started, 3)}
            if not created and self.params.get("safety_backup", True):
                safety = self._safety_backup_or_refuse(engine, label, media)
            # Once the restore runs it goes to its end: a signal then is noted, not obeyed
            # (each engine's restore is all-or-nothing; stopping half-way gains nothing).
            with interruptions.in_mode("finish"):
                restore_backup(store, manifest, restorer, jobs=self.params["jobs"], media_root=media,
                               safety=safety)
        return {"changed": True, "restored": True, "backup": public_manifest(manifest),
                "interrupted": list(interruptions.during_finish),
                "lock": lock,
                "media_restored": media is not None,
                "restored_into_other_database": into_other,
                "safety_backup": public_manifest(safety) if safety else None,
                "msg": "restored %s into %s%s%s%s" % (
                    manifest["file"], engine.describe(), self._notes(manifest, into_other),
                    "; what it overwrote is in the safety backup %s" % safety["path"]
                    if safety else "", interruptions.restore_note())}

    def verify(self, engine):
        store = self._store(create=False)
        source = self._source(store, self.params.get("label") or backup_label(engine.connection),
                              engine)
        manifest = self._store_of(source, store).verify(source, engine)
        # Intact is not enough: a restore as this connection's user (or the restore login)
        # must be able to run.
        refuse_inaccessible(engine, doing="vouch for a restore of %s" % manifest["file"],
                            restore_engine=self.restorer(engine))
        return {"changed": False, "backup": public_manifest(manifest), "verified": True,
                "msg": "backup %s is complete and intact" % manifest["file"]}

    def restorer(self, engine):
        return restorer_for(engine, self.params.get("restore_login_user"),
                            self.params.get("restore_login_password"))

    def pruned(self, store, engine, label):
        keep = self.params.get("keep")
        if not keep:
            raise BackupError("state: pruned needs keep (how many backups to keep)")
        removed = store.prune(keep, label=label, engine=engine.name, dry_run=self.check_mode,
                              database=self.database_of(engine))
        return {"changed": bool(removed), "pruned": removed,
                "_after": [n for n in self._names(store, label, engine) if n not in removed],
                "msg": "removed %d backup(s), kept the %d newest" % (len(removed), keep)}

    # -- which database ----------------------------------------------------------------

    def database_of(self, engine):
        """``engine``'s database identity; a restore_into database (maybe not created yet) is
        on the configured database's server."""
        if engine is self.source_engine:
            return engine.instance_identity()
        return engine.instance_identity(server=self.source_engine.instance_identity()["server"])

    def _check_same_database(self, manifest, engine):
        """Whether the backup of ``manifest`` goes into another database than its own; without
        allow_other_database that is refused before anything is touched."""
        taken_from = backup_identity.manifest_identity(manifest)
        target = self.database_of(engine)
        if backup_identity.same_database(taken_from, target):
            return False
        if not self.params.get("allow_other_database"):
            raise BackupError(
                "refused: backup %s was taken from %s, but this restore would overwrite %s, "
                "another database. Nothing was changed. If that is what you want (e.g. "
                "production's data into a development database), set allow_other_database: "
                "true; otherwise restore a backup of this database (give src, or leave it out "
                "for the newest one of this database)"
                % (manifest["file"], backup_identity.describe_identity(taken_from),
                   backup_identity.describe_identity(target)),
                file=manifest["file"], database_changed=False)
        return True

    def _notes(self, manifest, into_other):
        notes = []
        if into_other:
            notes.append(" (a backup of %s, another database: allow_other_database)"
                         % backup_identity.describe_identity(
                             backup_identity.manifest_identity(manifest)))
        if not self.params.get("src") and backup_identity.is_legacy(manifest):
            notes.append(" (chosen as the newest by its created_at and matched by engine, "
                         "host, port and name: its manifest is from an earlier version, without "
                         "a sequence number and server identity)")
        return "".join(notes)

    # -- helpers -----------------------------------------------------------------------

    def _safety_backup_or_refuse(self, engine, label, media):
        try:
            return self._safety_backup(engine, label, media)
        except DbsafeError as error:
            raise BackupError("the safety backup of %s (what the restore would replace) failed: "
                              "%s. Nothing was restored: the database%s not changed."
                              % (engine.describe(), error.msg.rstrip("."),
                                 " and the media were" if media else " was"),
                              **details_of(error))

    def _safety_backup(self, engine, label, media):
        """A verified backup of what a restore overwrites (and of the media it replaces),
        before anything is touched."""
        # The migrations as the database has them now, under the lock: the facts read at the
        # start are stale when the restore waited for a migrate.
        migrations = engine.snapshot(content=False)["migrations"]
        return self._store().write(
            label, engine, compression=self.params["compression"],
            migrations=migrations, media_root=media)

    def _store(self, create=True):
        # A restore or verify of a given src needs no backup_dir: the src's own directory.
        directory = self.params["backup_dir"] or os.path.dirname(self.params.get("src") or "")
        if not create and not os.path.isdir(directory):
            raise BackupError("backup_dir %s does not exist" % directory)
        if self.check_mode and not os.path.isdir(directory):
            raise BackupError("backup_dir %s does not exist yet (check mode creates nothing)"
                              % directory)
        return BackupStore(directory, self.runner)

    def _store_of(self, path, store):
        """The store of the backup ``path``: its manifest and media archive lie beside it."""
        directory = os.path.dirname(os.path.abspath(path))
        if directory == os.path.abspath(store.directory):
            return store
        return BackupStore(directory, self.runner)

    def _source(self, store, label, engine):
        if self.params.get("src"):
            return self.params["src"]
        newest = store.newest(label=label, engine=engine.name, database=self.database_of(engine))
        if newest is None:
            raise BackupError("no backup of %s (label %s) in %s; give src"
                              % (engine.describe(), label, store.directory))
        return newest["path"]

    def _names(self, store, label, engine):
        # For the diff only: a damaged manifest is refused where a choice depends on it.
        return [m["file"] for m in store.list(label=label, engine=engine.name,
                                              database=self.database_of(engine), strict=False)]
