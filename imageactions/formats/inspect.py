"""Disk-image inspection: which format the bytes are, whether that matches what the user
declared, and whether it is safe to hand to qemu-img — from headers alone, never the whole file."""

import os

from . import iso, qcow2, raw, vdi, vhdx, vmdk, vpc
from .errors import (
    FormatMismatchError,
    ImageFormatError,
    NotADiskImageError,
    UnsafeImageError,
    describe_size,
    quoted,
)
from .inspection import DISK_FORMATS, Inspection, with_article
from .reader import HEAD_SIZE, ImageReader
from .signatures import (
    TEXT_SAMPLE_SIZE,
    describe_non_image,
    describe_text,
    describe_unaccepted_disk_format,
    looks_like_text,
)

DECLARED_FORMAT_SYNONYMS = {"vhd": "vpc"}

INSPECTORS = {
    "raw": raw.inspect_raw,
    "qcow2": qcow2.inspect_qcow2,
    "vmdk": vmdk.inspect_vmdk,
    "vpc": vpc.inspect_vpc,
    "vhdx": vhdx.inspect_vhdx,
    "vdi": vdi.inspect_vdi,
    "iso": iso.inspect_iso,
}


def inspect_image(
    path: str | os.PathLike, *, declared_format: str | None = None, max_virtual_size: int | None = None
) -> Inspection:
    """Detect the image's format, run every safety check, and compare with the declared format
    (None: any). Raises an ImageFormatError subclass whose text is for the user."""
    with ImageReader.open(path) as reader:
        return inspect_open_image(reader, declared_format=declared_format, max_virtual_size=max_virtual_size)


def inspect_open_image(
    reader: ImageReader, *, declared_format: str | None = None, max_virtual_size: int | None = None
) -> Inspection:
    """inspect_image() on an image already open, whose reader counts the bytes read."""
    declared = normalise_declared_format(declared_format)
    detected = detect_format(reader)
    if declared is not None and declared != detected:
        raise FormatMismatchError(
            f"The image was declared as {declared} but its data is {with_article(detected)}. "
            "Declare the format the image really has, or upload the image you meant to."
        )
    inspection = INSPECTORS[detected](reader)
    check_virtual_size(inspection, max_virtual_size)
    return inspection


def normalise_declared_format(declared_format: str | None) -> str | None:
    if declared_format is None:
        return None
    name = declared_format.strip().lower()
    name = DECLARED_FORMAT_SYNONYMS.get(name, name)
    if name not in DISK_FORMATS:
        raise ImageFormatError(
            f"The declared disk format {quoted(declared_format)} is not accepted; "
            f"use one of {', '.join(DISK_FORMATS)} (or vhd for vpc)."
        )
    return name


def detect_format(reader: ImageReader) -> str:
    """The one disk format whose signature the data carries, 'raw' for none; refuses data that
    is no disk image and data that carries the signatures of several formats."""
    if reader.size == 0:
        raise NotADiskImageError("The image is empty (0 bytes); upload the disk image's data.")
    return _format_of(reader.head, reader.tail)


def sniff_format(head: bytes) -> str:
    """The disk format the first bytes of an image show, refusing what detect_format() refuses
    from them; without the end of the file a VHD whose only footer is at the end reads as raw."""
    if not head:
        raise NotADiskImageError("The image is empty (0 bytes); upload the disk image's data.")
    return _format_of(head[:HEAD_SIZE], b"")


def _format_of(head: bytes, tail: bytes) -> str:
    unaccepted = describe_unaccepted_disk_format(head, tail)
    if unaccepted:
        raise UnsafeImageError(unaccepted)
    found = formats_with_signatures(head, tail)
    if len(found) > 1:
        # Data that is two formats at once is read differently by different tools: the
        # qcow2-inside-an-ISO or VHD-footer-on-a-qcow2 tricks. No genuine image is both.
        names = " and ".join(sorted(found))
        raise UnsafeImageError(
            f"The data carries the headers of several disk formats ({names}); such ambiguous images are refused."
        )
    if found:
        return found.pop()
    non_image = describe_non_image(head)
    if non_image:
        raise NotADiskImageError(non_image)
    if looks_like_text(head[:TEXT_SAMPLE_SIZE]):
        if vmdk.looks_like_descriptor(head.decode("utf-8", errors="replace")):
            return "vmdk"
        raise NotADiskImageError(describe_text(head))
    return "raw"


def formats_with_signatures(head: bytes, tail: bytes) -> set[str]:
    """Every format whose signature is where that format keeps it — including the places that
    make bytes declared as raw dangerous, since a tool that probes would open them as that format."""
    found = set()
    if qcow2.has_qcow2_magic(head):
        found.add("qcow2")
    if vmdk.has_sparse_magic(head) or vmdk.looks_like_descriptor_to_qemu(head):
        found.add("vmdk")
    if vpc.has_footer_copy_at_start(head) or vpc.has_footer_at_end(tail):
        found.add("vpc")
    if vhdx.has_vhdx_signature(head):
        found.add("vhdx")
    if vdi.has_vdi_signature(head):
        found.add("vdi")
    if iso.has_volume_descriptor(head):
        found.add("iso")
    return found


def check_virtual_size(inspection: Inspection, max_virtual_size: int | None) -> None:
    size = inspection.virtual_size
    if max_virtual_size is None or size is None or size <= max_virtual_size:
        return
    raise UnsafeImageError(
        f"The image's virtual size is {describe_size(size)}, more than the {describe_size(max_virtual_size)} "
        "allowed; upload a smaller disk or ask an operator to raise the limit."
    )
