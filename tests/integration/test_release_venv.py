"""dbsafe.django.django_release_venv for real: venvs built with python -m venv and pip from this
machine's package mirror, reused by hash, switched by the symlink, pruned; and a deploy of the
demo whose release adds a package (the playbook level, with the app server started on the
release's venv)."""
import json
import os
import re
import subprocess

import pytest

import demo
from ansible_run import run_module
from test_playbooks import START_STOP_DAEMON, App, commit, inventory, playbook, release_repo, reports, wait_for

# A tiny package the offline mirror has (requirements/tools.txt pins it).
PACKAGE = "iniconfig==2.3.1"
MARKER = ".dbsafe-release"


def write(path, text):
    with open(str(path), "w") as handle:
        handle.write(text)
    return str(path)


def imports(python, module):
    return subprocess.run([python, "-c", "import " + module], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One venv built with the default pip command (the build costs ~30 s)."""
    home = tmp_path_factory.mktemp("releases")
    requirements = write(home / "requirements.txt", PACKAGE + "\n")
    releases = str(home / "releases")
    result = run_module("django_release_venv", dict(requirements=requirements, releases_dir=releases,
                                                    link=releases + "/current"))
    return home, requirements, releases, result


def test_a_venv_is_built_once_and_reused_while_the_requirements_stay_the_same(built):
    home, requirements, releases, first = built
    assert not first.get("failed"), first
    assert first["changed"] is True and first["built"] is True
    assert first["venv"] == os.path.join(releases, first["hash"])
    assert first["python"] == os.path.join(first["venv"], "bin", "python")
    assert first["current_venv"] is None
    assert imports(first["python"], "iniconfig")
    assert os.listdir(releases) == [first["hash"]]  # no temporary directory left
    # pip's own script names the final directory, not the one it was built in
    with open(os.path.join(first["venv"], "bin", "pip")) as handle:
        assert handle.readline().startswith("#!" + first["venv"] + "/bin/python")
    with open(os.path.join(first["venv"], MARKER)) as handle:
        assert json.load(handle)["hash"] == first["hash"]

    again = run_module("django_release_venv", dict(requirements=requirements, releases_dir=releases))
    assert again["changed"] is False and again["built"] is False, again
    assert again["hash"] == first["hash"] and "built nothing" in again["msg"]

    changed = write(home / "requirements-2.txt", PACKAGE + "\n# another release\n")
    would = run_module("django_release_venv", dict(requirements=changed, releases_dir=releases), check=True)
    assert would["changed"] is True and would["built"] is True and would["hash"] != first["hash"], would
    assert os.listdir(releases) == [first["hash"]]  # check mode built nothing


def test_a_failed_install_leaves_nothing_half_built_and_the_link_untouched(built):
    home, _requirements, releases, first = built
    link = releases + "/current"
    switched = run_module("django_release_venv", dict(state="current", releases_dir=releases, link=link,
                                                      venv=first["venv"]))
    assert switched["changed"] is True or switched["previous"] == first["venv"], switched
    broken = write(home / "broken.txt", "this is not a requirement ===\n")

    result = run_module("django_release_venv", dict(requirements=broken, releases_dir=releases, link=link))

    assert result.get("failed"), result
    assert "Could not install the requirements" in result["msg"], result["msg"]
    assert "pip install" in result["msg"] and "the running release's venv is untouched" in result["msg"]
    assert sorted(os.listdir(releases)) == sorted([first["hash"], "current"])  # no .tmp-* left
    assert os.readlink(link) == first["venv"]


def test_the_link_switches_atomically_and_pruning_keeps_the_one_in_use(built, tmp_path):
    _home, requirements, releases, first = built
    link = releases + "/current"
    # Two more complete venvs (copies under other hashes: building them would only cost time).
    others = []
    for n in (1, 2):
        name = "%016x" % n
        path = os.path.join(releases, name)
        subprocess.run(["cp", "-a", first["venv"], path], check=True)
        write(os.path.join(path, MARKER), json.dumps({"hash": name}))
        os.utime(os.path.join(path, MARKER), (1000 + n, 1000 + n))  # older than the built one
        others.append(path)
    os.makedirs(os.path.join(releases, "%016x.tmp-stale" % 3))
    os.utime(os.path.join(releases, "%016x.tmp-stale" % 3), (1000, 1000))

    to_old = run_module("django_release_venv", dict(state="current", releases_dir=releases, link=link, venv=others[0]))
    assert to_old["changed"] is True and to_old["previous"] == first["venv"], to_old
    assert os.readlink(link) == others[0]
    same = run_module("django_release_venv", dict(state="current", releases_dir=releases, link=link, venv=others[0]))
    assert same["changed"] is False
    refused = run_module("django_release_venv", dict(state="current", releases_dir=releases, link=link,
                                                     venv=str(tmp_path)))
    assert refused.get("failed") and "not a complete release venv" in refused["msg"], refused
    assert os.readlink(link) == others[0]

    pruned = run_module("django_release_venv", dict(state="pruned", releases_dir=releases, link=link, keep=1))

    # the newest (the built one) stays, the link's target stays, the other and the stale build go
    assert sorted(pruned["removed"]) == sorted([os.path.basename(others[1]), "%016x.tmp-stale" % 3]), pruned
    assert sorted(os.listdir(releases)) == sorted([first["hash"], os.path.basename(others[0]), "current"])
    assert imports(os.path.join(link, "bin", "python"), "iniconfig")


# --- The deploy ----------------------------------------------------------------------------


class ReleaseApp(App):
    """An app host whose server runs on <releases>/current/bin/python once the role manages
    its venvs (the first start, before any deploy, on the test's interpreter)."""

    def __init__(self, *args, **kwargs):
        App.__init__(self, *args, **kwargs)
        self.releases = os.path.join(self.home, "releases")
        self.link = os.path.join(self.releases, "current")
        self.python = demo.default_python()

    def start_command(self):
        command = App.start_command(self)
        command[command.index("--exec") + 1] = self.python
        return command

    def hostvars(self, **extra):
        self.python = os.path.join(self.link, "bin", "python")
        host = App.hostvars(self, **extra)
        host.update(django_migrate_requirements="requirements.txt", django_migrate_releases_path=self.releases,
                    django_migrate_start_command=self.start_command())
        return host

    def server_python(self):
        """The interpreter path the running server was started as."""
        with open(self.pidfile) as handle:
            pid = int(handle.read().strip())
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return handle.read().split(b"\0")[0].decode()


def task_status(output, task):
    """'ok' or 'changed' of a task in ansible-playbook's output."""
    match = re.search(re.escape(task) + r".*?\n(ok|changed|failed|fatal|skipping): \[", output, re.S)
    return match.group(1) if match else None


BUILD_TASK = "Preflight | Build the wanted revision's virtualenv"


@pytest.mark.skipif(not os.path.exists(START_STOP_DAEMON), reason="the app servers are run with start-stop-daemon")
def test_a_release_that_adds_a_package_deploys_on_its_own_venv_and_a_failed_one_switches_back(
        sqlite_database, tmp_path, request):
    """release-2 adds requirements.txt (Django and a package the app did not have): the
    preflight builds its venv, the app starts on it. The same revision again builds nothing.
    release-3 changes the requirements and brings a failing migration: its venv is built, the
    window switches to it, the migration fails - the link points at release-2's venv again and
    the app runs on it."""
    import django
    repo, shas = release_repo(tmp_path)
    requirements = "Django==%s\n%s\n" % (django.__version__, PACKAGE)
    write(os.path.join(repo, "requirements.txt"), requirements)
    shas["release-2"] = commit(repo, "release-2 with its requirements", tag="release-2b")
    app = ReleaseApp("app1", tmp_path, sqlite_database, repo, version="release-2b")
    request.addfinalizer(app.stop)
    app.running("release-1")
    hosts = {"django": {"app1": app.hostvars()}}

    rc, output = playbook("deploy", inventory(tmp_path, hosts), tmp_path)

    assert rc == 0, output[-4000:]
    assert task_status(output, BUILD_TASK) == "changed", output
    venv_2 = os.readlink(app.link)
    assert os.path.dirname(venv_2) == app.releases and os.path.exists(os.path.join(venv_2, MARKER))
    assert imports(os.path.join(venv_2, "bin", "python"), "iniconfig")
    assert app.server_python() == os.path.join(app.link, "bin", "python")
    assert app.get("/health/") == (200, "ok")
    assert app.head_revision() == shas["release-2"]

    rc, output = playbook("deploy", inventory(tmp_path, hosts), tmp_path)

    assert rc == 0, output[-4000:]
    assert task_status(output, BUILD_TASK) == "ok", output  # built nothing
    assert "built nothing" in output or os.readlink(app.link) == venv_2
    assert os.readlink(app.link) == venv_2
    assert [name for name in os.listdir(app.releases) if name != "current"] == [os.path.basename(venv_2)]

    write(os.path.join(repo, "requirements.txt"), requirements + "# release-3\n")
    failing = demo.add_failing_migration(repo, "runsql")
    commit(repo, "release-3: new requirements and a migration that fails", tag="release-3")
    hosts = {"django": {"app1": app.hostvars(django_migrate_git_version="release-3")}}

    rc, output = playbook("deploy", inventory(tmp_path, hosts), tmp_path)

    assert rc != 0, output[-4000:]
    assert "migration books.%s failed" % failing in output, output[-4000:]
    assert task_status(output, BUILD_TASK) == "changed", output
    venvs = [name for name in os.listdir(app.releases) if name != "current"]
    assert len(venvs) == 2  # release-3's venv was built
    venv_3 = os.path.join(app.releases, [name for name in venvs if name != os.path.basename(venv_2)][0])
    # ... switched to inside the window (the report of the failed run records each step) ...
    failed = reports(app)[-1]
    assert failed["result"] == "failed"
    steps = failed["migrations"][0]["service_window"]
    assert [(step["step"], step["target"]) for step in steps if step.get("link")] == [
        ("code", venv_3), ("code_back", venv_2)], steps
    assert os.readlink(app.link) == venv_2  # ... and back
    assert app.server_python() == os.path.join(app.link, "bin", "python")
    wait_for(app.url("/health/"))  # started in the background, after the link went back
    assert app.get("/health/") == (200, "ok")
    assert app.head_revision() == shas["release-2"]
