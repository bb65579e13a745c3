# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The MySQL / MariaDB sessions that hold up a restore: their SQL, and what their answers mean.

A session holds the metadata locks of every table its open transaction touched (a plain
SELECT too) until it ends, and the restore's RENAME TABLE (or DROP TABLE) waits for them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

# ER_LOCK_WAIT_TIMEOUT: also what a metadata lock wait (lock_wait_timeout) ends with.
_LOCK_WAIT_TIMEOUT = re.compile(r"\b1205\b|Lock wait timeout exceeded", re.IGNORECASE)
# ER_KILL_DENIED_ERROR ("You are not owner of thread N") and a refused privilege.
_KILL_DENIED = re.compile(r"\b(1095|1227)\b|not owner of thread|access denied", re.IGNORECASE)
# ER_NO_SUCH_THREAD: the session ended by itself meanwhile.
_NO_SUCH_THREAD = re.compile(r"\b1094\b|Unknown thread id", re.IGNORECASE)
# The information_schema.INNODB_* tables need the PROCESS privilege.
_PROCESS_REFUSED = re.compile(r"\b1227\b|PROCESS privilege", re.IGNORECASE)

_QUERY = "LEFT(SUBSTRING_INDEX(%s, CHAR(10), 1), 120)"
_SINCE = "DATE_FORMAT(UTC_TIMESTAMP() - INTERVAL %s SECOND, '%%Y-%%m-%%dT%%H:%%i:%%sZ')"


def _not_ours(own):
    """The condition that leaves out this session and ``own`` (the run lock's session)."""
    ids = [int(connection) for connection in own or ()]
    condition = "p.ID <> CONNECTION_ID()"
    if ids:
        condition += " AND p.ID NOT IN (%s)" % ", ".join(str(connection) for connection in sorted(ids))
    return condition


def transactions_sql(own=()):
    """Every other session of the server with an open InnoDB transaction (it may hold table
    metadata locks): one JSON object a line. Needs the PROCESS privilege."""
    return (
        "SELECT JSON_OBJECT('connection', p.ID, 'user', p.USER, 'client', p.HOST, 'database', p.DB, "
        "'state', 'transaction', 'query_start', " + _SINCE % "TIMESTAMPDIFF(SECOND, t.trx_started, NOW())"
        + ", 'query', " + _QUERY % "COALESCE(t.trx_query, p.INFO, '')" + ") "
        "FROM information_schema.INNODB_TRX t "
        "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
        "WHERE " + _not_ours(own) + " ORDER BY p.ID;\n")


def connected_sql(own=()):
    """Without the PROCESS privilege: the other sessions (of this user: the only ones it sees)
    connected to this database, whether or not they are in a transaction."""
    return (
        "SELECT JSON_OBJECT('connection', p.ID, 'user', p.USER, 'client', p.HOST, 'database', p.DB, "
        "'state', CONCAT('connected, ', LOWER(p.COMMAND)), 'query_start', " + _SINCE % "p.TIME"
        + ", 'query', " + _QUERY % "COALESCE(p.INFO, '')" + ") "
        "FROM information_schema.PROCESSLIST p "
        "WHERE p.DB = DATABASE() AND p.COMMAND NOT IN ('Daemon', 'Binlog Dump') AND "
        + _not_ours(own) + " ORDER BY p.ID;\n")


def sessions_from_output(out):
    """The JSON objects of the client's output, one a line."""
    return [json.loads(line) for line in (out or "").splitlines() if line.strip()]


def describe_seen(described, count, own_only):
    """The blockers' description, saying when other users' sessions could not be seen."""
    if not own_only:
        return described
    note = ("only the user's own sessions are visible: seeing other users' open transactions "
            "needs the PROCESS privilege")
    if not count:
        return "no other session of the user is connected to the database (%s)" % note
    return "%s (%s)" % (described, note)


def kill_sql(connection):
    return "KILL CONNECTION %d;\n" % int(connection)


def lock_wait_timed_out(text):
    return bool(_LOCK_WAIT_TIMEOUT.search(text or ""))


def kill_refused(text):
    return bool(_KILL_DENIED.search(text or ""))


def already_gone(text):
    return bool(_NO_SUCH_THREAD.search(text or ""))


def process_privilege_missing(text):
    return bool(_PROCESS_REFUSED.search(text or ""))


def kill_refused_message(database, user, refused):
    """``refused``: the descriptions of the sessions the server would not let ``user`` end."""
    return ("could not end the sessions that would block the restore of %s: %s. The user %r may "
            "end only its own sessions; ending another user's needs the CONNECTION ADMIN (MariaDB "
            "10.5+) or SUPER privilege. Stop the application (or grant the privilege) and run again; "
            "nothing was restored yet, the database was not changed by the restore"
            % (database, refused, user))
