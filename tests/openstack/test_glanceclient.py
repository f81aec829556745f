"""python-glanceclient's command line, unchanged, against ImageActions: discovery, both
interoperable import methods, list, show, download with its checksum check, tags, delete."""

import hashlib
import re
import subprocess
import time

from tests.import_.conftest import random_image
from tests.openstack.conftest import backing_file_qcow2, ok, wait_for_image

MiB = 1024 * 1024


def image_id_in(table: str) -> str:
    return re.search(r"\|\s*id\s*\|\s*([0-9a-f-]{36})\s*\|", table).group(1)


def unwrapped(table: str) -> str:
    """The value column of a glanceclient table, its wrapped lines joined again."""
    cells = [
        line.rstrip().rstrip("|").rsplit("|", 1)[-1].strip() for line in table.splitlines() if line.startswith("|")
    ]
    return "".join(cells)


def qcow2_bytes(tmp_path, size="16M") -> bytes:
    path = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path.read_bytes()


def import_from_url(clients, name: str, url: str) -> str:
    """`glance image-create-via-import` with web-download; the table it prints."""
    return ok(
        clients.glance(
            "image-create-via-import", "--name", name, "--disk-format", "qcow2", "--container-format", "bare",
            "--import-method", "web-download", "--uri", url,
        )
    )  # fmt: skip


def test_glance_finds_the_import_methods_and_the_stores(clients):
    methods = unwrapped(ok(clients.glance("import-info")))
    assert '"value": ["copy-image", "glance-direct", "web-download"]' in methods
    assert "local" in ok(clients.glance("stores-info"))


def test_web_download_import_then_show_list_tag_download_and_delete(clients, alice, image_server, tmp_path):
    data = qcow2_bytes(tmp_path)
    url = image_server.add("glance-web.qcow2", data)

    created = import_from_url(clients, "from the web", url)
    image_id = image_id_in(created)
    image = wait_for_image(alice, image_id)
    assert image["status"] == "active", image
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert image["checksum"] == hashlib.md5(data).hexdigest()
    assert image["virtual_size"] == 16 * MiB

    shown = ok(clients.glance("image-show", image_id))
    assert "active" in shown and "from the web" in shown
    assert image_id in ok(clients.glance("image-list"))
    # The import is an image action, listed with the image's tasks and in /v2/image-actions.
    [task] = alice.get(f"/v2/images/{image_id}/tasks").json()["tasks"]
    assert task["status"] == "success"
    assert [a["id"] for a in alice.get("/v2/image-actions", {"image_id": image_id}).json()["results"]] == [task["id"]]

    ok(clients.glance("image-download", "--file", str(tmp_path / "out.qcow2"), image_id))  # checks os_hash_value
    assert (tmp_path / "out.qcow2").read_bytes() == data

    ok(clients.glance("image-tag-update", image_id, "gold"))
    assert alice.get(f"/v2/images/{image_id}").json()["tags"] == ["gold"]
    ok(clients.glance("image-tag-delete", image_id, "gold"))
    assert alice.get(f"/v2/images/{image_id}").json()["tags"] == []

    ok(clients.glance("image-delete", image_id))
    assert alice.get(f"/v2/images/{image_id}").status_code == 404


def test_glance_direct_import_of_a_local_file(clients, alice, tmp_path):
    data = random_image(3 * MiB + 5, seed=11)
    path = tmp_path / "disk.raw"
    path.write_bytes(data)

    created = ok(
        clients.glance(
            "image-create-via-import",
            "--name",
            "uploaded",
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "--file",
            str(path),
        )
    )
    image = wait_for_image(alice, image_id_in(created))
    assert image["status"] == "active", image
    assert (image["size"], image["os_hash_value"]) == (len(data), hashlib.sha512(data).hexdigest())


def test_a_hostile_image_ends_queued_with_the_failed_import_and_the_reason_in_its_action(
    clients, alice, image_server, tmp_path
):
    url = image_server.add("hostile.qcow2", backing_file_qcow2(tmp_path).read_bytes())
    created = import_from_url(clients, "hostile", url)
    image_id = image_id_in(created)
    image = wait_for_image(alice, image_id, statuses=())
    assert image["status"] == "queued"
    assert image["os_glance_failed_import"] == "local"
    assert "os_glance_failed_import" in ok(clients.glance("image-show", image_id))
    [action] = alice.get("/v2/image-actions", {"image_id": image_id}).json()["results"]
    assert action["status"] == "failure"
    assert "backing file" in action["message"]


def test_glance_imports_into_two_stores_copies_to_a_third_and_deletes_from_one(
    multistore_clients, alice, image_server, tmp_path
):
    clients, data = multistore_clients, qcow2_bytes(tmp_path)
    url = image_server.add("multi.qcow2", data)
    stores_info = ok(clients.glance("stores-info"))
    assert all(name in stores_info for name in ("home", "away", "far"))

    created = ok(
        clients.glance(
            "image-create-via-import", "--name", "multi", "--disk-format", "qcow2", "--container-format", "bare",
            "--import-method", "web-download", "--uri", url, "--stores", "home,away",
        )
    )  # fmt: skip
    image_id = image_id_in(created)
    image = wait_for_image(alice, image_id)
    assert (image["status"], image["stores"]) == ("active", "home,away"), image

    ok(clients.glance("image-import", image_id, "--import-method", "copy-image", "--stores", "far"))
    deadline = time.monotonic() + 60
    while alice.get(f"/v2/images/{image_id}").json()["stores"] != "home,away,far":
        assert time.monotonic() < deadline, alice.get(f"/v2/images/{image_id}").json()
        time.sleep(0.2)
    assert (tmp_path / "far" / "images").exists()

    ok(clients.glance("stores-delete", "--store", "home", image_id))
    shown = unwrapped(ok(clients.glance("image-show", image_id)))
    assert "away,far" in shown
    saved = tmp_path / "saved.qcow2"
    ok(clients.glance("image-download", "--file", str(saved), image_id))
    assert saved.read_bytes() == data
