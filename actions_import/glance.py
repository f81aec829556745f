"""Glance's interoperable import methods, carried out as imports into an existing image record:
"web-download" fetches a URL, "glance-direct" takes uploaded bytes (staged first, or sent to
PUT /v2/images/{id}/file)."""

from .serializers import UPLOAD


def _image_properties(image: dict) -> dict:
    # The record keeps its own fields; the declared disk format is what the bytes are checked against.
    properties = {"name": image.get("name") or ""}
    if image.get("disk_format"):
        properties["disk_format"] = image["disk_format"]
    return properties


def web_download(image: dict, method: dict) -> dict:
    return {"location": method.get("uri") or "", "image_id": image["id"], "image_properties": _image_properties(image)}


def glance_direct(image: dict, method: dict) -> dict:
    # Staged bytes wait for POST .../import; bytes sent to .../file are imported at once.
    return {
        "source": UPLOAD,
        "image_id": image["id"],
        "hold_after_data": bool(method.get("stage")),
        "image_properties": _image_properties(image),
    }


IMPORT_METHODS = {"web-download": web_download, "glance-direct": glance_direct}
