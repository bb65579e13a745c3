# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Refuse before anything is touched when the connection cannot write the database (a read-only
target) or could not restore it (objects its user cannot drop and re-create): the guarded
migrate relies on a restore when it fails, ``db_backup state=verify`` promises one works.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbsafe.django.plugins.module_utils.errors import PreflightRefused


def refuse_inaccessible(engine, restore=True, doing="migrate"):
    """PreflightRefused listing ``engine.access_problems`` (nothing was changed), if any."""
    problems = engine.access_problems(restore=restore)
    if problems:
        raise PreflightRefused(
            "refused to %s before touching the database: %s. The database was not changed."
            % (doing, " | ".join(problems)),
            problems=problems, database_changed=False)
