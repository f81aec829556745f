"""docs/deploy.md's "Several hosts, no shared filesystem" is what tests/multihost runs: its shell
blocks parse, name every kind of host, and have no value the tests do not fill. (The hosts
are started from these blocks, hosts.Layout.add; test_multihost.py checks that the settings
reach the running processes.)"""

import json

from tests.objectstore import ObjectStoreServer

from .conftest import HOST_PLACEHOLDERS, placeholder_values
from .hosts import fill, read_layout_doc

EXAMPLE_STORE = ObjectStoreServer("http://127.0.0.1:1", "key", "secret", "us-east-1", "", "", "", "", "bucket", None)


def test_the_layout_section_has_a_block_for_every_kind_of_host_and_the_settings_they_add():
    doc = read_layout_doc()
    assert set(doc.commands) == {"api", "edge", "core", "maintenance"}
    assert doc.commands["edge"][-3:] == ["worker", "--pool", "edge"]
    assert doc.commands["core"][-1] == "worker"
    assert doc.commands["maintenance"][-1] == "clean_staging"
    assert set(doc.environment) == {"IMAGEACTIONS_STAGING_STORE", "IMAGEACTIONS_STEP_POOLS", "IMAGEACTIONS_DATA_DIR"}
    assert json.loads(doc.environment["IMAGEACTIONS_STEP_POOLS"]) == {
        "import.fetch": "edge",
        "import.verify": "edge",
        "import.convert": "edge",
    }


def test_every_value_in_angle_brackets_is_one_the_tests_fill():
    doc = read_layout_doc()
    known = {**placeholder_values(EXAMPLE_STORE), **dict.fromkeys(HOST_PLACEHOLDERS, "x")}
    assert doc.placeholders() == set(known)
    staging = json.loads(fill(doc.environment["IMAGEACTIONS_STAGING_STORE"], known))
    assert staging["type"] == "s3" and staging["prefix"] == "staging/"
