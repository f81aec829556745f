"""Operator-pluggable checks that may refuse an image after format inspection, before it is stored.

Writing a verifier: any callable ``verifier(path, inspection)`` taking the image file
(a ``pathlib.Path``, read-only, already decompressed) and its ``Inspection`` (``format``,
``virtual_size``, ``details``). Return to accept the image; raise ``VerificationFailed`` with a
message for the user to refuse it. Any other exception fails the import with a generic message
and keeps the traceback for operators. Then add its dotted path to ``IMAGE_VERIFIERS``. A virus
scan with ClamAV, for example, in ``mysite/verifiers.py``::

    import subprocess
    from imageactions.formats.verifiers import VerificationFailed

    def clamav_scan(path, inspection):
        # --fdpass lets clamd read a file it has no permission to open by name.
        scan = subprocess.run(["clamdscan", "--no-summary", "--fdpass", str(path)],
                              capture_output=True, text=True, timeout=3600)
        if scan.returncode == 1:  # 1: a signature matched; its name ends the output line
            signature = scan.stdout.strip().rsplit(": ", 1)[-1].removesuffix(" FOUND")
            raise VerificationFailed(f"The image contains malware ({signature})")
        if scan.returncode != 0:  # 2: clamd unreachable or failed; an operator problem
            raise RuntimeError(f"clamdscan failed: {scan.stderr.strip()}")

    IMAGE_VERIFIERS = [
        "imageactions.formats.verifiers.max_virtual_size",
        "imageactions.formats.verifiers.allowed_formats",
        "mysite.verifiers.clamav_scan",
    ]

A dotted path may also name a class; it is instantiated with no arguments.

A verifier that judges by the inspection alone says so with ``needs_file = False`` (as the
built-in ones do): where the image's bytes are not on the worker's disk (a staging store, see
IMAGEACTIONS_STAGING_STORE), it is then called with ``path`` None, and only a verifier that
needs the file (the default) makes the worker download the image first.
"""

from collections.abc import Callable, Iterable
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from imageactions.formats import ImageFormatError, Inspection
from imageactions.formats.errors import describe_size

Verifier = Callable[[Path, Inspection], None]

# Users say vhd; qemu and the inspector say vpc.
FORMAT_ALIASES = {"vhd": "vpc"}


class VerificationFailed(ImageFormatError):
    """A verifier refused the image; the message is shown to the user."""


class MaxVirtualSize:
    """Refuses images whose virtual (guest-visible) size exceeds a limit in bytes.

    With no limit given, reads ``settings.IMAGE_MAX_VIRTUAL_SIZE`` at each call; None there
    means no limit.
    """

    needs_file = False  # every format with a header has a virtual size; raw and iso are their size

    def __init__(self, limit: int | None = None):
        self.limit = limit

    def __call__(self, path: Path, inspection: Inspection) -> None:
        limit = self.limit if self.limit is not None else settings.IMAGE_MAX_VIRTUAL_SIZE
        if limit is None:
            return
        # Formats without a header (raw, iso) show the guest exactly the file's bytes.
        size = inspection.virtual_size
        if size is None and path is not None:
            size = Path(path).stat().st_size
        if size is not None and size > limit:
            raise VerificationFailed(
                f"The image's virtual size is {describe_size(size)}, more than the {describe_size(limit)} "
                f"this service accepts"
            )


class AllowedFormats:
    """Refuses images in formats outside a list (default ``settings.IMAGE_ALLOWED_FORMATS``)."""

    needs_file = False

    def __init__(self, formats: Iterable[str] | None = None):
        self.formats = list(formats) if formats is not None else None

    def __call__(self, path: Path, inspection: Inspection) -> None:
        configured = self.formats if self.formats is not None else settings.IMAGE_ALLOWED_FORMATS
        allowed = [FORMAT_ALIASES.get(name.lower(), name.lower()) for name in configured]
        if inspection.format not in allowed:
            raise VerificationFailed(
                f"Images in {inspection.format} format are not accepted here; "
                f"accepted formats: {', '.join(allowed) or 'none'}"
            )


# The instances IMAGE_VERIFIERS names by default; they hold no state and read settings per call.
max_virtual_size = MaxVirtualSize()
allowed_formats = AllowedFormats()


def load_verifiers(dotted_paths: Iterable[str]) -> list[Verifier]:
    """Import each verifier named by a dotted path; ImproperlyConfigured names a bad one."""
    verifiers = []
    for dotted_path in dotted_paths:
        try:
            verifier = import_string(dotted_path)
        except ImportError as exc:
            raise ImproperlyConfigured(f"IMAGE_VERIFIERS: cannot import {dotted_path!r}: {exc}") from exc
        if isinstance(verifier, type):
            verifier = verifier()
        if not callable(verifier):
            raise ImproperlyConfigured(f"IMAGE_VERIFIERS: {dotted_path!r} is not callable")
        verifiers.append(verifier)
    return verifiers


def configured_verifiers() -> list[Verifier]:
    """The verifiers named by ``settings.IMAGE_VERIFIERS``."""
    return load_verifiers(settings.IMAGE_VERIFIERS)


def needs_file(verifier: Verifier) -> bool:
    """Whether the verifier reads the image's bytes (the default) rather than its inspection only."""
    return getattr(verifier, "needs_file", True)


def run_verifiers(path, inspection: Inspection, verifiers: Iterable[Verifier]) -> None:
    """Run each verifier in order; the first VerificationFailed refuses the image. `path` may be
    None only when no verifier needs_file()."""
    path = Path(path) if path is not None else None
    for verifier in verifiers:
        verifier(path, inspection)
