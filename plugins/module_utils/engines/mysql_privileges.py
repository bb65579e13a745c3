# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Can this MySQL/MariaDB connection write the database and restore it? Read before relying on it.

A restore empties the database and replays mariadb-dump's script as the connecting user: a view,
routine, trigger or event whose DEFINER is another account can only be re-created by a user
allowed to act as that account (SET USER, formerly SUPER), and each kind of object needs its
own privilege (CREATE VIEW, CREATE ROUTINE, TRIGGER, EVENT). Without them the flush drops the
object and the restore cannot bring it back. A read-only server (``@@read_only`` without the
privilege to bypass it, ``@@innodb_read_only``) or a user without write privileges cannot be
migrated at all. ``ACCESS_SQL`` reads all of it; the functions below decide. Pure but for the
query.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

# The user as information_schema writes grantees: 'name'@'host'.
_GRANTEE = ("CONCAT(\"'\", SUBSTRING_INDEX(CURRENT_USER(), '@', 1), \"'@'\", "
            "SUBSTRING_INDEX(CURRENT_USER(), '@', -1), \"'\")")
# Grants to the user itself or to a role it has enabled.
_MINE = ("(GRANTEE = %s OR EXISTS (SELECT 1 FROM information_schema.ENABLED_ROLES r "
         "WHERE r.ROLE_NAME IS NOT NULL AND GRANTEE LIKE CONCAT(\"'\", r.ROLE_NAME, \"'%%\")))"
         % _GRANTEE)

ACCESS_SQL = """
SELECT JSON_OBJECT('kind', 'server', 'user', CURRENT_USER(), 'version', VERSION(),
                   'read_only', CAST(@@GLOBAL.read_only AS CHAR),
                   'innodb_read_only', CAST(@@GLOBAL.innodb_read_only AS CHAR));
SELECT JSON_OBJECT('kind', 'privilege', 'name', PRIVILEGE_TYPE)
  FROM information_schema.USER_PRIVILEGES WHERE %(mine)s;
SELECT JSON_OBJECT('kind', 'privilege', 'name', PRIVILEGE_TYPE)
  FROM information_schema.SCHEMA_PRIVILEGES WHERE %(mine)s AND DATABASE() LIKE TABLE_SCHEMA;
SELECT JSON_OBJECT('kind', 'object', 'type', 'view', 'name', TABLE_NAME, 'definer', DEFINER)
  FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE();
SELECT JSON_OBJECT('kind', 'object', 'type', LOWER(ROUTINE_TYPE), 'name', ROUTINE_NAME,
                   'definer', DEFINER)
  FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE();
SELECT JSON_OBJECT('kind', 'object', 'type', 'trigger', 'name', TRIGGER_NAME, 'definer', DEFINER)
  FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE();
SELECT JSON_OBJECT('kind', 'object', 'type', 'event', 'name', EVENT_NAME, 'definer', DEFINER)
  FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE();
""" % {"mine": _MINE}

# What migrating and restoring any database needs (the dump's LOCK TABLES included).
BASE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "INDEX",
                   "LOCK TABLES")
WRITE_PRIVILEGES = ("INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER")
# What re-creating each kind of object needs.
KIND_PRIVILEGES = {"view": ("CREATE VIEW", "SHOW VIEW"),
                   "procedure": ("CREATE ROUTINE", "ALTER ROUTINE"),
                   "function": ("CREATE ROUTINE", "ALTER ROUTINE"),
                   "trigger": ("TRIGGER",),
                   "event": ("EVENT",)}
# Acting as another DEFINER: MariaDB 10.5.2+ SET USER, older servers and MySQL SUPER (MySQL 8:
# SET_USER_ID).
DEFINER_PRIVILEGES = ("SET USER", "SUPER", "SET_USER_ID")
LISTED = 15


def access_from_output(text):
    """The client's JSON lines -> {"server": {...}, "privileges": set, "objects": [...]}."""
    access = {"server": {}, "privileges": set(), "objects": []}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        item = json.loads(line)
        if item["kind"] == "server":
            access["server"] = item
        elif item["kind"] == "privilege":
            access["privileges"].add(item["name"].upper())
        else:
            access["objects"].append(item)
    return access


def _read_only_bypass(server):
    """The privileges that let a user write while ``@@read_only`` is on."""
    version = server.get("version") or ""
    if "mariadb" not in version.lower():
        return ("SUPER", "CONNECTION_ADMIN")
    numbers = [int(part) for part in version.split("-")[0].split(".")[:2] if part.isdigit()]
    # MariaDB 10.11 took READ_ONLY ADMIN out of SUPER.
    return ("READ_ONLY ADMIN",) if tuple(numbers) >= (10, 11) else ("READ_ONLY ADMIN", "SUPER")


def _on(value):
    """A server variable's value as CAST to text: '1' / 'ON' (enum since MariaDB 11.0)."""
    return str(value).upper() in ("1", "ON", "TRUE")


def _same_account(definer, user):
    """DEFINER 'app@%' and CURRENT_USER() 'app@%' (quotes and case of the host aside)."""
    def parts(text):
        name, _at, host = (text or "").replace("`", "").replace("'", "").rpartition("@")
        return name, host.lower()
    return parts(definer) == parts(user)


def write_problems(access, where):
    """Why this connection cannot migrate the database at all (a read-only target). Pure."""
    server, privileges = access["server"], access["privileges"]
    user = server.get("user")
    problems = []
    if _on(server.get("innodb_read_only")):
        problems.append("%s runs with innodb_read_only: no table can be changed; point the "
                        "connection at a writable server" % where)
    if _on(server.get("read_only")) and not \
            privileges.intersection(_read_only_bypass(server)):
        problems.append("%s is read-only (@@read_only = ON, a replica?) and user %s may not "
                        "bypass it: point the connection at the primary server"
                        % (where, user))
    missing = [p for p in WRITE_PRIVILEGES if p not in privileges]
    if missing:
        problems.append("user %s lacks the privilege(s) %s on %s: a migration could not run; "
                        "GRANT them (or connect as a user that has them)"
                        % (user, ", ".join(missing), where))
    return problems


def restore_problems(access, where):
    """Why a restore as this connection's user would fail: objects defined by another account
    the user cannot act as, and the privileges re-creating the objects needs. Pure."""
    server, privileges = access["server"], access["privileges"]
    user = server.get("user")
    problems = []
    can_set_definer = bool(privileges.intersection(DEFINER_PRIVILEGES))
    foreign = [item for item in access["objects"]
               if not can_set_definer and not _same_account(item.get("definer"), user)]
    if foreign:
        listed = ", ".join("%s %s (DEFINER=%s)" % (item["type"], item["name"], item["definer"])
                           for item in foreign[:LISTED])
        if len(foreign) > LISTED:
            listed += " and %d more" % (len(foreign) - LISTED)
        problems.append(
            "user %s cannot re-create %d object(s) of %s defined by another account (re-creating "
            "them needs the SET USER privilege), so a restore as this user would drop them and "
            "fail: %s. Re-create them with DEFINER=CURRENT_USER as this user, or connect as a "
            "user with SET USER (a privileged restore connection)" % (user, len(foreign), where, listed))
    needed = list(BASE_PRIVILEGES)
    for item in access["objects"]:
        needed += [p for p in KIND_PRIVILEGES.get(item["type"], ()) if p not in needed]
    missing = [p for p in needed if p not in privileges and p not in WRITE_PRIVILEGES]
    if missing:
        problems.append("user %s lacks the privilege(s) %s on %s that a restore of this "
                        "database needs: GRANT them, or connect as a user that has them"
                        % (user, ", ".join(missing), where))
    return problems
