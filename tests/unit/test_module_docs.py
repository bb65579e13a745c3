"""Every module's DOCUMENTATION says what its argument spec does: for each option (and
suboption) the same default, type, choices, required and elements. The spec is the one place
an option's behaviour is written; this keeps the docs from drifting away from it."""
import importlib
import os

import pytest
import yaml

from ansible_collections.dbsafe.django.plugins.doc_fragments.project import ModuleDocFragment
from ansible_collections.dbsafe.django.plugins.module_utils.project import PROJECT_ARGUMENT_SPEC

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = sorted(name[:-3] for name in os.listdir(os.path.join(ROOT, "plugins", "modules"))
                 if name.endswith(".py") and not name.startswith("_"))
# A module run by an action plugin of the same name (plugins/action) is documentation only.
ACTIONS = set(name[:-3] for name in os.listdir(os.path.join(ROOT, "plugins", "action"))
              if name.endswith(".py"))
FRAGMENTS = {"dbsafe.django.project": ModuleDocFragment.DOCUMENTATION}
KEYS = ("default", "type", "choices", "required", "elements")


class _Captured(Exception):
    def __init__(self, kwargs):
        Exception.__init__(self)
        self.kwargs = kwargs


def _capture(**kwargs):
    raise _Captured(kwargs)


def argument_spec(module):
    """The argument_spec ``main()`` hands to AnsibleModule (stopped right there)."""
    original = module.AnsibleModule
    module.AnsibleModule = _capture
    try:
        module.main()
    except _Captured as captured:
        return captured.kwargs["argument_spec"]
    finally:
        module.AnsibleModule = original
    raise AssertionError("%s.main() did not build an AnsibleModule" % module.__name__)


def documented_options(module):
    doc = yaml.safe_load(module.DOCUMENTATION)
    options = {}
    for fragment in doc.get("extends_documentation_fragment") or []:
        options.update(yaml.safe_load(FRAGMENTS[fragment])["options"])
    options.update(doc.get("options") or {})
    return options


def normalized(entry):
    """What an option means, with Ansible's defaults made explicit."""
    return {"default": entry.get("default"), "type": entry.get("type", "str"),
            "choices": entry.get("choices"), "required": bool(entry.get("required", False)),
            "elements": entry.get("elements")}


def differences(documented, spec, where=""):
    found = []
    for name in sorted(set(documented) | set(spec)):
        path = where + name
        if name not in spec:
            found.append("%s: documented, not in the argument spec" % path)
        elif name not in documented:
            found.append("%s: in the argument spec, not documented" % path)
        else:
            doc, code = normalized(documented[name]), normalized(spec[name])
            found.extend("%s.%s: documented %r, argument spec %r" % (path, key, doc[key], code[key])
                         for key in KEYS if doc[key] != code[key])
            found.extend(differences(documented[name].get("suboptions") or {},
                                     spec[name].get("options") or {}, path + "."))
    return found


@pytest.mark.parametrize("name", [name for name in MODULES if name not in ACTIONS])
def test_documentation_matches_the_argument_spec(name):
    module = importlib.import_module("ansible_collections.dbsafe.django.plugins.modules." + name)
    assert differences(documented_options(module), argument_spec(module)) == []


def test_the_project_fragment_matches_the_project_argument_spec():
    documented = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]
    assert differences(documented, PROJECT_ARGUMENT_SPEC) == []


def test_the_comparison_sees_a_difference():
    assert differences({"keep": {"type": "int", "default": 3}},
                       {"keep": {"type": "int"}}) == ["keep.default: documented 3, argument spec None"]
    assert differences({"a": {"suboptions": {"b": {}}}}, {"a": {"options": {}}}) == [
        "a.b: documented, not in the argument spec"]
