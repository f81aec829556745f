"""Image stores, where image bytes live: the configured stores by name (settings.IMAGE_STORES)."""

import json
import os
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .base import (
    ImageStore,
    InvalidKey,
    ObjectNotFound,
    ProgressCallback,
    StoreError,
    StoreUnavailable,
)
from .filesystem import FilesystemStore
from .s3 import S3Store, build_s3_client

__all__ = [
    "FilesystemStore",
    "ImageStore",
    "InvalidKey",
    "ObjectNotFound",
    "ProgressCallback",
    "S3Store",
    "StoreError",
    "StoreUnavailable",
    "all_stores",
    "build_s3_client",
    "default_store",
    "get_store",
]

STORE_TYPES = {"filesystem": FilesystemStore, "s3": S3Store}


def get_store(name: str) -> ImageStore:
    """The store configured as IMAGE_STORES[name]; StoreError when there is none."""
    config = settings.IMAGE_STORES.get(name)
    if config is None:
        known = ", ".join(f"'{known}'" for known in settings.IMAGE_STORES) or "none"
        raise StoreError(f"There is no image store named '{name}' (configured stores: {known})")
    # Keyed by the configuration too, so a changed setting (tests) builds a new store; and by
    # process, because a forked worker must not share the parent's open connections.
    return _build_store(name, json.dumps(config, sort_keys=True, default=str), os.getpid())


def default_store() -> ImageStore:
    return get_store(settings.DEFAULT_IMAGE_STORE)


def all_stores() -> list[ImageStore]:
    return [get_store(name) for name in settings.IMAGE_STORES]


@lru_cache(maxsize=64)
def _build_store(name: str, config_json: str, pid: int) -> ImageStore:
    config = json.loads(config_json)
    if not isinstance(config, dict):
        raise ImproperlyConfigured(f"IMAGE_STORES[{name!r}] must be an object with a 'type', got {config!r}")
    store_type = STORE_TYPES.get(config.get("type"))
    if store_type is None:
        raise ImproperlyConfigured(
            f"IMAGE_STORES[{name!r}] has unknown 'type' {config.get('type')!r} (known: {', '.join(STORE_TYPES)})"
        )
    return store_type.from_config(name, config)
