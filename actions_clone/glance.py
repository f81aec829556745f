"""Glance's copy-image import method: a clone of an active image whose verified copies become
more locations of that image."""

from imageactions.pipeline import ImportMethod, ImportRequest


def copy_image(request: ImportRequest) -> dict:
    return {
        "image_id": request.image["id"],
        "stores": request.stores,
        "same_image": True,
        "all_stores_must_succeed": request.all_stores_must_succeed,
    }


IMPORT_METHODS = {"copy-image": ImportMethod(copy_image, copies_active_image=True)}
