# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A backup's database and media restored all or nothing: the media unpacked beside their
directory before the database is touched, the database restored (each engine's restore is
all-or-nothing on its own), then the media swapped in; a media swap that fails puts the
database back from the safety backup. Every failure says what state the database and the
media are in.

The caller holds the run lock of the database and has taken the safety backup.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbsafe.django.plugins.module_utils import backup_media
from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    BackupError,
    DbsafeError,
    RestoreFailed,
    details_of,
)


def restore_backup(store, manifest, engine, jobs=1, media_root=None, safety=None):
    """Restore the verified backup ``manifest`` into ``engine``'s database and, with
    ``media_root``, its media archive into that directory. ``safety``: the manifest of the
    safety backup of what this replaces (or None). Returns nothing; a failure raises a
    DbsafeError whose message ends with the state of both."""
    staged = None
    if media_root:
        try:
            staged = backup_media.stage_media(store, manifest["media"]["file"], media_root,
                                              sha256=manifest["media"].get("sha256"))
        except DbsafeError as error:
            raise _with_state(error, "Nothing was restored: %s was not changed either.%s"
                              % (engine.describe(), _safety_note(safety, media_root)))
    try:
        store.restore(manifest["path"], engine, jobs=jobs, manifest=manifest)
    except DbsafeError as error:
        backup_media.discard(staged)
        raise _with_state(error, "%s%s" % (
            "The media in %s were not changed." % media_root if media_root else "",
            _safety_note(safety, media_root)))
    if staged is None:
        return
    try:
        previous = backup_media.swap_in_media(staged, media_root)
    except DbsafeError as error:
        raise _media_swap_failed(store, manifest, engine, media_root, safety, error)
    backup_media.discard(previous)


def media_swap_failure_message(what, database, media_root, safety, put_back_error=None):
    """The message when the database was restored but the media could not be swapped in
    (``what``: the swap's error): the database put back from ``safety`` (a manifest or None),
    or why it could not be."""
    if safety is None:
        return ("%s The database %s WAS restored from the backup, but the media were not: the "
                "media in %s are the previous ones, so database and media do not match. No "
                "safety backup was taken (safety_backup: false) to put the database back: fix "
                "the cause and restore again." % (what, database, media_root))
    if put_back_error is not None:
        return ("%s The database %s was restored, then putting it back from the safety backup "
                "%s ALSO FAILED: %s. The media in %s are the previous ones; the database is "
                "in an unknown state: restore the safety backup %s with dbsafe.django.db_backup "
                "state=restore src=%s include_media=true." % (
                    what, database, safety["path"], put_back_error, media_root, safety["path"],
                    safety["path"]))
    return ("%s The database %s had been restored and was put back from the safety backup %s: "
            "the database and the media in %s are both as they were before the restore. Fix "
            "the cause and restore again." % (what, database, safety["path"], media_root))


def _media_swap_failed(store, manifest, engine, media_root, safety, error):
    what = error.msg.rstrip(".") + "."
    if safety is None:
        return RestoreFailed(media_swap_failure_message(what, engine.describe(), media_root,
                                                        None),
                             restored=True, media_restored=False, **details_of(error))
    try:
        store.restore(safety["path"], engine)
    except DbsafeError as put_back_error:
        return RestoreFailed(
            media_swap_failure_message(what, engine.describe(), media_root, safety,
                                       put_back_error.msg.rstrip(".")),
            restored=False, media_restored=False, database_state="unknown",
            safety_backup=safety["path"])
    return RestoreFailed(media_swap_failure_message(what, engine.describe(), media_root, safety),
                         restored=False, media_restored=False, database_changed=False,
                         safety_backup=safety["path"])


def _safety_note(safety, media_root):
    if safety is None:
        return ""
    return " The safety backup %s holds the database%s as it was before this restore." % (
        safety["path"], " and the media" if media_root else "")


def _with_state(error, state):
    """The same kind of error with the state of the database and the media appended."""
    kind = type(error) if isinstance(error, (BackupError, RestoreFailed)) else RestoreFailed
    return kind(("%s. %s" % (error.msg.rstrip("."), state.strip())).strip(), **details_of(error))
