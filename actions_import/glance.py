"""Glance's interoperable import methods, carried out as imports into an existing image record:
"web-download" fetches a URL, "glance-direct" takes uploaded bytes (staged first, or sent to
PUT /v2/images/{id}/file)."""

from imageactions.pipeline import ImportMethod, ImportRequest

from .serializers import UPLOAD


def _into_record(request: ImportRequest) -> dict:
    # The record keeps its own fields; the declared disk format is what the bytes are checked against.
    properties = {"name": request.image.get("name") or ""}
    if request.image.get("disk_format"):
        properties["disk_format"] = request.image["disk_format"]
    return {
        "image_id": request.image["id"],
        "image_properties": properties,
        "stores": request.stores,
        "all_stores_must_succeed": request.all_stores_must_succeed,
    }


def web_download(request: ImportRequest) -> dict:
    return {**_into_record(request), "location": request.method.get("uri") or ""}


def glance_direct(request: ImportRequest) -> dict:
    # Staged bytes wait for POST .../import; bytes sent to .../file are imported at once.
    return {**_into_record(request), "source": UPLOAD, "hold_after_data": bool(request.method.get("stage"))}


IMPORT_METHODS = {"web-download": ImportMethod(web_download), "glance-direct": ImportMethod(glance_direct)}
