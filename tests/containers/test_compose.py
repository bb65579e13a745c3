"""The seed team's setup for real: the playbooks against compose stacks run by podman.

Each stack is examples/compose/compose.yml (docs/playbooks.md's worked example): the demo
project in `web`, PostgreSQL or MariaDB in `db` on an internal network the host cannot reach.
The project runs through `compose run --rm -T web`, the database tools through
`compose exec -T db` - typed as `docker compose` (podman's docker command) or `podman-compose`.
Dumps stream out of the container into the backup directory on this host; the service is
stopped and started with compose commands; no password is in any process's argv, inside the
containers included (their processes are this machine's too, and the sampler reads them all).
"""
import glob
import json
import os
import stat

import demo
from harness import ArgvSampler
from stacks import PODMAN_COMPOSE
from test_playbooks import SUBTITLE, commit, inventory, playbook, release_repo


def reports(stack, name="deploy"):
    found = []
    for path in sorted(glob.glob(os.path.join(stack.reports, name + "-*.json"))):
        with open(path) as handle:
            found.append(json.load(handle))
    return found


def private(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def backups(stack):
    return sorted(path for path in glob.glob(os.path.join(stack.backups, "*")) if not path.endswith(".json"))


def started(stack, migrate=True):
    """The stack's release migrated, with the demo's books, and proven out of the host's reach."""
    if migrate:
        stack.in_web("sh", "-c", "python manage.py migrate --no-input --verbosity 0"
                     " && python manage.py loaddata demo --verbosity 0")
    assert stack.unreachable_from_host(), "the host reaches the database of %s" % stack.project
    return stack


def test_deploy_a_pending_migration_through_docker_compose(compose_stack, tmp_path):
    """PostgreSQL in its container; `docker compose` as Docker users type it."""
    repo, shas = release_repo(tmp_path)
    prod = started(compose_stack("prod", "postgresql", repo, "main", running="release-1"))
    titles = prod.titles()
    inv = inventory(tmp_path, {"django": {"prod": prod.hostvars()}})

    with ArgvSampler([prod.password]) as sampler:
        rc, output = playbook("deploy", inv, tmp_path)

    assert rc == 0, output[-6000:]
    assert sampler.leaks == [], sampler.leaks[:3]
    # The sampler read the containers' processes too: the server, and pg_dump inside `db`.
    seen = [argv for _pid, argv in sampler.seen]
    assert any(argv.startswith(b"/usr/lib/postgresql/15/bin/postgres\0-D\0") for argv in seen)
    assert any(argv.startswith(b"/usr/lib/postgresql/15/bin/pg_dump\0") for argv in seen)
    assert SUBTITLE in prod.applied()
    assert prod.titles() == titles
    assert prod.revision() == shas["release-2"] and prod.running()
    [dump] = backups(prod)
    assert dump.endswith(".pgdump") and private(dump) == 0o600 and private(prod.backups) == 0o700
    [report] = reports(prod)
    assert report["result"] == "succeeded"
    assert [step["migration"] for step in report["migrations"][0]["applied"]] == ["books." + SUBTITLE]
    assert report["migrations"][0]["backup"]["path"] == dump
    assert len(report["migrations"][0]["backup"]["sha256"]) == 64
    host = report["hosts"][0]
    assert host["revision_before"] == shas["release-1"] and host["revision_after"] == shas["release-2"]
    assert host["downtime_seconds"] > 0
    # No copy of the dump was left inside the database container.
    assert prod.leftovers() == []


def test_a_failing_migration_is_restored_in_the_mariadb_container(compose_stack, tmp_path):
    """MariaDB (DDL is not transactional) in its container, through `podman-compose`: release-3
    adds a column and then fails; the guarded migrate restores the database from the dump it
    streamed out, the code goes back and the service runs again."""
    repo, shas = release_repo(tmp_path)
    failing = demo.add_failing_migration(repo, "runsql")
    shas["release-3"] = commit(repo, "release-3: a migration that fails", tag="release-3")
    prod = started(compose_stack("prod", "mysql", repo, "release-3", running="release-2",
                                 compose_command=PODMAN_COMPOSE))
    before = (prod.applied(), prod.sql("SHOW COLUMNS FROM books_book"), prod.titles())
    inv = inventory(tmp_path, {"django": {"prod": prod.hostvars()}})

    with ArgvSampler([prod.password]) as sampler:
        rc, output = playbook("deploy", inv, tmp_path)

    assert rc != 0, output[-5000:]
    assert "Deploy failed on prod: migration books.%s failed" % failing in output, output[-5000:]
    assert "was restored and verified" in output
    assert sampler.leaks == [], sampler.leaks[:3]
    assert (prod.applied(), prod.sql("SHOW COLUMNS FROM books_book"), prod.titles()) == before
    assert prod.revision() == shas["release-2"] and prod.running()
    [report] = reports(prod)
    assert report["result"] == "failed" and report["migrations"][0]["restored"] is True
    [dump] = backups(prod)
    assert private(dump) == 0o600
    # The client option files were made in the container and are gone again.
    assert prod.leftovers() == []


def test_restore_from_prod_between_two_compose_stacks(compose_stack, tmp_path):
    """Production and a developer's machine, each a compose stack with its own unreachable
    database: the developer's database becomes production's; production is only read."""
    repo, _shas = release_repo(tmp_path)
    prod = started(compose_stack("prod", "postgresql", repo, "main", running="main"))
    prod.manage("shell", "-c", "from books.models import Book\nBook.objects.create(title='Only in production')")
    dev = started(compose_stack("dev", "postgresql", repo, "main", running="main"))
    dev.manage("shell", "-c", "from books.models import Book\nBook.objects.create(title='Only on the laptop')")
    prod_titles = prod.titles()
    inv = inventory(tmp_path, {"production": {"prod": prod.hostvars()},
                               "development": {"dev": dev.hostvars()}})

    with ArgvSampler([prod.password, dev.password]) as sampler:
        rc, output = playbook("restore_from_prod", inv, tmp_path)

    assert rc == 0, output[-6000:]
    assert sampler.leaks == [], sampler.leaks[:3]
    assert dev.titles() == prod_titles and "Only on the laptop" not in dev.titles()
    assert prod.titles() == prod_titles
    assert dev.running() and prod.running()


def test_drift_check_reset_and_rollback_on_a_compose_stack(compose_stack, tmp_path):
    """The other three playbooks against a development stack (PostgreSQL; MariaDB's tools run
    behind the same prefix in the failing deploy above): the drift check finds a table made by
    hand, reset wipes the data and loads the fixtures, rollback unapplies the newest migration -
    each after a backup streamed out of the container."""
    repo, _shas = release_repo(tmp_path)
    dev = started(compose_stack("dev", "postgresql", repo, "main", running="main"))
    dev.sql("CREATE TABLE stray_by_hand (id integer)")
    dev.manage("shell", "-c", "from books.models import Book\nBook.objects.create(title='Written by hand')")
    inv = inventory(tmp_path, {"development": {"dev": dev.hostvars()}})

    with ArgvSampler([dev.password]) as sampler:
        rc, output = playbook("drift_check", inv, tmp_path, drift_check_hosts="dev")
        assert rc != 0 and "table stray_by_hand is not built by the migrations" in output, output[-5000:]
        dev.sql("DROP TABLE stray_by_hand")

        rc, output = playbook("reset", inv, tmp_path, reset_hosts="dev", reset_confirm="dev")
        assert rc == 0, output[-5000:]
        assert "Written by hand" not in dev.titles() and "A Wizard of Earthsea" in dev.titles()

        rc, output = playbook("rollback", inv, tmp_path, rollback_hosts="dev", rollback_app="books",
                              rollback_to="0005", rollback_allow_data_loss=True)
        assert rc == 0, output[-5000:]

    assert sampler.leaks == [], sampler.leaks[:3]
    assert SUBTITLE not in dev.applied() and "0005_remove_book_notes" in dev.applied()
    assert len(backups(dev)) == 2 and all(private(path) == 0o600 for path in backups(dev))
    assert dev.running()
    assert dev.leftovers() == []
