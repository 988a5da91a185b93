"""What the app shows of images: re-encoded thumbnails (never the bytes it was given) and the known map as SVG.

A thumbnail is what the model sees of a photo: the pipeline's own guarded decoder (fruits.decode:
JPEG and PNG parsers only, the pixel limit and memory budget, EXIF rotation applied) turns it into
224 x 224 RGB pixels, written as a new JPEG. Nothing of the original file survives: no EXIF (phones
write the GPS position there), no ICC profile, no comment, no trailing bytes.
"""

from __future__ import annotations

import colorsys
import io
from collections.abc import Sequence
from html import escape
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image

from fruits.decode import INPUT_SIZE, Rejected, decode

THUMBNAIL_PX = INPUT_SIZE  # the model's input, square: sharp on a phone's screen at the page's size
MAP_PX = 400
MAP_MARGIN = 24


def thumbnail(content: bytes, max_pixels: int) -> bytes | None:
    """A new JPEG of the model's view of the image, no metadata; None when the bytes are no image it reads."""
    try:
        pixels = decode(content, max_pixels)
    except Rejected:
        return None
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "JPEG", quality=82, optimize=True)
    return out.getvalue()


def local_path(uri: str) -> str | None:
    """The file path of a 'file:/abs', 'file:///abs' or '/abs' URI; None for other schemes (s3a://...)."""
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return unquote(parts.path)
    return None


def class_colours(labels: Sequence[str]) -> dict[str, str]:
    """A distinct colour per class, stable for a given set of classes (golden-angle hues)."""
    colours = {}
    for rank, name in enumerate(sorted(set(labels))):
        hue = (rank * 0.381966) % 1.0
        red, green, blue = colorsys.hls_to_rgb(hue, 0.45 if rank % 2 else 0.38, 0.75)
        colours[name] = f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}"
    return colours


def _place(xy: np.ndarray) -> np.ndarray:
    """Map coordinates in [0, 1] -> SVG pixels (y up on the map, down in SVG)."""
    span = MAP_PX - 2 * MAP_MARGIN
    return np.stack([MAP_MARGIN + xy[:, 0] * span, MAP_MARGIN + (1.0 - xy[:, 1]) * span], axis=1)


def map_svg(
    labels: Sequence[str], xy: np.ndarray, upload_xy: tuple[float, float] | None, neighbours: Sequence[int] = ()
) -> str:
    """The known images as dots coloured by class, each class named at its middle, the upload's
    nearest known images ringed and the upload marked with a cross-hair."""
    colours = class_colours(labels)
    points = _place(np.clip(np.asarray(xy, dtype=float), 0.0, 1.0))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {MAP_PX} {MAP_PX}" width="{MAP_PX}" '
        f'height="{MAP_PX}" role="img" aria-label="Map of the known fruits">',
        "<title>Map of the known fruits: each dot a training photo, coloured by fruit</title>",
        f'<rect width="{MAP_PX}" height="{MAP_PX}" fill="#fbfbf7"/>',
    ]
    for (x, y), name in zip(points, labels, strict=True):
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colours[name]}" fill-opacity="0.8"/>')
    for index in neighbours:
        if 0 <= index < len(points):
            x, y = points[index]
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="none" stroke="#222" stroke-width="1.5"/>')
    for name in sorted(colours):
        x, y = np.median(points[[i for i, label in enumerate(labels) if label == name]], axis=0)
        parts.append(
            f'<text x="{x:.1f}" y="{y - 6:.1f}" font-family="sans-serif" font-size="10" '
            f'text-anchor="middle" fill="#222" stroke="#fff" stroke-width="3" paint-order="stroke">'
            f"{escape(name)}</text>"
        )
    if upload_xy is not None:
        ((x, y),) = _place(np.clip(np.asarray([upload_xy], dtype=float), 0.0, 1.0))
        parts.append(
            f'<g stroke="#d00" stroke-width="3"><circle cx="{x:.1f}" cy="{y:.1f}" r="11" fill="none"/>'
            f'<line x1="{x - 17:.1f}" y1="{y:.1f}" x2="{x + 17:.1f}" y2="{y:.1f}"/>'
            f'<line x1="{x:.1f}" y1="{y - 17:.1f}" x2="{x:.1f}" y2="{y + 17:.1f}"/></g>'
        )
    parts.append("</svg>")
    return "\n".join(parts)
