"""Errors the format inspector raises, and the helpers that write their messages for users."""


class ImageFormatError(Exception):
    """The image was refused; str(error) is a message written for the user."""


class NotADiskImageError(ImageFormatError):
    """The data is something else: a video, a document, compressed data, text, nothing."""


class UnsafeImageError(ImageFormatError):
    """The image is a disk image, but using it could read other files or exceed a limit."""


class FormatMismatchError(UnsafeImageError):
    """The image is another disk format than the one declared."""


class MalformedImageError(ImageFormatError):
    """The image is truncated or its header holds values no valid image has."""


_SIZE_UNITS = (
    ("EiB", 1 << 60),
    ("PiB", 1 << 50),
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
)


def human_size(size: int) -> str:
    """'64 MiB', '1.5 TiB', '512 bytes': sizes as people read them."""
    for unit, factor in _SIZE_UNITS:
        if size >= factor:
            amount = f"{size / factor:.1f}".removesuffix(".0")
            return f"{amount} {unit}"
    return f"{size} bytes"


def describe_size(size: int) -> str:
    """A human size with the exact byte count, for messages that compare sizes."""
    if size < 1024:
        return f"{size} bytes"
    return f"{human_size(size)} ({size} bytes)"


def printable(text: str) -> str:
    """`text` with every control character (line breaks too) written as its escape."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def quoted(value: bytes | str, limit: int = 200) -> str:
    """A value taken from hostile bytes, quoted and made safe to show: no control characters,
    no unbounded length."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    shown = printable(value)
    if len(shown) > limit:
        shown = shown[:limit] + "…"
    return f"'{shown}'"
