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


# Lines a tool writes that are not why it failed: PostgreSQL's notices ("NOTICE:  drop cascades
# to 2 other objects"), warnings and the detail lines that follow an error, MariaDB's warnings.
_NOT_THE_CAUSE = ("NOTICE:", "WARNING:", "DETAIL:", "HINT:", "CONTEXT:", "INFO:", "LOG:",
                  "Warning:", "Note:", "QUERY:")


def first_error_line(text, errors_only=False):
    """The first line of a tool's output that says what went wrong: one naming an error, else
    (unless ``errors_only``) the first that is not part of a notice or warning; "" when there
    is none."""
    lines = _cause_lines(text)
    for line in lines:
        if "ERROR" in line or "FATAL" in line or "error" in line:
            return line
    return "" if errors_only or not lines else lines[0]


def _cause_lines(text):
    """The lines that are not notices, warnings or their continuation lines (a NOTICE's
    DETAIL lists one dropped object a line, without a prefix)."""
    kept = []
    in_notice = False
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        # psql prefixes its messages with where they came from: "psql:<stdin>:12: NOTICE: ..."
        bare = line.split(": ", 1)[-1] if line.startswith("psql:") else line
        if bare.startswith(_NOT_THE_CAUSE):
            in_notice = True
        elif in_notice and not bare.startswith(("ERROR", "FATAL", "PANIC")):
            continue  # a continuation line of the notice
        else:
            in_notice = False
            kept.append(line)
    return kept


def killed_by_signal(error):
    """'psql was killed by signal 9 (SIGKILL)' when the failed command died of a signal (then
    that is the cause, not the last thing it printed), else None."""
    details = getattr(error, "details", None) or {}
    rc = details.get("rc")
    if isinstance(rc, int) and rc < 0:
        return details.get("status") or "it was killed by signal %d" % -rc
    return None


def details_of(error):
    """An error's details to carry into a new error about the same backup (without 'file')."""
    details = dict(getattr(error, "details", {}) or {})
    details.pop("file", None)
    return details
