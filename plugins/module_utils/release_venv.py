# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A virtualenv per release: built beside the running one, reused while its requirements, its
base interpreter and its install command stay the same (the directory's name is their hash),
switched with one atomic symlink, pruned to the newest few.

A venv is complete once its marker file (written last, holding the hash) is there; it is built
under a temporary name and renamed into place, so a half-built venv never has the final name.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import hashlib
import json
import os
import shutil
import tempfile
import time

from ansible_collections.dbsafe.django.plugins.module_utils.errors import (
    CommandError,
    DbsafeError,
)

MARKER = ".dbsafe-release"
TMP_INFIX = ".tmp-"
HASH_LENGTH = 16
# --no-compile: the .pyc files would carry the temporary directory's name in their tracebacks;
# the application compiles them under the final name on first import.
DEFAULT_INSTALL_COMMAND = ["{python}", "-m", "pip", "install", "--quiet", "--no-compile", "-r", "{requirements}"]
# An unfinished build older than this is left over from a run that died.
STALE_TMP_SECONDS = 3600
# What identifies the base interpreter: its full version and build.
VERSION_PROBE = ["-c", "import sys; print(sys.version)"]


class ReleaseVenvError(DbsafeError):
    """A release venv could not be built, switched or pruned."""


def release_hash(requirements, python_version, install_command):
    """The short sha256 of what makes a venv: the requirements file's content, the base
    interpreter's version and the install command (as given, placeholders unexpanded)."""
    if isinstance(requirements, bytes):
        requirements = requirements.decode("utf-8", "replace")
    payload = json.dumps([requirements, python_version.strip(), list(install_command)], sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:HASH_LENGTH]


def install_argv(install_command, python, requirements, venv):
    """The install command with ``{python}`` (the new venv's interpreter), ``{requirements}``
    and ``{venv}`` filled in; the default runs the venv's own pip."""
    template = list(install_command) or DEFAULT_INSTALL_COMMAND
    return [part.replace("{python}", python).replace("{requirements}", requirements).replace("{venv}", venv)
            for part in template]


def is_release_name(name):
    return len(name) == HASH_LENGTH and all(c in "0123456789abcdef" for c in name)


def is_tmp_name(name):
    head, sep, _tail = name.partition(TMP_INFIX)
    return bool(sep) and is_release_name(head)


def marker_hash(venv):
    """The hash in ``venv``'s marker, or None (no marker: not complete)."""
    try:
        with open(os.path.join(venv, MARKER)) as handle:
            return json.load(handle).get("hash")
    except (IOError, OSError, ValueError, AttributeError):
        return None


def is_complete(venv, wanted_hash=None):
    found = marker_hash(venv)
    return found is not None and (wanted_hash is None or found == wanted_hash)


def prune_selection(entries, keep, protected, now, stale_seconds=STALE_TMP_SECONDS):
    """Which entries of the releases directory to remove: complete venvs beyond the ``keep``
    newest (by their marker's mtime) that nothing in ``protected`` names, and unfinished builds
    older than ``stale_seconds``. Anything else (incomplete venvs under a final name, names we
    did not make) is left alone.

    ``entries``: dicts with ``name``, ``path``, ``complete`` (bool), ``used`` (marker mtime)
    and ``mtime`` (the directory's)."""
    protected = set(os.path.normpath(p) for p in protected if p)
    complete = sorted((e for e in entries if is_release_name(e["name"]) and e["complete"]),
                      key=lambda e: (e["used"], e["name"]), reverse=True)
    remove = [e for e in complete[max(keep, 0):] if os.path.normpath(e["path"]) not in protected]
    remove.extend(e for e in entries if is_tmp_name(e["name"]) and now - e["mtime"] > stale_seconds)
    return sorted(e["name"] for e in remove)


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_tree(path):
    if os.path.islink(path) or not os.path.isdir(path):
        if os.path.lexists(path):
            os.unlink(path)
        return
    shutil.rmtree(path)


class ReleaseVenvs:
    """The venvs of one releases directory."""

    def __init__(self, runner, releases_dir):
        self.runner = runner
        self.releases_dir = os.path.abspath(releases_dir)

    # -- present ---------------------------------------------------------------------------

    def base_version(self, python):
        try:
            result = self.runner.run([python] + VERSION_PROBE)
        except CommandError as error:
            raise ReleaseVenvError(
                "The base interpreter %s does not run (%s). Nothing was built; the running "
                "release's venv is untouched. Set the base interpreter to an installed Python."
                % (python, error.msg))
        return result.stdout.strip()

    def plan(self, requirements_path, python, install_command):
        """(hash, venv path, complete) for the wanted requirements."""
        try:
            with open(requirements_path, "rb") as handle:
                content = handle.read()
        except (IOError, OSError) as error:
            raise ReleaseVenvError(
                "Cannot read the requirements file %s (%s). Nothing was built; the running "
                "release's venv is untouched. Check the requirements path in the checkout."
                % (requirements_path, error.strerror or error))
        digest = release_hash(content, self.base_version(python), install_command)
        venv = os.path.join(self.releases_dir, digest)
        return digest, venv, is_complete(venv, digest)

    def build(self, digest, venv, requirements_path, python, install_command):
        """Build ``venv`` under a temporary name, mark it complete, rename it into place.
        Whatever fails, the temporary directory is removed and nothing else is touched."""
        try:
            os.makedirs(self.releases_dir)
        except OSError as error:
            if error.errno != errno.EEXIST:
                raise ReleaseVenvError("Cannot create the releases directory %s (%s). Nothing was built."
                                       % (self.releases_dir, error.strerror))
        tmp = tempfile.mkdtemp(prefix=digest + TMP_INFIX, dir=self.releases_dir)
        try:
            os.chmod(tmp, 0o755)
            self._step("create the venv", [python, "-m", "venv", tmp])
            tmp_python = os.path.join(tmp, "bin", "python")
            self._step("install the requirements",
                       install_argv(install_command, tmp_python, os.path.abspath(requirements_path), tmp),
                       cwd=os.path.dirname(os.path.abspath(requirements_path)))
            _relocate_scripts(tmp, venv)
            self._write_marker(tmp, digest, python, install_command)
            if is_complete(venv, digest):  # another run built the same venv meanwhile
                _remove_tree(tmp)
                return False
            if os.path.lexists(venv):  # an incomplete one under the final name: never in use
                _remove_tree(venv)
            os.rename(tmp, venv)
            _fsync_dir(self.releases_dir)
        except BaseException:
            _remove_tree(tmp)
            raise
        return True

    def _step(self, what, argv, cwd=None):
        try:
            self.runner.run(argv, cwd=cwd)
        except CommandError as error:
            raise ReleaseVenvError(
                "Could not %s: %s failed (%s). Nothing was left half-built; the running "
                "release's venv is untouched. Fix the requirements or the install command and "
                "deploy again." % (what, " ".join(argv), error.msg),
                argv=argv, stderr=error.details.get("stderr"))

    def _write_marker(self, venv, digest, python, install_command):
        path = os.path.join(venv, MARKER)
        with open(path, "w") as handle:
            json.dump({"hash": digest, "python": python, "install_command": list(install_command),
                       "built_at": time.time()}, handle)
            handle.flush()
            os.fsync(handle.fileno())

    def touch(self, venv):
        """Mark ``venv`` as used now: pruning keeps the most recently used ones."""
        try:
            os.utime(os.path.join(venv, MARKER), None)
        except OSError:
            pass

    # -- pruned ----------------------------------------------------------------------------

    def entries(self):
        found = []
        try:
            names = os.listdir(self.releases_dir)
        except OSError:
            return found
        for name in names:
            path = os.path.join(self.releases_dir, name)
            if os.path.islink(path) or not os.path.isdir(path):
                continue
            marker = os.path.join(path, MARKER)
            complete = is_complete(path, name) if is_release_name(name) else False
            found.append({"name": name, "path": path, "complete": complete,
                          "used": os.path.getmtime(marker) if complete else 0,
                          "mtime": os.path.getmtime(path)})
        return found

    def prune(self, keep, protected, check_mode=False):
        names = prune_selection(self.entries(), keep, protected, time.time())
        if not check_mode:
            for name in names:
                try:
                    _remove_tree(os.path.join(self.releases_dir, name))
                except OSError as error:
                    raise ReleaseVenvError("Cannot remove the old venv %s (%s). The venvs in use are untouched."
                                           % (os.path.join(self.releases_dir, name), error.strerror))
        return names


def link_target(link):
    """Where the symlink ``link`` points (absolute), or None when there is no link."""
    if not os.path.islink(link):
        return None
    target = os.readlink(link)
    return os.path.normpath(os.path.join(os.path.dirname(link), target))


def point_link(link, target, check_mode=False):
    """Point the symlink ``link`` at ``target`` atomically (a new link under a temporary name,
    renamed over the old one); ``target`` None removes the link. Returns (previous target,
    changed)."""
    previous = link_target(link)
    if os.path.lexists(link) and not os.path.islink(link):
        raise ReleaseVenvError("%s is not a symlink; not replacing it. Move it away, then deploy again." % link)
    wanted = os.path.normpath(target) if target else None
    if previous == wanted:
        return previous, False
    if check_mode:
        return previous, True
    if wanted is None:
        os.unlink(link)
    else:
        tmp = "%s%s%d" % (link, TMP_INFIX, os.getpid())
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(wanted, tmp)
        try:
            os.replace(tmp, link)
        except OSError:
            os.unlink(tmp)
            raise
    _fsync_dir(os.path.dirname(os.path.abspath(link)))
    return previous, True


def _relocate_scripts(built, final):
    """The scripts pip wrote into ``bin`` (console scripts' shebangs, activate) name the
    temporary directory; after the rename they must name the final one."""
    bin_dir = os.path.join(built, "bin")
    old, new = built.encode("utf-8"), final.encode("utf-8")
    for name in os.listdir(bin_dir):
        path = os.path.join(bin_dir, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, "rb") as handle:
            content = handle.read()
        if old not in content or b"\0" in content[:4096]:  # binaries are left alone
            continue
        mode = os.stat(path).st_mode
        with open(path, "wb") as handle:
            handle.write(content.replace(old, new))
        os.chmod(path, mode)
