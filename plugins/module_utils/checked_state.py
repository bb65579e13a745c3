# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The database's state after a failure, checked rather than assumed: a message never says
"unknown state" about a database that could be read, nor "not changed" about one that was."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbsafe.django.plugins.module_utils.errors import DbsafeError
from ansible_collections.dbsafe.django.plugins.module_utils.snapshots import diff_snapshots


def state_after_failure(engine, snapshot):
    """(sentence, as_before): the database compared with ``snapshot`` (its state before the
    run); as_before is None when it could not be read."""
    try:
        differences = diff_snapshots(snapshot, engine.snapshot())
    except DbsafeError as error:
        return ("The database's state is unknown: reading it failed too (%s)."
                % error.msg.rstrip("."), None)
    if not differences:
        return ("Checked: the database equals its state before the run (schema, "
                "django_migrations and every table's rows).", True)
    return ("Checked: the database does NOT equal its state before the run (%d difference(s), "
            "e.g. %s)." % (len(differences), differences[0]), False)
