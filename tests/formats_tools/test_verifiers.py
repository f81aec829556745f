"""Pluggable verifiers: the two shipped ones, loading from dotted paths, and an operator's own."""

import subprocess
import textwrap
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from imageactions.formats import ImageFormatError, inspect_image
from imageactions.formats import verifiers as verifiers_module
from imageactions.formats.verifiers import (
    AllowedFormats,
    MaxVirtualSize,
    VerificationFailed,
    allowed_formats,
    configured_verifiers,
    load_verifiers,
    max_virtual_size,
    run_verifiers,
)

GiB = 1 << 30

pytestmark = pytest.mark.skipif(
    subprocess.run(["sh", "-c", "command -v qemu-img"], capture_output=True).returncode != 0,
    reason="qemu-img is not installed (apt-get install qemu-utils)",
)


def create_image(path: Path, fmt: str, size: int) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), str(size)], check=True)
    return path


def inspected(path: Path):
    return path, inspect_image(path)


@pytest.fixture
def qcow2_1_gib(tmp_path):
    return inspected(create_image(tmp_path / "disk.qcow2", "qcow2", GiB))


@pytest.fixture
def qcow2_2_gib(tmp_path):
    return inspected(create_image(tmp_path / "big.qcow2", "qcow2", 2 * GiB))


@pytest.fixture
def vmdk_image(tmp_path):
    return inspected(create_image(tmp_path / "disk.vmdk", "vmdk", 64 << 20))


@pytest.fixture
def vhd_image(tmp_path):
    return inspected(create_image(tmp_path / "disk.vhd", "vpc", 64 << 20))


# -- an operator's verifier, loaded by dotted path like the ones in IMAGE_VERIFIERS ------


def refuse_images_under_2_gib(path, inspection):
    if inspection.virtual_size < 2 * GiB:
        raise VerificationFailed(f"Images must be at least 2 GiB; {path.name} is smaller")


class RecordingVerifier:
    """A verifier given as a class path: instantiated with no arguments."""

    calls = []

    def __call__(self, path, inspection):
        self.calls.append((path.name, inspection.format))


NOT_CALLABLE = "a verifier must be callable"


# -- max_virtual_size --------------------------------------------------------------------


def test_max_virtual_size_accepts_an_image_at_the_limit(settings, qcow2_1_gib):
    settings.IMAGE_MAX_VIRTUAL_SIZE = GiB
    max_virtual_size(*qcow2_1_gib)


def test_max_virtual_size_refuses_a_larger_image_naming_both_sizes_in_gib(settings, qcow2_2_gib):
    settings.IMAGE_MAX_VIRTUAL_SIZE = GiB
    with pytest.raises(VerificationFailed) as error:
        max_virtual_size(*qcow2_2_gib)
    assert str(error.value) == (
        "The image's virtual size is 2 GiB (2147483648 bytes), "
        "more than the 1 GiB (1073741824 bytes) this service accepts"
    )


def test_max_virtual_size_refuses_one_sector_over_the_limit(settings, tmp_path):
    settings.IMAGE_MAX_VIRTUAL_SIZE = GiB
    path, inspection = inspected(create_image(tmp_path / "disk.qcow2", "qcow2", GiB + 512))
    with pytest.raises(VerificationFailed, match=r"is 1 GiB \(1073742336 bytes\), more than the 1 GiB"):
        max_virtual_size(path, inspection)


def test_max_virtual_size_reads_the_setting_at_each_call(settings, qcow2_2_gib):
    settings.IMAGE_MAX_VIRTUAL_SIZE = GiB
    with pytest.raises(VerificationFailed):
        max_virtual_size(*qcow2_2_gib)
    settings.IMAGE_MAX_VIRTUAL_SIZE = 2 * GiB
    max_virtual_size(*qcow2_2_gib)


def test_max_virtual_size_with_an_explicit_limit_ignores_the_setting(settings, qcow2_2_gib):
    settings.IMAGE_MAX_VIRTUAL_SIZE = 10 * GiB
    with pytest.raises(VerificationFailed, match=r"more than the 1.5 GiB \(1610612736 bytes\)"):
        MaxVirtualSize(limit=3 * GiB // 2)(*qcow2_2_gib)


def test_max_virtual_size_of_none_means_no_limit(settings, qcow2_2_gib):
    settings.IMAGE_MAX_VIRTUAL_SIZE = None
    max_virtual_size(*qcow2_2_gib)


def test_max_virtual_size_of_a_raw_image_is_its_file_size(settings, tmp_path):
    raw = tmp_path / "disk.raw"
    with open(raw, "wb") as disk:
        disk.truncate(GiB + 4096)
    settings.IMAGE_MAX_VIRTUAL_SIZE = GiB
    with pytest.raises(VerificationFailed, match=r"\(1073745920 bytes\)"):
        max_virtual_size(*inspected(raw))


# -- allowed_formats ---------------------------------------------------------------------


def test_allowed_formats_accepts_a_listed_format(settings, qcow2_1_gib):
    settings.IMAGE_ALLOWED_FORMATS = ["raw", "qcow2"]
    allowed_formats(*qcow2_1_gib)


def test_allowed_formats_refuses_an_unlisted_format_naming_the_allowed_ones(settings, vmdk_image):
    settings.IMAGE_ALLOWED_FORMATS = ["raw", "qcow2"]
    with pytest.raises(VerificationFailed) as error:
        allowed_formats(*vmdk_image)
    assert str(error.value) == "Images in vmdk format are not accepted here; accepted formats: raw, qcow2"


def test_allowed_formats_takes_vhd_as_the_name_of_vpc(settings, vhd_image):
    settings.IMAGE_ALLOWED_FORMATS = ["VHD"]
    allowed_formats(*vhd_image)


def test_allowed_formats_with_an_explicit_list_ignores_the_setting(settings, qcow2_1_gib):
    settings.IMAGE_ALLOWED_FORMATS = ["qcow2"]
    with pytest.raises(VerificationFailed, match="accepted formats: raw$"):
        AllowedFormats(["raw"])(*qcow2_1_gib)


# -- loading and running -----------------------------------------------------------------


def test_shipped_verifiers_load_from_their_dotted_paths():
    loaded = load_verifiers(
        [
            "imageactions.formats.verifiers.max_virtual_size",
            "imageactions.formats.verifiers.allowed_formats",
        ]
    )
    assert loaded == [max_virtual_size, allowed_formats]


def test_configured_verifiers_come_from_the_setting(settings, qcow2_1_gib, qcow2_2_gib):
    settings.IMAGE_VERIFIERS = [
        "imageactions.formats.verifiers.allowed_formats",
        f"{__name__}.refuse_images_under_2_gib",
    ]
    settings.IMAGE_ALLOWED_FORMATS = ["qcow2"]
    assert configured_verifiers() == [allowed_formats, refuse_images_under_2_gib]
    run_verifiers(*qcow2_2_gib, configured_verifiers())
    with pytest.raises(VerificationFailed, match="^Images must be at least 2 GiB; disk.qcow2 is smaller$"):
        run_verifiers(*qcow2_1_gib, configured_verifiers())


def test_operator_verifier_defined_elsewhere_refuses_through_load_verifiers(settings, qcow2_1_gib):
    settings.IMAGE_MAX_VIRTUAL_SIZE = 10 * GiB
    loaded = load_verifiers(
        ["imageactions.formats.verifiers.max_virtual_size", f"{__name__}.refuse_images_under_2_gib"]
    )
    with pytest.raises(VerificationFailed, match="^Images must be at least 2 GiB; disk.qcow2 is smaller$"):
        run_verifiers(*qcow2_1_gib, loaded)


def test_a_class_path_is_instantiated(qcow2_1_gib):
    RecordingVerifier.calls.clear()
    (verifier,) = load_verifiers([f"{__name__}.RecordingVerifier"])
    assert isinstance(verifier, RecordingVerifier)
    run_verifiers(str(qcow2_1_gib[0]), qcow2_1_gib[1], [verifier])
    assert RecordingVerifier.calls == [("disk.qcow2", "qcow2")]


def test_run_verifiers_stops_at_the_first_refusal(settings, vmdk_image):
    settings.IMAGE_ALLOWED_FORMATS = ["qcow2"]
    RecordingVerifier.calls.clear()
    with pytest.raises(VerificationFailed, match="vmdk"):
        run_verifiers(*vmdk_image, [RecordingVerifier(), allowed_formats, RecordingVerifier()])
    assert RecordingVerifier.calls == [("disk.vmdk", "vmdk")]


@pytest.mark.parametrize(
    "bad_path",
    [
        "imageactions.formats.no_such_module.verifier",
        "imageactions.formats.verifiers.no_such_verifier",
        "not_a_dotted_path",
    ],
)
def test_load_verifiers_names_a_path_that_cannot_be_imported(bad_path):
    with pytest.raises(ImproperlyConfigured, match=f"IMAGE_VERIFIERS: cannot import '{bad_path}'"):
        load_verifiers(["imageactions.formats.verifiers.max_virtual_size", bad_path])


def test_load_verifiers_refuses_something_not_callable():
    with pytest.raises(ImproperlyConfigured, match=f"'{__name__}.NOT_CALLABLE' is not callable"):
        load_verifiers([f"{__name__}.NOT_CALLABLE"])


def test_verification_failed_is_an_image_format_error():
    assert issubclass(VerificationFailed, ImageFormatError)


def test_module_docstring_example_is_valid_python():
    # The README quotes it; a syntax error there would be copied by operators.
    doc = verifiers_module.__doc__
    example = doc.split("mysite/verifiers.py``::\n", 1)[1].split("\nA dotted path", 1)[0]
    namespace = {}
    exec(compile(textwrap.dedent(example), "example", "exec"), namespace)
    assert callable(namespace["clamav_scan"])
    assert namespace["IMAGE_VERIFIERS"][-1] == "mysite.verifiers.clamav_scan"


def test_the_built_in_verifiers_judge_by_the_inspection_alone(settings, qcow2_2_gib):
    # Where the image is not on the worker's disk (a staging store), they run with no file.
    from imageactions.formats.verifiers import needs_file

    settings.IMAGE_MAX_VIRTUAL_SIZE = GiB
    assert [needs_file(v) for v in (max_virtual_size, allowed_formats, refuse_images_under_2_gib)] == [
        False,
        False,
        True,
    ]
    _path, inspection = qcow2_2_gib
    run_verifiers(None, inspection, [allowed_formats])
    with pytest.raises(VerificationFailed, match="virtual size is 2 GiB"):
        run_verifiers(None, inspection, [max_virtual_size])
