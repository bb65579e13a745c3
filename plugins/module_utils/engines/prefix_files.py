# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private files where db_command_prefix runs the database tools.

A prefix such as ``docker compose exec -T db`` runs the tools in another file system, where a
file written on this host does not exist. A client option file holding a password is made
there instead: ``mktemp`` creates it 0600, ``tee`` fills it from standard input (the content
never is an argument), ``rm -f`` removes it when the module call ends. Only its path appears
on the tools' command lines. One file per distinct content and module call (the runner's),
so a run that starts the client many times makes it once.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import atexit

from ansible_collections.dbsafe.django.plugins.module_utils.errors import CommandError, EngineError


class PrefixFiles:
    """The private files made behind ``runner.db_command_prefix`` for one module call."""

    def __init__(self, runner):
        self.runner = runner
        self.prefix = list(runner.db_command_prefix)
        self._paths = {}
        # Removed when the module call ends, also after a failure (fail_json exits too); made
        # only on first use (prefix_files), so only calls that make files register.
        atexit.register(self.remove_all)

    def path_for(self, text, name="dbsafe-my"):
        """The path, where the prefix runs, of a 0600 file holding ``text``."""
        if text in self._paths:
            return self._paths[text]
        try:
            path = self.runner.run(self.prefix + ["mktemp", "-t", name + ".XXXXXXXXXX"]).stdout.strip()
        except CommandError as error:
            raise EngineError("cannot make a private file through db_command_prefix %s (mktemp): %s"
                              % (" ".join(self.prefix), error.msg))
        if not path.startswith("/"):
            raise EngineError("mktemp through db_command_prefix %s answered %r, not a path"
                              % (" ".join(self.prefix), path[:200]))
        self._paths[text] = path
        try:
            self.runner.run(self.prefix + ["tee", path], data=text)
        except CommandError as error:
            raise EngineError("cannot write the private file %s through db_command_prefix %s: %s"
                              % (path, " ".join(self.prefix), error.msg))
        return path

    def remove_all(self):
        paths = sorted(self._paths.values())
        self._paths = {}
        if paths:
            self.runner.run(self.prefix + ["rm", "-f", "--"] + paths, check=False)


def prefix_files(runner):
    """The runner's PrefixFiles, made on first use (every engine of a module call shares it)."""
    files = getattr(runner, "prefix_files", None)
    if files is None:
        files = runner.prefix_files = PrefixFiles(runner)
    return files
