"""Decoding: unusual valid images are converted, hostile or broken ones rejected with a stable reason."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import png_header_only

from fruits import decode

MAX_PIXELS = 64_000_000  # the documented default limit (README: 64 megapixels)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def gradient(mode: str = "RGB", size: tuple[int, int] = (100, 80)) -> Image.Image:
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, axis=0)
    rgb = np.stack([x, x[::-1, ::-1], np.full_like(x, 90)], axis=-1)
    return Image.fromarray(rgb, "RGB").convert(mode) if mode != "RGB" else Image.fromarray(rgb, "RGB")


def pixels_of(data: bytes) -> np.ndarray:
    """What the model reads: decoded, then scaled to [-1, 1]."""
    return decode.scale(decode.decode(data, MAX_PIXELS))


def reason_of(data: bytes, max_pixels: int = MAX_PIXELS) -> str | None:
    try:
        decode.decode(data, max_pixels)
    except decode.Rejected as exc:
        return exc.reason
    return None


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
    pixels = pixels_of(encode(clear, "PNG"))
    np.testing.assert_allclose(pixels, 1.0)  # white, not red and not black


def test_16_bit_values_are_rescaled_not_clipped() -> None:
    mid_grey = Image.fromarray(np.full((30, 30), 32768, np.uint16))
    pixels = pixels_of(encode(mid_grey, "PNG"))
    assert abs(float(pixels.mean())) < 0.02  # 32768/65535 ~ 0.5 -> ~0 after scaling; clipping would give 1.0


def test_exif_rotation_is_applied() -> None:
    wide = gradient(size=(120, 60))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rotated = decode.load_rgb(encode(wide, "JPEG", exif=exif.tobytes()), MAX_PIXELS)
    assert rotated.size == (60, 120)


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"this is a text file with a .jpg name", "not_an_image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not_an_image"),  # EPS: parser not allowed
        (png_header_only(100_000, 100_000), "too_many_pixels"),  # caught by Pillow's own bomb check
        (png_header_only(10_000, 8_000), "too_many_pixels"),  # under Pillow's limit, over ours (64 MP)
    ],
)
def test_broken_or_hostile_inputs_are_rejected_with_a_reason(data: bytes | None, reason: str) -> None:
    with pytest.raises(decode.Rejected) as caught:
        decode.decode(data, MAX_PIXELS)
    assert caught.value.reason == reason and caught.value.detail


def test_truncated_jpeg_is_rejected(real_jpeg: bytes) -> None:
    assert reason_of(real_jpeg[: len(real_jpeg) // 2]) in {"truncated", "corrupt"}


def test_pixel_limit_is_configurable(real_jpeg: bytes) -> None:
    assert decode.decode(real_jpeg, max_pixels=100 * 100).shape == (224, 224, 3)
    assert reason_of(real_jpeg, max_pixels=99 * 100) == "too_many_pixels"


def test_floating_point_images_are_an_unsupported_mode() -> None:
    data = encode(Image.fromarray(np.random.default_rng(0).random((20, 20), dtype=np.float32), "F"), "TIFF")
    assert reason_of(data) == "unsupported_mode"
