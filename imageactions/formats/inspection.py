"""The result of inspecting an image, and the disk-format names it uses."""

from dataclasses import dataclass, field

# Names as qemu-img and Glance use them; "vhd" is accepted as a synonym of "vpc" on input.
DISK_FORMATS = ("raw", "qcow2", "vmdk", "vpc", "vhdx", "vdi", "iso")

# qemu keeps sizes in signed 64-bit integers; any header claiming more is nonsense.
LARGEST_VIRTUAL_SIZE = (1 << 63) - 1


@dataclass(frozen=True)
class Inspection:
    format: str  # one of DISK_FORMATS
    virtual_size: int | None  # bytes the guest sees; the file size for raw and iso
    details: dict = field(default_factory=dict)


def with_article(format_name: str) -> str:
    """'a qcow2 image', 'an iso image', 'raw data' — for messages naming a format."""
    if format_name == "raw":
        return "raw data with no disk-format header"
    article = "an" if format_name[0] in "aeio" else "a"
    return f"{article} {format_name} image"
