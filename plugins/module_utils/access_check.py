# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Refuse before anything is touched when the connection cannot write the database (a read-only
target) or could not restore it (objects its user cannot drop and re-create): the guarded
migrate relies on a restore when it fails, ``db_backup state=verify`` promises one works.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbsafe.django.plugins.module_utils.engines.registry import engine_for
from ansible_collections.dbsafe.django.plugins.module_utils.errors import PreflightRefused


def restorer_for(engine, user=None, password=None):
    """The engine restores run through: a privileged restore login's on ``engine``'s database
    (options restore_login_user / restore_login_password), else ``engine`` itself. Backups,
    snapshots and migrates keep the application's connection."""
    if not user:
        return engine
    restorer = engine_for(engine.connection.as_user(user, password), engine.runner)
    # The restored objects keep the owners the backup recorded (the application's user), not
    # the login's (PostgreSQL; elsewhere objects have no owner to keep).
    restorer.keep_owners = True
    return restorer


def refuse_inaccessible(engine, restore=True, doing="migrate", restore_engine=None):
    """PreflightRefused listing ``engine.access_problems`` (nothing was changed), if any.

    ``restore_engine``: the engine a restore would run through (a privileged restore login);
    the restore check is then made for its user, the write check still for ``engine``'s.
    """
    restorer = restore_engine or engine
    problems = engine.access_problems(restore=False)
    restore_problems = []
    if restore:
        restore_problems = [problem for problem in restorer.access_problems(restore=True)
                            if problem not in problems]
    problems = problems + restore_problems
    if problems:
        hint = ""
        if restore_problems and restorer is engine:
            hint = (" (or let a privileged account do the restores: set restore_login_user and "
                    "restore_login_password)")
        raise PreflightRefused(
            "refused to %s before touching the database: %s%s. The database was not changed."
            % (doing, " | ".join(problems), hint),
            problems=problems, database_changed=False)
