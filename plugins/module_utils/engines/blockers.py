# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The sessions that hold up a restore, in words: one sentence shape for every engine."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


def describe_blockers(blockers):
    """'pid 4242 (user app, application gunicorn, idle in transaction since
    2025-01-01T10:00:00Z: UPDATE ...)' for each session, for a message.

    Each item: ``pid`` (PostgreSQL) or ``connection`` (MySQL), ``user``, optionally
    ``application``, ``client`` and ``database``, ``state``, ``query_start`` and ``query``
    (its first line).
    """
    return "; ".join(_describe_one(item) for item in blockers) or "sessions that ended meanwhile"


def _describe_one(item):
    if "pid" in item:
        session = "pid %s" % item["pid"]
    else:
        session = "connection %s" % item.get("connection")
    about = ["user %s" % item.get("user")]
    if "application" in item:
        about.append("application %s" % (item.get("application") or "unnamed"))
    for key in ("client", "database"):
        if item.get(key):
            about.append("%s %s" % (key, item[key]))
    return "%s (%s, %s since %s: %s)" % (session, ", ".join(about), item.get("state") or "query",
                                         item.get("query_start"), item.get("query") or "")


def blocked_restore_message(database, waited, blockers):
    """The restore gave up waiting ``waited`` seconds for locks of the sessions ``blockers``
    (their description): what happened and what to do."""
    return ("the restore of %s waited %ss for table locks held by other sessions and gave up: "
            "%s. Stop the application that holds them (or set terminate_blocking_sessions: "
            "true when it is meant to be stopped) and restore again" % (database, waited, blockers))
