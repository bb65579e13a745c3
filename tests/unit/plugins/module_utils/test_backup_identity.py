"""A backup belongs to one database: which database a manifest names, the order of a database's
backups (sequence, never the writer's clock), and the store's listing and retention in a
backup directory that several databases share (manifests written by hand, no database)."""
import json
import os

import pytest

from ansible_collections.dbsafe.django.plugins.module_utils import backup_identity
from ansible_collections.dbsafe.django.plugins.module_utils.backups import BackupStore
from ansible_collections.dbsafe.django.plugins.module_utils.connection import Connection
from ansible_collections.dbsafe.django.plugins.module_utils.errors import BackupError

PROD = {"engine": "postgresql", "host": "127.0.0.1", "port": 5432, "name": "shop",
        "server": "postgresql:111"}
STAGING = dict(PROD, server="postgresql:222")  # same address and name, another machine


def manifest(identity=None, sequence=None, created_at="2026-12-07T01:00:00.000000Z",
             name="default-shop-postgresql-20261207T010000000000Z.pgdump", legacy=False):
    identity = identity or PROD
    made = {"file": name, "label": "default-shop", "engine": identity["engine"],
            "database": identity["name"], "host": identity["host"], "port": identity["port"],
            "created_at": created_at}
    if not legacy:
        made["instance"] = dict(identity)
        made["sequence"] = sequence
    return made


# -- which database --------------------------------------------------------------------------

def test_same_name_and_address_on_another_server_is_another_database():
    assert backup_identity.same_database(PROD, dict(PROD))
    assert not backup_identity.same_database(PROD, STAGING)
    assert not backup_identity.same_database(PROD, dict(PROD, name="shop_dev"))
    assert not backup_identity.same_database(PROD, dict(PROD, engine="mysql"))


def test_the_server_identity_decides_over_the_address():
    # One server reached as localhost and as 127.0.0.1 is one database.
    assert backup_identity.same_database(PROD, dict(PROD, host="localhost"))


def test_without_a_server_identity_the_address_decides():
    unknown = dict(PROD, server=None)
    assert backup_identity.same_database(unknown, PROD)
    assert not backup_identity.same_database(unknown, dict(PROD, host="db2"))
    assert not backup_identity.same_database(unknown, dict(PROD, port=5433))


def test_an_earlier_versions_manifest_belongs_by_engine_name_host_and_port():
    old = manifest(legacy=True)
    assert backup_identity.manifest_identity(old)["server"] is None
    assert backup_identity.belongs_to(old, PROD)
    assert backup_identity.belongs_to(old, STAGING)  # nothing else to tell them apart
    assert not backup_identity.belongs_to(old, dict(PROD, host="db2"))
    assert backup_identity.is_legacy(old)
    assert not backup_identity.is_legacy(manifest(sequence=1))


def test_database_key_is_stable_and_differs_per_database():
    key = backup_identity.database_key(PROD)
    assert key == backup_identity.database_key(dict(PROD)) and len(key) == 12
    assert key != backup_identity.database_key(STAGING)
    assert key != backup_identity.database_key(dict(PROD, name="other"))
    assert backup_identity.database_key(PROD) == backup_identity.database_key(
        dict(PROD, host="localhost"))


def test_an_unreadable_manifest_may_belong_by_its_name_only():
    name = "default-shop-postgresql-20261207T010000000000Z.pgdump.json"
    assert backup_identity.could_belong(name, "default-shop", "postgresql")
    assert not backup_identity.could_belong(name, "default-shop", "mysql")
    assert not backup_identity.could_belong(name, "default-blog", "postgresql")
    assert backup_identity.could_belong(name, None, "postgresql")


# -- order -------------------------------------------------------------------------------------

def test_newest_is_the_highest_sequence_whatever_the_clock_said():
    early_clock = manifest(sequence=2, created_at="2026-12-07T00:00:00.000000Z", name="b")
    late_clock = manifest(sequence=1, created_at="2026-12-07T01:00:00.000000Z", name="a")
    assert [m["file"] for m in backup_identity.newest_first([late_clock, early_clock])] == \
        ["b", "a"]


def test_earlier_versions_backups_rank_below_numbered_ones_by_their_clock():
    numbered = manifest(sequence=1, created_at="2020-01-01T00:00:00.000000Z", name="new")
    older = manifest(legacy=True, created_at="2026-01-01T00:00:00.000000Z", name="old1")
    oldest = manifest(legacy=True, created_at="2025-01-01T00:00:00.000000Z", name="old0")
    assert [m["file"] for m in backup_identity.newest_first([oldest, numbered, older])] == \
        ["new", "old1", "old0"]


def test_next_sequence_counts_only_the_databases_own_backups():
    backups = [manifest(sequence=4), manifest(STAGING, sequence=9), manifest(legacy=True)]
    assert backup_identity.next_sequence(backups, PROD) == 5
    assert backup_identity.next_sequence(backups, STAGING) == 10
    assert backup_identity.next_sequence([], PROD) == 1


# -- the store in a shared directory -----------------------------------------------------------

def put(directory, made, data=b"x"):
    with open(os.path.join(directory, made["file"]), "wb") as handle:
        handle.write(data)
    with open(os.path.join(directory, made["file"] + ".json"), "w") as handle:
        json.dump(made, handle)


def stamped(identity, sequence, stamp):
    return manifest(identity, sequence=sequence, name="default-shop-postgresql-%s.pgdump" % stamp)


def test_listing_and_newest_see_only_their_own_database(tmp_path):
    put(str(tmp_path), stamped(PROD, 1, "20261207T010000000000Z"))
    put(str(tmp_path), stamped(STAGING, 1, "20261207T020000000000Z"))  # later clock
    store = BackupStore(str(tmp_path))
    assert [m["file"] for m in store.list("default-shop", "postgresql", PROD)] == \
        ["default-shop-postgresql-20261207T010000000000Z.pgdump"]
    assert store.newest("default-shop", "postgresql", STAGING)["instance"] == STAGING


def test_keep_one_keeps_the_other_databases_backups(tmp_path):
    for sequence, stamp in ((1, "20261207T010000000000Z"), (2, "20261207T010100000000Z")):
        put(str(tmp_path), stamped(PROD, sequence, stamp))
        put(str(tmp_path), stamped(STAGING, sequence, stamp.replace("T01", "T03")))
    store = BackupStore(str(tmp_path))
    removed = store.prune(1, label="default-shop", engine="postgresql", database=PROD)
    assert removed == ["default-shop-postgresql-20261207T010000000000Z.pgdump"]
    assert len(store.list("default-shop", "postgresql", STAGING)) == 2


def test_a_damaged_manifest_among_them_is_an_error_naming_it(tmp_path):
    put(str(tmp_path), stamped(PROD, 1, "20261207T010000000000Z"))
    damaged = "default-shop-postgresql-20261207T020000000000Z.pgdump"
    put(str(tmp_path), stamped(PROD, 2, "20261207T020000000000Z"))
    with open(os.path.join(str(tmp_path), damaged + ".json"), "w") as handle:
        handle.write('{"file": "default-shop-postgresql-2026')  # cut short
    store = BackupStore(str(tmp_path))
    for choose in (lambda: store.newest("default-shop", "postgresql", PROD),
                   lambda: store.prune(1, label="default-shop", engine="postgresql",
                                       database=PROD)):
        with pytest.raises(BackupError) as raised:
            choose()
        assert damaged + ".json" in raised.value.msg
    assert len(os.listdir(str(tmp_path))) == 4  # nothing removed
    # Another label's listing is not blocked by it.
    assert store.list("default-blog", "postgresql", PROD) == []


def test_a_manifest_whose_backup_is_gone_is_an_error_naming_it(tmp_path):
    gone = stamped(PROD, 2, "20261207T020000000000Z")
    put(str(tmp_path), stamped(PROD, 1, "20261207T010000000000Z"))
    put(str(tmp_path), gone)
    os.unlink(os.path.join(str(tmp_path), gone["file"]))
    with pytest.raises(BackupError) as raised:
        BackupStore(str(tmp_path)).newest("default-shop", "postgresql", PROD)
    assert gone["file"] + ".json" in raised.value.msg and "missing" in raised.value.msg
    # Another database's broken backup is none of ours.
    assert BackupStore(str(tmp_path)).newest("default-shop", "postgresql", STAGING) is None


def test_without_a_database_the_listing_is_as_before(tmp_path):
    put(str(tmp_path), stamped(PROD, 1, "20261207T010000000000Z"))
    put(str(tmp_path), stamped(STAGING, 1, "20261207T020000000000Z"))
    with open(os.path.join(str(tmp_path), "default-shop-postgresql-x.pgdump.json"), "w") as handle:
        handle.write("{")
    assert len(BackupStore(str(tmp_path)).list("default-shop", "postgresql")) == 2


class SqliteStub:
    """Just enough of an SQLite Engine for the store's write: no database behind it."""

    name = "sqlite"

    def __init__(self, server):
        self.server = server
        self.connection = Connection("sqlite", "/srv/app/db.sqlite3")

    def check_format(self, fmt):
        return "sqlite"

    def describe(self):
        return "sqlite database /srv/app/db.sqlite3"

    def tool_versions(self):
        return {"sqlite": "3.40.1"}

    def instance_identity(self):
        return {"engine": "sqlite", "host": None, "port": None, "name": "/srv/app/db.sqlite3",
                "server": self.server}

    def dump(self, out, fmt=None, jobs=1):
        out.write(b"SQLite format 3\x00" + b"\x00" * 4080)


def test_writes_number_each_databases_backups_in_the_order_they_complete(tmp_path):
    store = BackupStore(str(tmp_path))
    here, there = SqliteStub("sqlite:host-a"), SqliteStub("sqlite:host-b")
    first = store.write("default-db.sqlite3", here, compression="none")
    other = store.write("default-db.sqlite3", there, compression="none")
    second = store.write("default-db.sqlite3", here, compression="none")
    assert (first["sequence"], other["sequence"], second["sequence"]) == (1, 1, 2)
    assert first["instance"]["server"] == "sqlite:host-a"
    on_disk = json.load(open(second["path"] + ".json"))
    assert on_disk["sequence"] == 2 and on_disk["instance"] == here.instance_identity()
    assert store.newest("default-db.sqlite3", here)["file"] == second["file"]
    assert store.newest("default-db.sqlite3", there)["file"] == other["file"]
    assert not [n for n in os.listdir(str(tmp_path)) if n.startswith(".")]  # no lock file left
