"""The plugin surface: everything an action type's app needs from the core, and nothing else.

An action type's app registers itself in its AppConfig.ready() with `register(ActionType(...))`
and imports only from this package (an import contract in pyproject.toml keeps it so): the
declarations, the step context its steps receive, the errors that end a step, the stores, the
byte-moving and image-inspecting helpers, the steps several types share, and the models it
queries. The rest of `imageactions` is private to the core.
"""

from ..choices import ActionStatus, ErrorCode, ImageStatus, Visibility
from ..formats import ImageFormatError, Inspection, normalise_declared_format, sniff_format
from ..formats.compression import detect_compression, open_decompressed
from ..formats.convert import qemu_format_name
from ..formats.errors import describe_size, human_size
from ..images import AWAITING_BYTES, add_locations, create_image, fill_image, image_facts, import_failed
from ..metrics import EXPORTED, RECEIVED, bytes_moved
from ..models import Image, ImageAction
from ..policy import allowed, needed_roles
from ..projects import owner_of, visible_to
from ..quotas import QuotaExceeded, check_stored_bytes, import_size_cap, quota_exceeded
from ..stores import (
    ImageStore,
    InvalidKey,
    ObjectNotFound,
    StoreError,
    StoreUnavailable,
    all_stores,
    build_s3_client,
)
from ..stores.base import validate_key
from ..swift import SwiftError, SwiftObjectChanged, client_for_host
from ..transfer import (
    CHUNK_SIZE,
    HEX_LENGTHS,
    IMAGE_HASHES,
    ParallelHasher,
    SizeLimitExceeded,
    TransferError,
    TransferResult,
    check_announced_size,
    copy_to_file,
    hash_file,
)
from ..urlpolicy import UnresolvableHost, UrlPolicy, UrlRefused
from ..validators import (
    CONFLICT,
    FORBIDDEN,
    MAX_IMAGE_NAME_LENGTH,
    MAX_IMAGE_PROPERTIES,
    MAX_IMAGE_TAGS,
    MAX_PROPERTY_KEY_LENGTH,
    MAX_PROPERTY_VALUE_LENGTH,
    MAX_STORED_INT,
    MAX_TAG_LENGTH,
    NOT_FOUND,
    validate_image_properties,
    validate_store_names,
    whole_number,
)
from .context import StepContext
from .disk_images import (
    CONVERSION_FORMATS,
    convert_image_file,
    discard_unowned,
    image_file,
    inspect_and_verify,
    inspection_state,
    staging_failed,
    store_image_file,
    stored_locations,
)
from .errors import ActionCancelled, RetryableStepError, StepError, error_code_of, step_error_of
from .http import pinned_session, translated_request_errors
from .registry import (
    ActionType,
    ImportMethod,
    ImportRequest,
    Step,
    StoredFile,
    action_types,
    get_action_type,
    register,
    safe_filename,
    step_statuses,
)
from .schema import refine_schema
from .staging import (
    discard_staged,
    inspect_staged,
    local_copy,
    mark_cached,
    stage_file,
    staged_file,
    staged_object,
    staging_enabled,
    staging_upload,
)

__all__ = [
    "refine_schema",
    "CONFLICT",
    "FORBIDDEN",
    "NOT_FOUND",
    "ErrorCode",
    "error_code_of",
    "step_error_of",
    "whole_number",
    "import_size_cap",
    "check_stored_bytes",
    "QuotaExceeded",
    "quota_exceeded",
    "SizeLimitExceeded",
    "normalise_declared_format",
    "sniff_format",
    "EXPORTED",
    "RECEIVED",
    "bytes_moved",
    # declaring an action type
    "ActionType",
    "ImportMethod",
    "ImportRequest",
    "Step",
    "StoredFile",
    "action_types",
    "get_action_type",
    "register",
    "step_statuses",
    # running a step
    "ActionCancelled",
    "RetryableStepError",
    "StepContext",
    "StepError",
    # shared steps on image bytes
    "CONVERSION_FORMATS",
    "convert_image_file",
    "discard_unowned",
    "image_file",
    "inspect_and_verify",
    "inspection_state",
    "safe_filename",
    "store_image_file",
    "stored_locations",
    # staged bytes between steps (a staging store, or the worker's scratch directory)
    "discard_staged",
    "inspect_staged",
    "local_copy",
    "mark_cached",
    "stage_file",
    "staged_file",
    "staged_object",
    "staging_enabled",
    "staging_failed",
    "staging_upload",
    # records
    "ActionStatus",
    "Image",
    "ImageAction",
    "ImageStatus",
    "Visibility",
    "AWAITING_BYTES",
    "add_locations",
    "create_image",
    "fill_image",
    "import_failed",
    "image_facts",
    "owner_of",
    "visible_to",
    "allowed",
    "needed_roles",
    # stores
    "ImageStore",
    "InvalidKey",
    "ObjectNotFound",
    "StoreError",
    "StoreUnavailable",
    "all_stores",
    "build_s3_client",
    "validate_key",
    # moving and hashing bytes
    "CHUNK_SIZE",
    "HEX_LENGTHS",
    "IMAGE_HASHES",
    "ParallelHasher",
    "TransferError",
    "TransferResult",
    "check_announced_size",
    "copy_to_file",
    "hash_file",
    # disk formats
    "ImageFormatError",
    "Inspection",
    "describe_size",
    "detect_compression",
    "human_size",
    "open_decompressed",
    "qemu_format_name",
    # reaching other hosts
    "SwiftError",
    "SwiftObjectChanged",
    "UnresolvableHost",
    "UrlPolicy",
    "UrlRefused",
    "client_for_host",
    "pinned_session",
    "translated_request_errors",
    # limits on what users attach to images
    "MAX_IMAGE_NAME_LENGTH",
    "MAX_IMAGE_PROPERTIES",
    "MAX_IMAGE_TAGS",
    "MAX_PROPERTY_KEY_LENGTH",
    "MAX_PROPERTY_VALUE_LENGTH",
    "MAX_STORED_INT",
    "MAX_TAG_LENGTH",
    "validate_image_properties",
    "validate_store_names",
]
