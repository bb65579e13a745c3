"""The version a manifest records is the collection's own (galaxy.yml): the modules run from
an AnsiballZ payload that has no galaxy.yml to read, so the constant is checked here."""
import os

import yaml

from ansible_collections.dbsafe.django.plugins.module_utils.backup_write import DBSAFE_VERSION

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_manifests_record_the_version_of_galaxy_yml():
    with open(os.path.join(ROOT, "galaxy.yml")) as handle:
        assert DBSAFE_VERSION == yaml.safe_load(handle)["version"]
