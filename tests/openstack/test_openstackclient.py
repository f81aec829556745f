"""python-openstackclient (`openstack image ...`), unchanged, against ImageActions with a token
and endpoint: create with --import from a file, list, save, delete; a hostile upload fails visibly."""

import hashlib
import json

from tests.import_.conftest import random_image
from tests.openstack.conftest import backing_file_qcow2, json_out, ok, wait_for_image

MiB = 1024 * 1024


def test_openstack_image_create_import_list_save_and_delete(clients, alice, tmp_path):
    data = random_image(2 * MiB + 7, seed=21)
    path = tmp_path / "disk.raw"
    path.write_bytes(data)

    created = json_out(
        clients.openstack(
            "image", "create", "--import", "--file", str(path), "--disk-format", "raw",
            "--container-format", "bare", "-f", "json", "osc-image",
        )
    )  # fmt: skip
    image = wait_for_image(alice, created["id"])
    assert image["status"] == "active", image
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()

    listed = json_out(clients.openstack("image", "list", "-f", "json"))
    assert {"ID": created["id"], "Name": "osc-image", "Status": "active"} in listed

    ok(clients.openstack("image", "save", "--file", str(tmp_path / "saved.raw"), "osc-image"))
    assert (tmp_path / "saved.raw").read_bytes() == data

    ok(clients.openstack("image", "delete", "osc-image"))
    assert alice.get(f"/v2/images/{created['id']}").status_code == 404


def test_a_hostile_image_imported_with_openstack_ends_queued_with_the_failure(clients, alice, tmp_path):
    path = backing_file_qcow2(tmp_path)
    created = json.loads(
        ok(
            clients.openstack(
                "image", "create", "--import", "--file", str(path), "--disk-format", "qcow2",
                "--container-format", "bare", "-f", "json", "hostile",
            )
        )
    )  # fmt: skip
    image = wait_for_image(alice, created["id"], statuses=())
    assert image["status"] == "queued"
    assert image["os_glance_failed_import"] == "local"
    [action] = alice.get("/v2/image-actions", {"image_id": created["id"]}).json()["results"]
    assert "backing file" in action["message"]
