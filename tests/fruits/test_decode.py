"""Decoding: unusual valid images are converted (with v1's numbers), everything else is rejected with a
stable reason, within a memory budget, and nothing raises anything but Rejected."""

from __future__ import annotations

import io
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from decode_v1 import decode_v1
from fruits import decode
from fruits.reasons import MAX_DETAIL, REASONS, exception_detail
from hostile_images import exif_block, png_chunk
from support import png_header_only

MAX_PIXELS = 64_000_000  # the documented default limit (README: 64 megapixels)
TESTS = Path(__file__).resolve().parents[1]


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def gradient(mode: str = "RGB", size: tuple[int, int] = (100, 80)) -> Image.Image:
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, axis=0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None].repeat(w, axis=1)
    rgb = Image.fromarray(np.stack([x, y, np.full_like(x, 90)], axis=-1))
    return rgb if mode == "RGB" else rgb.convert(mode)


def pixels_of(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """What the model reads: decoded, then scaled to [-1, 1]."""
    return decode.scale(decode.decode(data, max_pixels))


def rejection(data: bytes | None, max_pixels: int = MAX_PIXELS) -> decode.Rejected | None:
    try:
        decode.decode(data, max_pixels)
    except decode.Rejected as exc:
        return exc
    return None


def reason_of(data: bytes | None, max_pixels: int = MAX_PIXELS) -> str | None:
    found = rejection(data, max_pixels)
    return found.reason if found else None


def with_orientation(png: bytes, orientation: int) -> bytes:
    """The PNG with an eXIf chunk before its pixels saying how to turn it upright."""
    exif = exif_block([(0x0112, 3, 1, struct.pack("<H", orientation))])
    return png[:33] + png_chunk(b"eXIf", exif) + png[33:]


def orientation_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.fixture(scope="module")
def real_jpeg(data_dir: Path) -> bytes:
    return (data_dir / "subset" / "Banana").glob("*.jpg").__next__().read_bytes()


# --------------------------------------------------------------------------- valid inputs
def test_real_jpeg_becomes_224_square_scaled_to_minus_one_one(real_jpeg: bytes) -> None:
    pixels = pixels_of(real_jpeg)
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.float32
    assert -1.0 <= pixels.min() < -0.5 and 0.9 < pixels.max() <= 1.0  # dark fruit on a white background


def test_scaling_matches_mobilenet_v2_preprocess_input() -> None:
    batch = np.array([0, 127, 128, 255], dtype=np.uint8).reshape(1, 1, 4, 1)
    np.testing.assert_allclose(decode.scale(batch).ravel(), [-1.0, -0.003921628, 0.003921628, 1.0], atol=1e-6)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("grayscale jpeg", lambda: encode(gradient("L"), "JPEG")),
        ("palette png", lambda: encode(gradient("P"), "PNG")),
        ("cmyk jpeg", lambda: encode(gradient("CMYK"), "JPEG")),
        ("1-bit png", lambda: encode(gradient("1"), "PNG")),
        ("rgba png", lambda: encode(gradient("RGBA"), "PNG")),
        ("16-bit grayscale png", lambda: encode(Image.fromarray(np.full((40, 60), 40000, np.uint16)), "PNG")),
        ("progressive jpeg", lambda: encode(gradient(), "JPEG", progressive=True)),
        ("huge but sane jpeg 5000x4000", lambda: encode(gradient(size=(5000, 4000)), "JPEG", quality=60)),
    ],
)
def test_unusual_but_valid_images_are_converted(name: str, data) -> None:
    pixels = pixels_of(data())
    assert pixels.shape == (224, 224, 3), name
    assert np.isfinite(pixels).all() and pixels.min() >= -1 and pixels.max() <= 1


def test_transparent_pixels_become_the_white_background() -> None:
    clear = Image.new("RGBA", (50, 50), (255, 0, 0, 0))  # fully transparent red
    np.testing.assert_allclose(pixels_of(encode(clear, "PNG")), 1.0)  # white, not red and not black


def test_16_bit_values_are_rescaled_not_clipped() -> None:
    mid_grey = Image.fromarray(np.full((30, 30), 32768, np.uint16))
    # 32768 // 257 = 127 -> 127 / 127.5 - 1; clipping at 255 would give 1.0
    np.testing.assert_allclose(pixels_of(encode(mid_grey, "PNG")), 127 / 127.5 - 1, atol=1e-6)


def test_exif_rotation_is_applied() -> None:
    wide = gradient(size=(120, 60))
    upright = decode.decode(encode(wide.transpose(Image.Transpose.ROTATE_270), "PNG"), MAX_PIXELS)
    assert np.array_equal(decode.decode(with_orientation(encode(wide, "PNG"), 6), MAX_PIXELS), upright)
    assert not np.array_equal(decode.decode(encode(wide, "PNG"), MAX_PIXELS), upright)


def _v1_inputs(data_dir: Path) -> list[tuple[str, bytes]]:
    """Real images, and images of every mode big enough to be converted strip by strip."""
    real = [(p.name, p.read_bytes()) for p in sorted((data_dir / "subset").glob("*/*.jpg"))]
    big = (1500, 1100)  # 1.65 megapixels: two strips
    deep = np.arange(big[0] * big[1], dtype=np.uint32).reshape(big[1], big[0]) % 65536  # every 16-bit value
    crafted = [(f"png {mode}", encode(gradient(mode, big), "PNG")) for mode in ("1", "L", "LA", "P", "RGB", "RGBA")]
    crafted += [
        ("png P transparency", encode(gradient("P", big), "PNG", transparency=7)),
        ("png 16-bit every value", encode(Image.fromarray(deep.astype(np.uint16)), "PNG")),
        ("png 16-bit under 256", encode(Image.fromarray((deep % 200).astype(np.uint16)), "PNG")),
        ("jpeg cmyk", encode(gradient("CMYK", big), "JPEG")),
        ("jpeg progressive drafted", encode(gradient(size=big), "JPEG", progressive=True)),
        ("jpeg 300 px", encode(gradient(size=(300, 300)), "JPEG")),
    ]
    crafted += [
        (f"png RGBA orientation {o}", with_orientation(encode(gradient("RGBA", big), "PNG"), o)) for o in range(1, 9)
    ]
    crafted += [
        (f"jpeg orientation {o}", encode(gradient(size=(500, 300)), "JPEG", exif=orientation_exif(o)))
        for o in (3, 6, 8)
    ]
    return real + crafted


def test_numbers_are_v1s_on_real_images_and_every_mode(data_dir: Path) -> None:
    # The featurizer identity (PREPROCESSING .../v1) promises the same pixels as before the decode was
    # hardened: integer 16-bit rescaling, strip-wise conversion and own EXIF transposition change none.
    inputs = _v1_inputs(data_dir)
    assert len(inputs) > 320
    for name, data in inputs:
        assert np.array_equal(decode.decode(data, MAX_PIXELS), decode_v1(data, MAX_PIXELS)), name


# --------------------------------------------------------------------------- rejections
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"this is a text file with a .jpg name", "not_an_image"),
        (b"\xff", "not_an_image"),  # a 1-byte prefix once made a signature check raise
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "unsupported_format"),  # EPS: never parsed
        (png_header_only(100_000, 100_000), "too_many_pixels"),  # caught by Pillow's own bomb check
        (png_header_only(10_000, 8_000), "too_many_pixels"),  # under Pillow's limit, over ours (64 MP)
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "truncated"),  # a JPEG header cut short
        (b"\xff\xd8\xff\x02\x00\x00" * 10, "corrupt"),  # a JPEG signature, then no valid marker
    ],
)
def test_broken_or_hostile_inputs_are_rejected_with_a_reason(data: bytes | None, reason: str) -> None:
    found = rejection(data)
    assert found is not None and found.reason == reason and found.detail


@pytest.mark.parametrize("fmt", ["TIFF", "WEBP", "GIF", "BMP"])
def test_formats_the_names_do_not_allow_are_never_parsed(fmt: str) -> None:
    found = rejection(encode(gradient(), fmt))  # valid images, which v1 converted
    assert found is not None and found.reason == "unsupported_format" and found.detail.startswith(fmt)


def test_truncated_jpeg_is_rejected(real_jpeg: bytes) -> None:
    assert reason_of(real_jpeg[: len(real_jpeg) // 2]) in {"truncated", "corrupt"}


def test_pixel_limit_is_configurable(real_jpeg: bytes) -> None:
    assert decode.decode(real_jpeg, max_pixels=100 * 100).shape == (224, 224, 3)
    assert reason_of(real_jpeg, max_pixels=99 * 100) == "too_many_pixels"


# --------------------------------------------------------------------------- the memory budget
LIMIT = 1_000_000  # pixels: a budget of 4,000,000 bytes


@pytest.mark.parametrize(
    ("mode", "side", "accepted"),
    [
        ("RGB", 1000, True),  # 4 bytes a pixel, as Pillow stores RGB: exactly the budget
        ("L", 1000, False),  # 1 byte + 4 for its RGB copy: 5 MB
        ("L", 894, True),  # 799,236 pixels x 5 = 3,996,180 bytes
        ("I;16", 816, True),  # 2 bytes + 4 for its RGB copy: 665,856 x 6 = 3,995,136
        ("I;16", 817, False),  # 667,489 x 6 = 4,004,934
        ("RGBA", 707, True),  # 4 + 4: 499,849 x 8 = 3,998,792
        ("RGBA", 708, False),  # 501,264 x 8 = 4,010,112
    ],
)
def test_the_memory_budget_counts_bytes_per_pixel(mode: str, side: int, accepted: bool) -> None:
    size = (side, side)
    img = Image.fromarray(np.full(size, 40000, np.uint16)) if mode == "I;16" else Image.new(mode, size, 99)
    found = rejection(encode(img, "PNG", compress_level=1), LIMIT)
    assert (found is None) == accepted, found
    if not accepted:
        assert found.reason == "too_many_pixels" and "budget" in found.detail


def test_the_budget_counts_the_turned_copy_of_a_rotated_image() -> None:
    png = encode(Image.new("RGB", (1000, 1000), 99), "PNG", compress_level=1)
    assert reason_of(png, LIMIT) is None
    assert reason_of(with_orientation(png, 6), LIMIT) == "too_many_pixels"  # 4 + 4 bytes a pixel
    assert reason_of(with_orientation(png, 1), LIMIT) is None  # "as stored": no copy


def test_the_budget_counts_libjpegs_coefficients_of_a_progressive_jpeg() -> None:
    img = gradient(size=(1000, 1000))
    # Drafted to 250x250 on load, but libjpeg buffers 2 bytes per pixel and component at full size first:
    # 4:4:4 -> 6,000,000 bytes; 4:2:0 -> 3,000,000 bytes (+ the 250,000-byte drafted image).
    assert reason_of(encode(img, "JPEG", progressive=True, subsampling=0), LIMIT) == "too_many_pixels"
    assert reason_of(encode(img, "JPEG", progressive=True, subsampling=2), LIMIT) is None
    assert reason_of(encode(img, "JPEG", subsampling=0), LIMIT) is None  # one scan: no whole-image buffer


def test_a_jpeg_of_more_scans_than_any_encoder_writes_is_refused() -> None:
    progressive = encode(gradient(size=(64, 48)), "JPEG", progressive=True)
    scans = [i for i in range(len(progressive) - 1) if progressive[i : i + 2] == b"\xff\xda"]
    one_scan = progressive[scans[2] : scans[3]]  # an AC scan, repeated: libjpeg only warns

    def with_scans(total: int) -> bytes:
        return progressive[: scans[3]] + one_scan * (total - len(scans)) + progressive[scans[3] :]

    assert reason_of(with_scans(decode.MAX_JPEG_SCANS)) is None
    found = rejection(with_scans(decode.MAX_JPEG_SCANS + 1))
    assert found is not None and found.reason == "corrupt" and f"{decode.MAX_JPEG_SCANS + 1} JPEG scans" in found.detail


# --------------------------------------------------------------------------- nothing else raises
MEMORY_ERROR_CHILD = """
import io, resource, sys
from PIL import Image
from fruits import decode
buf = io.BytesIO()
Image.new("RGB", (4000, 4000), (9, 99, 199)).save(buf, "PNG", compress_level=1)
pages = int(open("/proc/self/statm").read().split()[0]) * 4096
resource.setrlimit(resource.RLIMIT_AS, (pages + 32 * 2**20, resource.RLIM_INFINITY))  # less than 64 MB more
try:
    decode.decode(buf.getvalue(), 100_000_000)
except decode.Rejected as exc:
    print(exc.reason, exc.detail, sep="|")
"""


def test_memory_exhausted_while_decoding_is_a_rejection() -> None:
    # A real MemoryError: a child process whose address space cannot hold the 64 MB image Pillow allocates.
    out = subprocess.run([sys.executable, "-c", MEMORY_ERROR_CHILD], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "decode_failed|MemoryError"


def test_an_unexpected_exception_is_decode_failed_with_its_class_and_message(monkeypatch) -> None:
    # Injected on purpose: a conversion bug (Pillow raises nothing there on a valid image).
    gray = encode(gradient("L"), "PNG")

    def broken(self, *args, **kwargs):
        raise RuntimeError("conversion bug \ud800\n" + "x" * 1000)

    monkeypatch.setattr(Image.Image, "convert", broken)
    found = rejection(gray)
    assert found is not None and found.reason == "decode_failed"
    assert found.detail.startswith("RuntimeError: conversion bug \\ud800 xxx") and len(found.detail) == MAX_DETAIL
    found.detail.encode("utf-8")  # a lone surrogate would fail the errors table's write


def test_reasons_are_one_table() -> None:
    with pytest.raises(ValueError, match="unknown reason 'oops'"):
        decode.Rejected("oops", "not in the table")
    assert {
        "empty",
        "not_an_image",
        "unsupported_format",
        "truncated",
        "corrupt",
        "bad_dimensions",
        "too_many_pixels",
        "unsupported_mode",
        "decode_failed",
        "engine_failed",
    } <= set(REASONS)
    readme = (TESTS.parent / "README.md").read_text()
    assert re.findall(r"^\| `([a-z_]+)` \|", readme, re.MULTILINE) == list(REASONS)  # the README's table is this one
    assert exception_detail(MemoryError()) == "MemoryError"
    assert exception_detail(OSError("two\nlines\tand  spaces")) == "OSError: two lines and spaces"
