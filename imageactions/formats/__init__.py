"""Disk-image format detection and safety inspection, in pure Python: reads headers and bounded
tables only, so inspecting a multi-GiB image costs milliseconds and never runs qemu."""

from .errors import FormatMismatchError, ImageFormatError, MalformedImageError, NotADiskImageError, UnsafeImageError
from .inspect import inspect_image, normalise_declared_format, sniff_format
from .inspection import DISK_FORMATS, Inspection

__all__ = [
    "DISK_FORMATS",
    "FormatMismatchError",
    "ImageFormatError",
    "Inspection",
    "MalformedImageError",
    "NotADiskImageError",
    "UnsafeImageError",
    "inspect_image",
    "normalise_declared_format",
    "sniff_format",
]
