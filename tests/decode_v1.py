"""The decode of PREPROCESSING ".../v1" as it was before issue 20 hardened it (main at 53872a0), kept verbatim
in substance: the reference the hardened decode must match pixel for pixel on every image v1 decoded
(tests/fruits/test_decode.py), and the memory baseline of bench/decode_memory.py. Test code only.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps

Image.init()
ImageFile.LOAD_TRUNCATED_IMAGES = False
_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF")
_MODES = {
    "RGB",
    "RGBA",
    "RGBX",
    "RGBa",
    "L",
    "LA",
    "La",
    "P",
    "PA",
    "1",
    "CMYK",
    "YCbCr",
    "LAB",
    "HSV",
    "I",
    "I;16",
    "I;16B",
    "I;16L",
    "I;16N",
}


def decode_v1(data: bytes, max_pixels: int) -> np.ndarray:
    """uint8 (224, 224, 3), or raise whatever v1 raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(data), formats=[f for f in _FORMATS if f in Image.OPEN])
        width, height = img.size
        if width * height > max_pixels or img.mode not in _MODES:
            raise ValueError("v1 rejected it")
        if img.format in ("JPEG", "MPO") and min(width, height) >= 2 * 224:
            img.draft("RGB", (224, 224))
        img.load()
        img = ImageOps.exif_transpose(img)
    img = _to_rgb_v1(img)
    if img.size != (224, 224):
        img = img.resize((224, 224), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _to_rgb_v1(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max()
        factor = 255.0 / (65535.0 if top > 255 else 255.0) if top > 0 else 1.0
        img = Image.fromarray(np.clip(arr * factor, 0, 255).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")
