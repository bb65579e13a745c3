#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: django_release_venv
short_description: A virtualenv per release - build, switch, prune
version_added: 0.4.0
description:
  - Builds a release's virtualenv beside the running one, points a symlink (for example
    C(<releases_dir>/current)) at it, and removes old ones.
  - O(state=present) builds C(<releases_dir>/<hash>), the hash being a short sha256 of the
    requirements file's content, the base interpreter's version and the install command. A
    complete venv of that hash (its marker file, written last, holds the hash) is reused and
    nothing is built. Otherwise it is built under C(<hash>.tmp-*) (C(python -m venv), then the
    install command) and renamed into place; when a step fails, the temporary directory is
    removed and the task fails with the command and its output. The running venv is never
    touched.
  - O(state=current) points O(link) at O(venv) atomically (a new symlink renamed over the old
    one).
  - O(state=pruned) keeps the O(keep) most recently used complete venvs plus the ones O(link)
    and O(protect) name, and removes unfinished builds older than an hour.
  - Run it as the application's user (C(become_user)) so that user owns the venvs.
author:
  - dbsafe.django developers (@dbsafe)
options:
  state:
    description: V(present) builds (or reuses), V(current) switches O(link), V(pruned) removes old venvs.
    type: str
    choices: [present, current, pruned]
    default: present
  releases_dir:
    description: The directory of the venvs, one per hash. Created when missing.
    type: path
    required: true
  requirements:
    description:
      - The requirements file of the wanted revision (for example in the preflight checkout).
        Required with O(state=present). Only its own content is hashed; files it includes
        with C(-r) count only through their path.
    type: path
  python:
    description: The base interpreter the venv is created from (C(python -m venv)).
    type: str
    default: python3
  install_command:
    description:
      - The install command as an argv list, run in the requirements file's directory.
        V({python}) is the new venv's interpreter, V({requirements}) the requirements file,
        V({venv}) the new venv's directory. Empty runs the venv's own pip
        (C({python} -m pip install --quiet --no-compile -r {requirements})); for uv for
        example C([uv, pip, install, --python, "{python}", -r, "{requirements}"]).
    type: list
    elements: str
    default: []
  link:
    description:
      - The symlink that names the venv in use. Required with O(state=current); with
        O(state=present) its target is returned as RV(current_venv); with O(state=pruned) its
        target is kept.
    type: path
  venv:
    description: With O(state=current), the venv O(link) points at (a complete one).
    type: path
  keep:
    description: With O(state=pruned), how many of the most recently used complete venvs stay.
    type: int
    default: 3
  protect:
    description: With O(state=pruned), venvs that stay whatever their age (for example the one being deployed).
    type: list
    elements: path
    default: []
attributes:
  check_mode:
    support: full
    description: Nothing is built, switched or removed; the result says what would be.
  diff_mode:
    support: none
    description: No diff is returned.
seealso:
  - module: dbsafe.django.django_migrate_guarded
"""

EXAMPLES = r"""
- name: Build the wanted revision's venv (reused when the requirements did not change)
  dbsafe.django.django_release_venv:
    requirements: /srv/.shop.preflight/requirements.txt
    python: /usr/bin/python3.11
    releases_dir: /srv/.shop.releases
    link: /srv/.shop.releases/current
  register: release

- name: Switch to it
  dbsafe.django.django_release_venv:
    state: current
    releases_dir: /srv/.shop.releases
    link: /srv/.shop.releases/current
    venv: "{{ release.venv }}"

- name: Keep the three most recent
  dbsafe.django.django_release_venv:
    state: pruned
    releases_dir: /srv/.shop.releases
    link: /srv/.shop.releases/current
    keep: 3
"""

RETURN = r"""
venv:
  description: The venv's directory (with O(state=present), the one for these requirements).
  returned: with O(state=present) or O(state=current)
  type: str
python:
  description: The venv's interpreter, C(<venv>/bin/python).
  returned: with O(state=present) or O(state=current)
  type: str
hash:
  description: The hash that names the venv.
  returned: with O(state=present)
  type: str
built:
  description: Whether a venv was built (false when a complete one was reused; in check mode, whether one would be).
  returned: with O(state=present)
  type: bool
current_venv:
  description: Where O(link) points now (null without a link).
  returned: with O(state=present)
  type: str
previous:
  description: Where O(link) pointed before (null when there was no link).
  returned: with O(state=current)
  type: str
removed:
  description: The names of the venvs removed (or that would be, in check mode).
  returned: with O(state=pruned)
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dbsafe.django.plugins.module_utils.errors import DbsafeError
from ansible_collections.dbsafe.django.plugins.module_utils.module_support import (
    fail_with,
    runner_for,
)
from ansible_collections.dbsafe.django.plugins.module_utils.release_venv import (
    ReleaseVenvError,
    ReleaseVenvs,
    is_complete,
    link_target,
    point_link,
)


def present(module, venvs):
    params = module.params
    digest, venv, complete = venvs.plan(params["requirements"], params["python"], params["install_command"])
    built = not complete
    if complete:
        if not module.check_mode:
            venvs.touch(venv)
    elif not module.check_mode:
        built = venvs.build(digest, venv, params["requirements"], params["python"], params["install_command"])
    result = dict(changed=built, built=built, hash=digest, venv=venv,
                  python=os.path.join(venv, "bin", "python"),
                  current_venv=link_target(params["link"]) if params["link"] else None)
    result["msg"] = ("built %s" % venv if built else "built nothing: %s is complete" % venv)
    if module.check_mode and built:
        result["msg"] = "would build %s" % venv
    return result


def current(module):
    params = module.params
    venv = os.path.abspath(params["venv"])
    if not is_complete(venv):
        raise ReleaseVenvError("%s is not a complete release venv (no marker); %s still points at %s."
                               % (venv, params["link"], link_target(params["link"])))
    try:
        previous, changed = point_link(params["link"], venv, check_mode=module.check_mode)
    except OSError as error:
        raise ReleaseVenvError("Cannot point %s at %s (%s); it still points at %s."
                               % (params["link"], venv, error.strerror, link_target(params["link"])))
    return dict(changed=changed, previous=previous, venv=venv, python=os.path.join(venv, "bin", "python"))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["present", "current", "pruned"], default="present"),
            releases_dir=dict(type="path", required=True),
            requirements=dict(type="path"),
            python=dict(type="str", default="python3"),
            install_command=dict(type="list", elements="str", default=[]),
            link=dict(type="path"),
            venv=dict(type="path"),
            keep=dict(type="int", default=3),
            protect=dict(type="list", elements="path", default=[]),
        ),
        required_if=[("state", "present", ["requirements"]), ("state", "current", ["link", "venv"])],
        supports_check_mode=True,
    )
    params = module.params
    venvs = ReleaseVenvs(runner_for(module), params["releases_dir"])
    try:
        if params["state"] == "present":
            result = present(module, venvs)
        elif params["state"] == "current":
            result = current(module)
        else:
            if params["keep"] < 1:
                module.fail_json(msg="keep must be 1 or more (got %d)" % params["keep"])
            protected = list(params["protect"]) + ([link_target(params["link"])] if params["link"] else [])
            removed = venvs.prune(params["keep"], protected, check_mode=module.check_mode)
            result = dict(changed=bool(removed), removed=removed)
    except DbsafeError as error:
        fail_with(module, error)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
