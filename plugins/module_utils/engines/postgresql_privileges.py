# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Can this PostgreSQL connection write the database and restore it? Read before relying on it.

A restore empties the database and replays the dump as the connecting user: every object it
drops and re-creates must be the user's own (or owned by a role the user is a member of), and
an extension's owner is often the superuser that created it (its COMMENT in the dump then fails
with "must be owner of extension"). A hot standby or a read-only session cannot be migrated at
all. ``ACCESS_SQL`` reads all of it in one query; ``access_problems`` turns the answer into
sentences. Pure but for the query.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.dbsafe.django.plugins.module_utils.engines.postgresql_sql import (
    USER_RELATIONS,
    USER_ROUTINES,
    USER_TYPES,
)

# Objects pg_dump writes and the flush drops (postgresql_sql's USER_* texts). Extensions created
# by initdb (plpgsql) have an OID below FirstNormalObjectId and are not dumped.
ACCESS_SQL = r"""
WITH objects(kind, name, owner) AS (
  SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                        WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' ELSE 'table' END,
         format('%I.%I', n.nspname, c.relname), c.relowner""" + USER_RELATIONS + r"""
  UNION ALL
  SELECT CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END,
         p.oid::regprocedure::text, p.proowner""" + USER_ROUTINES + r"""
  UNION ALL
  SELECT 'type', t.oid::regtype::text, t.typowner""" + USER_TYPES + r"""
  UNION ALL
  SELECT 'schema', format('%I', n.nspname), n.nspowner
    FROM pg_namespace n
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'public')
     AND n.nspname NOT LIKE 'pg\_%'
  UNION ALL
  SELECT 'extension', format('%I', e.extname), e.extowner
    FROM pg_extension e
   WHERE e.oid >= 16384
)
SELECT json_build_object(
  'user', current_user,
  'superuser', (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
  'in_recovery', pg_is_in_recovery(),
  'default_transaction_read_only', current_setting('default_transaction_read_only'),
  'transaction_read_only', current_setting('transaction_read_only'),
  'schema', current_schema(),
  'can_create_in_schema', CASE WHEN current_schema() IS NULL THEN false
                               ELSE has_schema_privilege(current_schema(), 'CREATE') END,
  'foreign', coalesce((SELECT json_agg(json_build_object(
                         'kind', o.kind, 'name', o.name, 'owner', pg_get_userbyid(o.owner))
                         ORDER BY o.kind, o.name)
                         FROM objects o
                        WHERE NOT pg_has_role(current_user, o.owner, 'USAGE')), '[]'));
"""

# How many objects a message lists before "and N more".
LISTED = 15


def access_from_output(text):
    """psql's one line of JSON -> the dict ``ACCESS_SQL`` built."""
    for line in (text or "").splitlines():
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no answer from the access query: %r" % (text or "")[:200])


def write_problems(access, where):
    """Why this connection cannot migrate the database at all (a read-only target). Pure."""
    user = access.get("user")
    problems = []
    if access.get("in_recovery"):
        problems.append(
            "%s is a hot standby (pg_is_in_recovery() is true): it is read-only; point the "
            "connection at the primary server" % where)
    for setting in ("default_transaction_read_only", "transaction_read_only"):
        if access.get(setting) == "on":
            problems.append(
                "sessions of user %r on %s are read-only (%s = on): clear it (ALTER DATABASE / "
                "ALTER ROLE ... RESET %s) or connect as a user that may write"
                % (user, where, setting, setting))
            break
    if not access.get("superuser") and not access.get("can_create_in_schema"):
        problems.append(
            "user %r cannot create tables in schema %s of %s (no CREATE privilege on it): a "
            "migration could not run; connect as the database's owner (or GRANT CREATE ON "
            "SCHEMA %s TO %s)" % (user, access.get("schema") or "(none on the search_path)",
                                  where, access.get("schema") or "public", user))
    return problems


def restore_problems(access, where):
    """Why a restore as this connection's user would fail: objects owned by roles the user is
    not a member of (extensions included). Pure."""
    if access.get("superuser"):
        return []
    foreign = access.get("foreign") or []
    if not foreign:
        return []
    listed = ", ".join("%s %s (owner %s)" % (item["kind"], item["name"], item["owner"])
                       for item in foreign[:LISTED])
    if len(foreign) > LISTED:
        listed += " and %d more" % (len(foreign) - LISTED)
    return [
        "user %r cannot drop and re-create %d object(s) of %s that it does not own, so a "
        "restore as this user would fail after emptying the database: %s. Make the user their "
        "owner (ALTER ... OWNER TO %s; an extension keeps the role that created it), or connect "
        "as a user that owns them or is a member of their owners' roles (a privileged restore "
        "connection, e.g. a superuser)"
        % (access.get("user"), len(foreign), where, listed, access.get("user"))]
