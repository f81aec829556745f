"""Recognises data that is not an accepted disk image — videos, documents, archives,
compressed data, text, disk formats this service does not take — so refusals say what it is."""

import codecs
import re

from .inspection import DISK_FORMATS

TEXT_SAMPLE_SIZE = 4096
TEXT_MIN_PRINTABLE = 0.95

# (offset, magic, what the data looks like). Checked in order; all at the start of the file.
NON_IMAGE_SIGNATURES = (
    (4, b"ftypqt  ", "a QuickTime video"),
    (4, b"ftyphei", "a HEIF image"),
    (4, b"ftypavif", "an AVIF image"),
    (4, b"ftyp", "an MP4 video"),  # ISO base media file: size, then the ftyp box
    (0, b"\x1a\x45\xdf\xa3", "a Matroska/WebM video"),  # EBML header element ID
    (0, b"OggS", "an Ogg audio or video file"),
    (0, b"ID3", "an MP3 audio file"),
    (0, b"fLaC", "a FLAC audio file"),
    (0, b"PK\x03\x04", "a ZIP archive (or a docx/xlsx/jar file)"),
    (0, b"PK\x05\x06", "an empty ZIP archive"),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (0, b"Rar!\x1a\x07", "a RAR archive"),
    (257, b"ustar", "a tar archive"),  # POSIX tar header magic; an OVA is one too
    (0, b"%PDF-", "a PDF document"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a Microsoft Office document"),
    (0, b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (0, b"GIF87a", "a GIF image"),
    (0, b"GIF89a", "a GIF image"),
    (0, b"\x7fELF", "an ELF executable"),
    (0, b"SQLite format 3\x00", "an SQLite database"),
)
RIFF_KINDS = {b"AVI ": "an AVI video", b"WAVE": "a WAV audio file", b"WEBP": "a WebP image"}

COMPRESSION_SIGNATURES = (
    (b"\x1f\x8b\x08", "gzip"),  # ID1, ID2, CM=8 (deflate, the only method defined)
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)

# Disk formats qemu would open that this service does not accept, by their magic at offset 0.
UNACCEPTED_DISK_SIGNATURES = (
    (b"QED\x00", "QED"),  # QEDHeader.magic
    (b"LUKS\xba\xbe", "LUKS-encrypted"),  # LUKS phdr magic
    (b"Bochs Virtual HD Image", "Bochs"),
    (b"WithoutFreeSpace", "Parallels"),
    (b"WithouFreSpacExt", "Parallels"),
    (b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop", "cloop"),
    (b"\xbe\xba\xfe\xca\x00\x00\x00\x00", "VMware seSparse"),  # const header magic 0xcafebabe, LE u64
)
DMG_TRAILER_MAGIC = b"koly"  # UDIF trailer, the file's last 512 bytes

HTML_START = re.compile(rb"\s*(<!doctype html|<html|<head|<body|<\?xml)", re.IGNORECASE)


def describe_non_image(head: bytes) -> str | None:
    """The user message for data that is plainly not a disk image, or None."""
    for magic, algorithm in COMPRESSION_SIGNATURES:
        if head.startswith(magic) and (algorithm != "bzip2" or head[3:4].isdigit()):
            # The import pipeline decompresses before inspecting when asked to, so compressed
            # bytes here mean decompression was off.
            return (
                f"The data is {algorithm}-compressed; decompress it before uploading, or import it "
                "with decompression enabled."
            )
    if head[:4] == b"RIFF" and head[8:12] in RIFF_KINDS:
        return not_a_disk_image(RIFF_KINDS[head[8:12]])
    if head[:2] == b"MZ" and is_pe_executable(head):
        return not_a_disk_image("a Windows executable")
    for offset, magic, what in NON_IMAGE_SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return not_a_disk_image(what)
    return None


def describe_text(head: bytes) -> str:
    """The user message for data that looks_like_text()."""
    sample = head[:TEXT_SAMPLE_SIZE]
    if HTML_START.match(sample):
        return not_a_disk_image("an HTML page") + " " + starts_with(sample)
    return not_a_disk_image("text") + " " + starts_with(sample)


def looks_like_text(sample: bytes) -> bool:
    if not sample or b"\0" in sample:
        return False
    # final=False: a multi-byte character cut at the sample's end is not a sign of binary data.
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(sample, final=False)
    if not text:
        return False
    printable = sum(1 for ch in text if ch.isprintable() or ch in "\t\n\r\f\v")
    return printable >= TEXT_MIN_PRINTABLE * len(text)


def starts_with(sample: bytes) -> str:
    first_line = next((line for line in sample.decode("utf-8", errors="replace").splitlines() if line.strip()), "")
    first_line = first_line.strip()
    shown = "".join(ch if ch.isprintable() else "?" for ch in first_line[:60])
    more = "…" if len(first_line) > 60 else ""
    return f"(It starts with '{shown}{more}'.)"


def describe_unaccepted_disk_format(head: bytes, tail: bytes) -> str | None:
    """The user message for a disk format qemu knows but this service does not take, or None."""
    name = next((name for magic, name in UNACCEPTED_DISK_SIGNATURES if head.startswith(magic)), None)
    if name is None and tail[-512:][:4] == DMG_TRAILER_MAGIC and len(tail) >= 512:
        name = "Apple DMG"
    if name is None:
        return None
    return (
        f"The data is a {name} disk image, which is not accepted; convert it to one of {', '.join(DISK_FORMATS)} first."
    )


def not_a_disk_image(what: str) -> str:
    return f"The data looks like {what}, not a disk image."


def is_pe_executable(head: bytes) -> bool:
    # DOS header field e_lfanew (offset 0x3c) points at the "PE\0\0" signature.
    if len(head) < 0x40:
        return False
    pe_offset = int.from_bytes(head[0x3C:0x40], "little")
    return head[pe_offset : pe_offset + 4] == b"PE\0\0"
