"""The execution environment (meta/execution-environment.yml) builds and provides what the
collection runs: `ansible-builder create` succeeds, every external tool the plugins run is
installed by meta/bindep.txt (Debian and RPM), every package the plugins import is in
meta/requirements.txt."""

import ast
import os
import re
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGINS = os.path.join(ROOT, "plugins")
EE_FILE = os.path.join(ROOT, "meta", "execution-environment.yml")
BINDEP = os.path.join(ROOT, "meta", "bindep.txt")
REQUIREMENTS = os.path.join(ROOT, "meta", "requirements.txt")

# Every tool the code may run -> the package that installs it on Debian/Ubuntu and on
# RHEL/CentOS/Fedora. A new tool in the code fails test_every_tool_is_known until it is added
# here and to meta/bindep.txt.
TOOL_PACKAGES = {
    "pg_dump": ("postgresql-client", "postgresql"),
    "pg_restore": ("postgresql-client", "postgresql"),
    "psql": ("postgresql-client", "postgresql"),
    "mariadb": ("mariadb-client", "mariadb"),
    "mariadb-dump": ("mariadb-client", "mariadb"),
    "mysql": ("mariadb-client", "mariadb"),
    "mysqldump": ("mariadb-client", "mariadb"),
    "sqlite3": ("sqlite3", "sqlite"),
    "gzip": ("gzip", "gzip"),
    "zstd": ("zstd", "zstd"),
    "tail": ("coreutils", "coreutils"),
    "sed": ("sed", "sed"),
    "git": ("git", "git-core"),
}
# Found by the scan below in today's code: if the scan finds fewer, the scan is broken.
EXPECTED_AT_LEAST = {"pg_dump", "pg_restore", "psql", "mariadb", "mariadb-dump", "mysql",
                     "mysqldump", "gzip", "zstd", "tail", "sed", "git"}
# Imported by the plugins but not installed in the EE, and why.
NOT_EE_IMPORTS = {
    "django": "plugins/module_utils/introspect.py runs in the Django project's own virtualenv",
}


def plugin_files():
    for dirpath, _dirs, files in os.walk(PLUGINS):
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def parse(path):
    with open(path, encoding="utf-8") as handle:
        return ast.parse(handle.read(), path)


def strings(node, constants):
    """The str values of a literal str/list/tuple, or of a module-level tuple named by it."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [value for element in node.elts for value in strings(element, constants)]
    if isinstance(node, ast.Name) and node.id in constants:
        return strings(constants[node.id], constants)
    return []


def loop_values(tree):
    """name -> the literal values of ``for name in (...)`` loops (``self.tool(name)``)."""
    values = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name):
            values.setdefault(node.target.id, []).extend(strings(node.iter, {}))
    return values


def tools_run_by_plugins():
    """(tool, where) for each external tool the plugins run: the names passed to find_tool()
    and to an engine's tool(), tool_argv() or version_output(), and the compression methods (module_utils/compression.py)."""
    found = set()
    for path in plugin_files():
        tree = parse(path)
        constants = {target.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                     for target in node.targets if isinstance(target, ast.Name)}
        loops = loop_values(tree)
        where = os.path.relpath(path, ROOT)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name not in ("find_tool", "tool", "tool_argv", "version_output"):
                continue
            arg = node.args[0]
            names = strings(arg, constants)
            if not names and isinstance(arg, ast.Name):
                names = loops.get(arg.id, [])
            found.update((tool, where) for tool in names)
        if os.path.basename(path) == "compression.py":
            found.update((method, where) for method in strings(constants["NAMES"], constants)
                         if method != "none")
    # The role's checkout of the project: ansible.builtin.git runs git.
    for top in ("roles", "playbooks"):
        for dirpath, _dirs, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                path = os.path.join(dirpath, name)
                if name.endswith((".yml", ".yaml")):
                    with open(path, encoding="utf-8") as handle:
                        if re.search(r"^\s*-?\s*(ansible\.builtin\.)?git:", handle.read(), re.M):
                            found.add(("git", os.path.relpath(path, ROOT)))
    return found


def bindep_packages(platform):
    from bindep.depends import Depends

    with open(BINDEP, encoding="utf-8") as handle:
        depends = Depends(handle.read())
    profiles = {"dpkg": ["platform:dpkg", "platform:debian", "platform:ubuntu"],
                "rpm": ["platform:rpm", "platform:centos", "platform:redhat"]}[platform]
    return {rule[0] for rule in depends.active_rules(profiles)}


def test_every_tool_is_known():
    unknown = sorted({"%s (%s)" % item for item in tools_run_by_plugins()
                      if item[0] not in TOOL_PACKAGES})
    assert not unknown, ("tools the code runs that are not in TOOL_PACKAGES (add them there "
                         "and to meta/bindep.txt): %s" % ", ".join(unknown))


def test_the_scan_finds_the_tools():
    tools = {tool for tool, _where in tools_run_by_plugins()}
    assert EXPECTED_AT_LEAST <= tools, "the scan missed %s" % sorted(EXPECTED_AT_LEAST - tools)


@pytest.mark.parametrize("platform,index", [("dpkg", 0), ("rpm", 1)])
def test_bindep_installs_every_tool(platform, index):
    packages = bindep_packages(platform)
    tools = {tool for tool, _where in tools_run_by_plugins()} | {"sqlite3"}
    missing = sorted("%s (package %s)" % (tool, TOOL_PACKAGES[tool][index])
                     for tool in tools if TOOL_PACKAGES.get(tool, ("?", "?"))[index] not in packages)
    assert not missing, "meta/bindep.txt does not install on %s: %s" % (platform, missing)


def third_party_imports():
    stdlib = set(sys.stdlib_module_names)
    found = {}
    for path in plugin_files():
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in stdlib and top not in ("ansible", "ansible_collections", "__future__"):
                    found.setdefault(top, set()).add(os.path.relpath(path, ROOT))
    return found


def requirement_names():
    names = set()
    with open(REQUIREMENTS, encoding="utf-8") as handle:
        for line in handle:
            line = line.split("#", 1)[0].strip()
            if line:
                names.add(re.split(r"[\s\[=<>!~;]", line, 1)[0].lower().replace("_", "-"))
    return names


def test_requirements_cover_the_imports():
    wanted = requirement_names()
    missing = sorted("%s (%s)" % (name, ", ".join(sorted(paths)))
                     for name, paths in third_party_imports().items()
                     if name not in NOT_EE_IMPORTS and name.lower().replace("_", "-") not in wanted)
    assert not missing, "imported by the plugins, not in meta/requirements.txt: %s" % missing


def test_not_ee_imports_stay_where_they_are_explained():
    imports = third_party_imports()
    assert imports.get("django") == {"plugins/module_utils/introspect.py"}


def test_definition_references_the_files():
    with open(EE_FILE, encoding="utf-8") as handle:
        definition = yaml.safe_load(handle)
    assert definition["version"] == 3
    dependencies = definition["dependencies"]
    # Relative to meta/ for ansible-builder -f, relative to the collection root for the
    # introspection of an EE that includes the collection (through the root's symlinks).
    for key, name in (("python", "requirements.txt"), ("system", "bindep.txt")):
        assert dependencies[key] == name
        assert os.path.isfile(os.path.join(ROOT, "meta", name))
        assert not os.path.islink(os.path.join(ROOT, "meta", name))
        assert os.path.realpath(os.path.join(ROOT, name)) == os.path.join(ROOT, "meta", name)
    with open(os.path.join(ROOT, "requirements", "sanity-2.21.txt"), encoding="utf-8") as handle:
        newest = re.search(r"^ansible-core==(\S+)", handle.read(), re.M).group(1)
    assert dependencies["ansible_core"]["package_pip"] == "ansible-core==%s" % newest


def test_ansible_builder_create(tmp_path):
    builder = os.path.join(os.path.dirname(sys.executable), "ansible-builder")
    context = tmp_path / "context"
    # The file's name is given: by default it follows the container runtime found on the
    # machine (Containerfile where podman is installed, Dockerfile otherwise).
    result = subprocess.run([builder, "create", "-f", EE_FILE, "--context", str(context),
                             "--output-filename", "Containerfile"],
                            capture_output=True, text=True, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    build = context / "_build"
    for name in ("requirements.txt", "bindep.txt"):
        copied = build / name
        assert copied.is_file() and not copied.is_symlink(), name
        with open(os.path.join(ROOT, "meta", name), encoding="utf-8") as handle:
            assert copied.read_text(encoding="utf-8") == handle.read()
    containerfile = (context / "Containerfile").read_text(encoding="utf-8")
    assert "ansible-core==" in containerfile
