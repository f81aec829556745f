"""openstacksdk, unchanged, against ImageActions with a token and endpoint: create_image with
use_import from a file and from a URL, download_image with its checksum check, delete_image."""

import hashlib

from tests.import_.conftest import random_image
from tests.openstack.conftest import backing_file_qcow2, wait_for_image

MiB = 1024 * 1024


def test_sdk_imports_from_a_file_and_a_url_downloads_and_deletes(clients, alice, image_server, tmp_path):
    conn = clients.sdk()
    data = random_image(MiB + 3, seed=31)
    path = tmp_path / "disk.raw"
    path.write_bytes(data)

    from_file = conn.image.create_image(
        name="sdk-file", filename=str(path), disk_format="raw", container_format="bare", use_import=True
    )
    url = image_server.add("sdk.raw", data)
    from_url = conn.image.create_image(
        name="sdk-url",
        disk_format="raw",
        container_format="bare",
        use_import=True,
        import_method="web-download",
        uri=url,
    )
    for image_id in (from_file.id, from_url.id):
        image = wait_for_image(alice, image_id)
        assert image["status"] == "active", image
        assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()
        assert conn.image.get_image(image_id).status == "active"

    response = conn.image.download_image(from_url.id)  # verifies os_hash_value as it reads
    assert response.content == data
    conn.image.download_image(from_file.id, output=str(tmp_path / "out.raw"))
    assert (tmp_path / "out.raw").read_bytes() == data

    assert {"sdk-file", "sdk-url"} <= {image.name for image in conn.image.images()}
    conn.image.delete_image(from_file.id)
    conn.image.delete_image(from_url.id)
    assert alice.get("/v2/images", {"name": "sdk-url"}).json()["images"] == []


def test_a_hostile_image_imported_with_the_sdk_shows_the_failed_import(clients, alice, tmp_path):
    conn = clients.sdk()
    path = backing_file_qcow2(tmp_path)
    image = conn.image.create_image(
        name="sdk-hostile", filename=str(path), disk_format="qcow2", container_format="bare", use_import=True
    )
    shown = wait_for_image(alice, image.id, statuses=())
    assert shown["status"] == "queued"
    assert conn.image.get_image(image.id).properties["os_glance_failed_import"] == "local"
