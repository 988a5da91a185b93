"""Helpers shared by the app's tests: photos with GPS in their EXIF; the visitor and browser come from demo.visitors."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import ExifTags, Image

from demo.visitors import CHROMIUM, NO_CHROMIUM

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)
GPS_MAKE = "FruitPhone-GPS-Test"


def with_gps(src: Path) -> bytes:
    """A real JPEG re-saved with EXIF a phone would write: its make and a GPS position (Paris)."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = GPS_MAKE
    exif[ExifTags.Base.GPSInfo] = {ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (48.0, 51.0, 24.0),
                                   ExifTags.GPS.GPSLongitudeRef: "E", ExifTags.GPS.GPSLongitude: (2.0, 21.0, 7.0)}
    out = io.BytesIO()
    with Image.open(src) as img:
        img.save(out, "JPEG", exif=exif, quality=95)
    content = out.getvalue()
    assert Image.open(io.BytesIO(content)).getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the premise holds
    return content
