"""The container images of the tests, built here from Debian's and PyPI's packages only.

There is no registry on these machines: the base image is a root file system made by
debootstrap (bookworm, minbase, with python3, PostgreSQL 15 and MariaDB from Debian) and
imported into podman; the web image adds a venv with the demo project's dependencies
(requirements/django42.txt, wheels downloaded from PyPI on this host and installed offline);
the database images are the web image that starts PostgreSQL or MariaDB (images/dbsafe-db) -
the compose `db` services run them, and molecule/podman runs the project and its server in one
container of them. Every tag carries the hash
of its recipe (see image_names): an image is built once per recipe and machine and reused by
every later run; a changed recipe builds new images and removes the old.

    python tests/containers/images.py        builds what is missing; prints the names as JSON
    python tests/containers/images.py web    the same; prints the names of the images named, a line each
"""
import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RECIPE_DIR = os.path.join(HERE, "images")
WEB_REQUIREMENTS = os.path.join(ROOT, "requirements", "django42.txt")
CONTAINERS_CONF = os.path.join(HERE, "containers.conf")
MIRROR = os.environ.get("DBSAFE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
PACKAGES = ["python3", "python3-venv", "postgresql-15", "mariadb-server"]
REPOSITORY = "localhost/dbsafe-test-"
NAMES = ("base", "web", "postgresql", "mariadb")
LOCK = "/var/tmp/dbsafe-test-images.lock"


def podman_env():
    """The environment podman runs with here (see containers.conf)."""
    return dict(os.environ, CONTAINERS_CONF=CONTAINERS_CONF)


def podman(*args, check=True):
    try:
        return subprocess.run(["podman"] + list(args), env=podman_env(), capture_output=True, text=True,
                              check=check)
    except subprocess.CalledProcessError as error:
        raise RuntimeError("podman %s failed (exit %d): %s"
                           % (" ".join(args), error.returncode, (error.stderr or "").strip()[-2000:]))


def _digest(*parts):
    digest = hashlib.sha256()
    for part in parts:
        if os.path.isfile(part):
            digest.update(os.path.relpath(part, ROOT).encode())
            with open(part, "rb") as handle:
                part = handle.read()
        digest.update(part if isinstance(part, bytes) else part.encode())
    return digest.hexdigest()[:12]


def image_names():
    """{name: image} for NAMES; each tag is the hash of its own recipe and of its base's tag,
    so a change rebuilds only the images it touches."""
    base = _digest(" ".join([MIRROR, SUITE] + PACKAGES))
    web = _digest(base, os.path.join(RECIPE_DIR, "web.Containerfile"), WEB_REQUIREMENTS)
    database = _digest(web, os.path.join(RECIPE_DIR, "db.Containerfile"), os.path.join(RECIPE_DIR, "dbsafe-db"))
    tags = {"base": base, "web": web, "postgresql": database, "mariadb": database}
    return dict((name, "%s%s:%s" % (REPOSITORY, name, tags[name])) for name in NAMES)


def exists(image):
    return podman("image", "exists", image, check=False).returncode == 0


def missing_tools():
    return [tool for tool in ("podman", "debootstrap", "runc") if not shutil.which(tool)]


@contextlib.contextmanager
def build_lock():
    """One build at a time on this machine (pytest-xdist workers, parallel runs)."""
    with open(LOCK, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_base(image, work):
    rootfs = os.path.join(work, "rootfs")
    result = subprocess.run(["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES), SUITE,
                             rootfs, MIRROR], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError("debootstrap of %s from %s failed (exit %d): %s"
                           % (SUITE, MIRROR, result.returncode, (result.stdout + result.stderr)[-3000:]))
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in glob.glob(os.path.join(rootfs, cache, "*")):
            if os.path.isfile(path):
                os.unlink(path)
    tar = subprocess.Popen(["tar", "-C", rootfs, "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(["podman", "import", "-", image], stdin=tar.stdout, env=podman_env(),
                              capture_output=True, text=True, check=False)
    tar.stdout.close()
    # Both ends checked: a tar that died must not leave a cut image behind.
    if tar.wait() != 0 or imported.returncode != 0:
        podman("rmi", "-f", image, check=False)
        raise RuntimeError("importing the root file system failed (tar exit %s, podman import exit %d): %s"
                           % (tar.returncode, imported.returncode, imported.stderr.strip()[-2000:]))


def download_wheels(work):
    wheels = os.path.join(work, "wheels")
    os.mkdir(wheels)
    shutil.copy2(WEB_REQUIREMENTS, os.path.join(wheels, "requirements.txt"))
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                             "--only-binary=:all:", "--python-version", "3.11", "--dest", wheels,
                             "-r", WEB_REQUIREMENTS], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError("downloading the web image's wheels failed: %s" % result.stderr[-2000:])
    return wheels


def build_from(containerfile, image, base, volume=None, **build_args):
    args = ["build", "--quiet", "--no-cache", "--file", os.path.join(RECIPE_DIR, containerfile), "--tag", image,
            "--build-arg", "BASE=" + base]
    for key, value in build_args.items():
        args += ["--build-arg", "%s=%s" % (key, value)]
    if volume:
        args += ["--volume", volume]
    podman(*(args + [RECIPE_DIR]))


def remove_old(names):
    """Images of an earlier recipe: they are never used again."""
    keep = set(names.values())
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    for image in listed:
        if image.startswith(REPOSITORY) and image not in keep:
            podman("rmi", "-f", image, check=False)


def ensure_images():
    """The names of the four images, built first where missing."""
    names = image_names()
    if all(exists(image) for image in names.values()):
        return names
    with build_lock():
        work = tempfile.mkdtemp(prefix="dbsafe-images-", dir="/var/tmp")
        try:
            if not exists(names["base"]):
                build_base(names["base"], work)
            if not exists(names["web"]):
                build_from("web.Containerfile", names["web"], names["base"],
                           volume="%s:/wheels:ro" % download_wheels(work))
            for engine in ("postgresql", "mariadb"):
                if not exists(names[engine]):
                    build_from("db.Containerfile", names[engine], names["web"], ENGINE=engine)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        remove_old(names)
    return names


if __name__ == "__main__":
    problems = missing_tools()
    if problems:
        sys.exit("images: missing %s (apt-get install podman runc debootstrap)" % ", ".join(problems))
    wanted = sys.argv[1:]
    if any(name not in NAMES for name in wanted):
        sys.exit("usage: images.py [NAME ...]   (NAME: %s)" % ", ".join(NAMES))
    built = ensure_images()
    print("\n".join(built[name] for name in wanted) if wanted
          else json.dumps(dict(built, containers_conf=CONTAINERS_CONF)))
