"""Image stores, where image bytes live: the configured stores by name (settings.IMAGE_STORES),
and the staging store (settings.STAGING_STORE) where actions keep their bytes between steps."""

import json
import os
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .base import (
    ImageStore,
    InvalidKey,
    ObjectNotFound,
    ProgressCallback,
    StoreError,
    StoreUnavailable,
)
from .filesystem import FilesystemStore

__all__ = [
    "FilesystemStore",
    "ImageStore",
    "InvalidKey",
    "ObjectNotFound",
    "ProgressCallback",
    "StoreError",
    "StoreUnavailable",
    "all_stores",
    "build_s3_client",
    "default_store",
    "get_store",
    "staging_store",
]

# Imported when a store of the type is first built: boto3 and botocore add some 30 MiB to each
# process that imports them, which a service without S3 stores or sources need not pay.
STORE_TYPES = {"filesystem": "imageactions.stores.filesystem.FilesystemStore", "s3": "imageactions.stores.s3.S3Store"}


def build_s3_client(**options):
    """A boto3 S3 client; the options are imageactions.stores.s3.build_s3_client's."""
    from .s3 import build_s3_client

    return build_s3_client(**options)


def get_store(name: str) -> ImageStore:
    """The store configured as IMAGE_STORES[name]; StoreError when there is none."""
    config = settings.IMAGE_STORES.get(name)
    if config is None:
        known = ", ".join(f"'{known}'" for known in settings.IMAGE_STORES) or "none"
        raise StoreError(f"There is no image store named '{name}' (configured stores: {known})")
    # Keyed by the configuration too, so a changed setting (tests) builds a new store; and by
    # process, because a forked worker must not share the parent's open connections.
    return _build_store(name, json.dumps(config, sort_keys=True, default=str), os.getpid())


# The name the staging store's messages give it, and where its objects live in its bucket when
# the setting says no "prefix".
STAGING_STORE_NAME = "staging"
DEFAULT_STAGING_PREFIX = "staging/"


def staging_store():
    """The S3Store of settings.STAGING_STORE (IMAGEACTIONS_STAGING_STORE), None when unset: then
    staged bytes stay in the worker's scratch directory."""
    config = settings.STAGING_STORE
    if not config:
        return None
    config = {"prefix": DEFAULT_STAGING_PREFIX, **config}
    return _build_store(STAGING_STORE_NAME, json.dumps(config, sort_keys=True, default=str), os.getpid())


def check_staging_store() -> None:
    """Build the staging store once at start, so a bad IMAGEACTIONS_STAGING_STORE stops the
    service with its reason instead of failing imports."""
    try:
        staging_store()
    except ImproperlyConfigured as error:
        reason = str(error).replace(f"IMAGE_STORES[{STAGING_STORE_NAME!r}]", "IMAGEACTIONS_STAGING_STORE")
        raise ImproperlyConfigured(f"IMAGEACTIONS_STAGING_STORE is not a valid S3 store: {reason}") from None


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
    return import_string(store_type).from_config(name, config)
