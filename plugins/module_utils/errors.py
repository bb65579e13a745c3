# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The domain errors every module maps to ``fail_json``.

Each carries what a person needs: what failed, the state the database is in now and what to do
next (``details`` go into the task result next to ``msg``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno


class DbsafeError(Exception):
    """Base class: ``msg`` for people, ``details`` (a dict) for the task result."""

    def __init__(self, msg, **details):
        super(DbsafeError, self).__init__(msg)
        self.msg = msg
        self.details = details


class CommandError(DbsafeError):
    """An external command (a dump tool, the project's interpreter) could not run or failed."""


class ProjectError(DbsafeError):
    """The Django project cannot be reached or booted (manage.py, interpreter, settings, DB)."""


class PreflightRefused(DbsafeError):
    """A check before any change refused to go on; nothing was touched."""


class EngineError(DbsafeError):
    """A database engine operation (connect, dump, restore, snapshot, lock) failed."""


class LockTimeout(EngineError):
    """Another run holds the migration lock longer than ``lock_timeout``."""


class BackupError(DbsafeError):
    """A backup could not be written or does not verify; no file with a final name is left."""


class RestoreFailed(DbsafeError):
    """A restore failed; the message says what state the database is in and what to do."""


class MigrationFailed(DbsafeError):
    """``migrate`` failed (exception, non-zero exit, killed) or did not verify."""


class ServiceError(DbsafeError):
    """A stop, code or start command of the guarded migrate's service window failed."""


def reason(error):
    """What went wrong, for a message: a DbsafeError's msg, an OSError in words."""
    if isinstance(error, DbsafeError):
        return error.msg
    if isinstance(error, OSError):
        if error.errno == errno.ENOSPC:
            return "no space left on the device (%s)" % (error.filename or "disk full")
        if error.errno == errno.EPIPE:
            return "the stream was cut off (broken pipe)"
        return error.strerror or str(error)
    return str(error)


def details_of(error):
    """An error's details to carry into a new error about the same backup (without 'file')."""
    details = dict(getattr(error, "details", {}) or {})
    details.pop("file", None)
    return details
