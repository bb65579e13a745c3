"""Fixtures of the compose tests: the images (built once per recipe and machine, see
images.py) and the stacks of a test, taken down afterwards (containers, networks, volumes, the
firewall rule). Without podman, podman-compose or debootstrap the tests skip - and fail with
CI=true."""
import os
import shutil
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "reliability"))  # harness: ArgvSampler
import images as container_images  # noqa: E402 - needs the path above
import stacks  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def images():
    missing = container_images.missing_tools()
    missing += [tool for tool in ("podman-compose", "iptables", "git") if not shutil.which(tool)]
    if os.geteuid() != 0:
        missing.append("root (rootful podman, the firewall rule)")
    if missing:
        message = "the compose tests need %s (.ci/run installs them)" % ", ".join(missing)
        if IN_CI:
            pytest.fail(message + " (CI=true: a missing prerequisite is a failure)", pytrace=False)
        pytest.skip(message)
    # Everything this stage starts - the tests' own commands and ansible-playbook, whose
    # modules run the compose commands - finds `docker` (tests/containers/bin) and podman's
    # configuration.
    os.environ.update(stacks.environment())
    return container_images.ensure_images()


@pytest.fixture
def compose_stack(images, tmp_path):
    """compose_stack(name, engine, repo, version, running=version, compose_command=DOCKER_COMPOSE)
    -> a ComposeStack up with the checkout at ``running``, to be deployed to ``version``; every
    stack made is taken down after the test."""
    made = []

    def make(name, engine, repo, version, running=None, compose_command=None):
        stack = stacks.ComposeStack(name, tmp_path, engine, images, repo, version, compose_command)
        made.append(stack)
        return stack.up(running)

    yield make
    for stack in made:
        stack.close()
