"""Decoding: unusual valid images are converted, hostile or broken ones rejected with a stable reason."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import png_header_only

from fruits import images


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def gradient(mode: str = "RGB", size: tuple[int, int] = (100, 80)) -> Image.Image:
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, axis=0)
    rgb = np.stack([x, x[::-1, ::-1], np.full_like(x, 90)], axis=-1)
    return Image.fromarray(rgb, "RGB").convert(mode) if mode != "RGB" else Image.fromarray(rgb, "RGB")


@pytest.fixture(scope="module")
def real_jpeg(data_dir: Path) -> bytes:
    return (data_dir / "subset" / "Banana").glob("*.jpg").__next__().read_bytes()


# --------------------------------------------------------------------------- labels
@pytest.mark.parametrize(
    ("path", "root", "label"),
    [
        ("file:/data/subset/Apple Red 1/r_12_100.jpg", None, "Apple Red 1"),
        ("file:/data/subset/Apple Red 1/r_12_100.jpg", "/data/subset", "Apple Red 1"),
        ("file:///data/subset/Apple Red 1/r_12_100.jpg", "file:/data/subset/", "Apple Red 1"),
        ("s3a://bucket/images/Pepper Red/1_100.jpg", "s3a://bucket/images", "Pepper Red"),
        ("s3a://bucket/images/upload/2026/Kaki/x.png", "s3a://bucket/images/", "Kaki"),
        ("file:/landing/loose.jpg", "/landing", None),
        ("s3://bucket/images/loose.jpg", "s3://bucket/images/", None),
        ("file:/landing/Cherry+Wax%20Red/a.jpg", "/landing", "Cherry+Wax%20Red"),
    ],
)
def test_label_is_the_parent_folder_and_null_at_the_root(path: str, root: str | None, label: str | None) -> None:
    assert images.label_from_path(path, root) == label


def test_image_names_are_case_insensitive_and_hidden_files_are_not_images() -> None:
    assert images.is_image_name("a/B.JPG") and images.is_image_name("x.jpeg") and images.is_image_name("y.Png")
    for name in ("a/.x.jpg", "a/_x.jpg", "a/x.jpg.tmp", "a/x.jpg._COPYING_", "a/x.gif", "a/x.txt"):
        assert not images.is_image_name(name), name
    assert images.IMAGE_GLOB == "*.{[jJ][pP][gG],[jJ][pP][eE][gG],[pP][nN][gG]}"


# --------------------------------------------------------------------------- valid inputs
def test_real_jpeg_becomes_224_square_scaled_to_minus_one_one(real_jpeg: bytes) -> None:
    pixels = images.preprocess(real_jpeg)
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.float32
    assert -1.0 <= pixels.min() < -0.5 and 0.9 < pixels.max() <= 1.0  # dark fruit on a white background


def test_scaling_matches_mobilenet_v2_preprocess_input() -> None:
    batch = np.array([0, 127, 128, 255], dtype=np.uint8).reshape(1, 1, 4, 1)
    np.testing.assert_allclose(images.scale(batch).ravel(), [-1.0, -0.003921628, 0.003921628, 1.0], atol=1e-6)


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
    pixels = images.preprocess(data())
    assert pixels.shape == (224, 224, 3), name
    assert np.isfinite(pixels).all() and pixels.min() >= -1 and pixels.max() <= 1


def test_transparent_pixels_become_the_white_background() -> None:
    clear = Image.new("RGBA", (50, 50), (255, 0, 0, 0))  # fully transparent red
    pixels = images.preprocess(encode(clear, "PNG"))
    np.testing.assert_allclose(pixels, 1.0)  # white, not red and not black


def test_16_bit_values_are_rescaled_not_clipped() -> None:
    mid_grey = Image.fromarray(np.full((30, 30), 32768, np.uint16))
    pixels = images.preprocess(encode(mid_grey, "PNG"))
    assert abs(float(pixels.mean())) < 0.02  # 32768/65535 ~ 0.5 -> ~0 after scaling; clipping would give 1.0


def test_exif_rotation_is_applied() -> None:
    wide = gradient(size=(120, 60))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rotated = images.load_rgb(encode(wide, "JPEG", exif=exif.tobytes()))
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
    with pytest.raises(images.ImageRejected) as caught:
        images.preprocess(data)
    assert caught.value.reason == reason
    assert images.check(data) == images.Rejection(reason, caught.value.detail)


def test_truncated_jpeg_is_rejected(real_jpeg: bytes) -> None:
    rejection = images.check(real_jpeg[: len(real_jpeg) // 2])
    assert rejection is not None and rejection.reason in {"truncated", "corrupt"}


def test_pixel_limit_is_configurable(real_jpeg: bytes) -> None:
    assert images.check(real_jpeg, max_pixels=100 * 100) is None
    assert images.check(real_jpeg, max_pixels=99 * 100).reason == "too_many_pixels"


def test_floating_point_images_are_an_unsupported_mode() -> None:
    data = encode(Image.fromarray(np.random.default_rng(0).random((20, 20), dtype=np.float32), "F"), "TIFF")
    assert images.check(data).reason == "unsupported_mode"
