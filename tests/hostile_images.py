"""Hostile and unusual uploads under image names, generated from a seed: what a stranger could send.

`generate(seed, mutations, images)` returns a fixed set of crafted files (exotic modes and bit depths,
other formats under .jpg/.png names, bombs, broken EXIF, too many JPEG scans...) followed by
`mutations` random mutations of real Fruits-360 JPEGs (`images`: ../shared/data/fruits360) and of PNGs
made from them (bit flips, truncations, JPEG marker and PNG chunk edits, wrong CRCs, huge declared
dimensions). The same seed gives the same files. Used by tests/fruits/test_hostile_inputs.py,
tests/streaming/test_hostile_uploads.py and bench/fuzz.py.

The regression corpus (decode_regressions.json, next to this file) holds small inputs fuzzing found,
as base64 text with the outcome they must get: the tests replay it, bench/fuzz.py adds to it.

`expect` is what an input must become when that is known without the code under test: "features",
or the reasons allowed; None when a random mutation may become anything but an unknown reason.
"""

from __future__ import annotations

import base64
import io
import json
import random
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FEATURES = "features"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REGRESSIONS = Path(__file__).with_name("decode_regressions.json")


@dataclass(frozen=True)
class Hostile:
    name: str  # a file name the uploader accepts: .jpg, .jpeg or .png, any case
    data: bytes
    family: str  # how it was made: "jpeg-marker/sof-huge", "foreign/TIFF", "bitflip/png"...
    expect: frozenset[str] | None  # FEATURES and/or reasons; None: any known reason or features


Case = tuple[str, bytes, "set[str] | None"]  # (family, data, expect) before naming


def generate(seed: int, mutations: int, images: Path, crafted: bool = True) -> list[Hostile]:
    """The crafted files (unless `crafted` is False), then `mutations` random mutations."""
    rng = random.Random(seed)
    jpegs, pngs = _sources(rng, images)
    first_jpeg, first_png = next(iter(jpegs.values())), next(iter(pngs.values()))
    fixed = (
        [
            *_exotic_modes(),
            *_foreign_formats(),
            *_junk(rng),
            *_bombs(),
            *_exif_cases(first_jpeg),
            *_jpeg_structure(first_jpeg, jpegs["progressive"]),
            *_png_structure(first_png),
            *_multi_frame(first_jpeg),
        ]
        if crafted
        else []
    )
    mutated: list[Case] = []
    for _ in range(mutations):
        kind = rng.choice(list(_MUTATIONS))
        pool = {"jpeg-marker": jpegs, "png-chunk": pngs}.get(kind, jpegs | pngs)
        source = rng.choice(sorted(pool))
        mutated.append((f"{kind}/{source}", _MUTATIONS[kind](rng, pool[source]), None))
    extensions = [".jpg", ".jpeg", ".JPG", ".png", ".PNG"]  # names never choose the parser
    return [
        Hostile(
            f"{i:04d}-{re.sub('[^A-Za-z0-9]+', '-', family)}{rng.choice(extensions)}",
            data,
            family,
            None if expect is None else frozenset(expect),
        )
        for i, (family, data, expect) in enumerate(fixed + mutated)
    ]


@dataclass(frozen=True)
class Regression:
    name: str
    data: bytes
    expect: str  # FEATURES or a reason; what bench/fuzz.py saw when it found it, until someone fixes it
    found: str  # how and why it was found


def load_regressions(path: Path = REGRESSIONS) -> list[Regression]:
    return [
        Regression(e["name"], base64.b64decode(e["base64"]), e["expect"], e["found"])
        for e in json.loads(path.read_text())["entries"]
    ]


def add_regressions(new: list[Regression], path: Path = REGRESSIONS) -> list[Regression]:
    """Append the entries whose bytes the corpus does not hold yet; returns those."""
    document = json.loads(path.read_text())
    known = {base64.b64decode(e["base64"]) for e in document["entries"]}
    added = []
    for regression in new:
        if regression.data not in known:
            known.add(regression.data)
            added.append(regression)
            document["entries"].append(
                {
                    "name": regression.name,
                    "expect": regression.expect,
                    "found": regression.found,
                    "base64": base64.b64encode(regression.data).decode(),
                }
            )
    path.write_text(json.dumps(document, indent=1) + "\n")
    return added


# ----------------------------------------------------------------------------- sources
def _encode(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def _sources(rng: random.Random, images: Path) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Real Fruits-360 JPEGs (and one progressive, 480 px), and PNGs made from them in the modes PNG
    files come in, by name."""
    files = sorted((images / "subset").glob("*/*.jpg"))
    jpegs = {f"jpeg{k}": f.read_bytes() for k, f in enumerate(rng.sample(files, 6))}
    photo = Image.open(io.BytesIO(jpegs["jpeg0"])).convert("RGB")
    alpha = photo.convert("RGBA")
    alpha.putalpha(Image.linear_gradient("L").resize(photo.size))
    jpegs["progressive"] = _encode(photo.resize((480, 480)), "JPEG", progressive=True, quality=80)
    pngs = {
        "png-rgb": _encode(photo, "PNG"),
        "png-rgba": _encode(alpha, "PNG"),
        "png-palette": _encode(photo.convert("P"), "PNG"),
        "png-gray": _encode(photo.convert("L"), "PNG"),
    }
    return jpegs, pngs


def _gradient(mode: str, size: tuple[int, int] = (64, 48)) -> Image.Image:
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, axis=0)
    rgb = Image.fromarray(np.stack([x, x[::-1, ::-1], np.full_like(x, 90)], axis=-1))
    return rgb if mode == "RGB" else rgb.convert(mode)


# ----------------------------------------------------------------------------- PNG by hand
def png_chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc & 0xFFFFFFFF)


def png_raw(
    width: int, height: int, depth: int, color: int, rows: bytes, *extra: bytes, interlace: int = 0, compress: int = 6
) -> bytes:
    """A PNG written by hand: any depth and colour type, valid or not; `rows` are the filtered rows."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, interlace)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + b"".join(extra)
        + png_chunk(b"IDAT", zlib.compress(rows, compress))
        + png_chunk(b"IEND", b"")
    )


def _deep_png(width: int, height: int, channels: int, color: int, top: int) -> bytes:
    values = np.linspace(0, top, width * channels, dtype=np.uint16)[None, :].repeat(height, axis=0)
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in values)
    return png_raw(width, height, 16, color, rows)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of each chunk of a well-formed PNG."""
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def png_join(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return PNG_SIGNATURE + b"".join(png_chunk(kind, body) for kind, body in chunks)


# ----------------------------------------------------------------------------- JPEG by hand
def jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The marker segments before the first scan as (marker, payload), and the rest from that scan on."""
    segments, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segments.append((marker, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
    return segments, data[pos:]


def jpeg_join(segments: list[tuple[int, bytes]], rest: bytes) -> bytes:
    return b"\xff\xd8" + b"".join(bytes([0xFF, m]) + struct.pack(">H", len(p) + 2) + p for m, p in segments) + rest


def _edit_sof(data: bytes, edit: Callable[[bytearray], None], marker: int | None = None) -> bytes:
    segments, rest = jpeg_segments(data)
    out = []
    for m, payload in segments:
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            body = bytearray(payload)
            edit(body)
            m, payload = marker or m, bytes(body)
        out.append((m, payload))
    return jpeg_join(out, rest)


def _with_segment(data: bytes, marker: int, payload: bytes) -> bytes:
    segments, rest = jpeg_segments(data)
    return jpeg_join([segments[0], (marker, payload), *segments[1:]], rest)


def exif_block(entries: list[tuple[int, int, int, bytes]], big_endian: bool = False) -> bytes:
    """A TIFF/EXIF IFD0 with raw (tag, type, count, value-or-offset) entries: any type, any count."""
    order = ">" if big_endian else "<"
    head = (b"MM\x00\x2a" if big_endian else b"II\x2a\x00") + struct.pack(order + "I", 8)
    ifd = struct.pack(order + "H", len(entries)) + b"".join(
        struct.pack(order + "HHI", tag, kind, count) + value.ljust(4, b"\0")[:4] for tag, kind, count, value in entries
    )
    return head + ifd + struct.pack(order + "I", 0)


# ----------------------------------------------------------------------------- the crafted set
def _exotic_modes() -> list[Case]:
    """Every mode and depth JPEG and PNG files come in (valid: features), and the exotic modes only other
    formats can hold (TIFF under an image name: never parsed)."""
    valid: list[Case] = [
        (f"mode/png-{mode}", _encode(_gradient(mode), "PNG"), {FEATURES})
        for mode in ("1", "L", "LA", "P", "RGB", "RGBA")
    ]
    valid += [
        ("mode/png-P-transparency", _encode(_gradient("P"), "PNG", transparency=3), {FEATURES}),
        ("mode/png-I16", _deep_png(64, 48, 1, 0, 65535), {FEATURES}),
        ("mode/png-I16-low", _deep_png(64, 48, 1, 0, 200), {FEATURES}),
        ("mode/png-LA16", _deep_png(64, 48, 2, 4, 65535), {FEATURES}),
        ("mode/png-RGB16", _deep_png(64, 48, 3, 2, 65535), {FEATURES}),
        ("mode/png-RGBA16", _deep_png(64, 48, 4, 6, 65535), {FEATURES}),
        ("mode/png-L2", png_raw(8, 4, 2, 0, b"".join(b"\0\x1b\xe4" for _ in range(4))), {FEATURES}),
        ("mode/png-P4", png_raw(4, 2, 4, 3, b"\0\x01\x23" * 2, png_chunk(b"PLTE", bytes(range(48)))), {FEATURES}),
        ("mode/png-P-no-palette", png_raw(4, 2, 8, 3, b"\0\0\0\0\0" * 2), None),
    ]
    valid += [
        (f"mode/jpeg-{mode}", _encode(_gradient(mode), "JPEG"), {FEATURES}) for mode in ("L", "RGB", "CMYK", "YCbCr")
    ]
    valid.append(("mode/jpeg-1", _encode(_gradient("1"), "JPEG"), {FEATURES}))
    foreign = [
        (
            f"mode/tiff-{mode.replace(';', '')}",
            _encode(_gradient(mode) if mode not in ("F", "I;16B", "I") else _gradient("L").convert(mode), "TIFF"),
            {"unsupported_format"},
        )
        for mode in ("LAB", "YCbCr", "RGBX", "I", "I;16B", "F", "CMYK", "LA")
    ]
    return (
        valid
        + foreign
        + [
            ("mode/tiff-La-issue-20", premultiplied_tiff("LA"), {"unsupported_format"}),
            ("mode/tiff-RGBA-premultiplied", premultiplied_tiff("RGBA"), {"unsupported_format"}),
        ]
    )


def premultiplied_tiff(mode: str) -> bytes:
    """A TIFF with premultiplied alpha, which Pillow cannot write: an LA or RGBA TIFF whose ExtraSamples
    tag says associated alpha. From LA: 274 bytes that Pillow opens in mode La, issue 20's upload."""
    data = bytearray(_encode(Image.new(mode, (8, 8), (120,) * (len(mode) - 1) + (200,)), "TIFF"))
    tag = struct.pack("<HHIH", 338, 3, 1, 2)  # ExtraSamples: unassociated alpha
    pos = data.index(tag)
    data[pos + 8 : pos + 10] = struct.pack("<H", 1)  # -> associated alpha
    return bytes(data)


def _foreign_formats() -> list[Case]:
    """Other formats Pillow can parse, under image names: rejected before their parser runs."""
    written = {
        "TIFF": ("RGB", {}),
        "WEBP": ("RGB", {}),
        "GIF": ("P", {}),
        "BMP": ("RGB", {}),
        "ICO": ("RGB", {}),
        "PPM": ("RGB", {}),
        "PCX": ("RGB", {}),
        "QOI": ("RGB", {}),
        "DDS": ("RGB", {}),
        "JPEG2000": ("RGB", {}),
        "SGI": ("RGB", {}),
        "XBM": ("1", {}),
        "AVIF": ("RGB", {}),
        "BLP": ("P", {}),
        "MSP": ("1", {}),
        "EPS": ("RGB", {}),
    }
    cases: list[Case] = [
        (f"foreign/{fmt}", _encode(_gradient(mode), fmt, **options), {"unsupported_format"})
        for fmt, (mode, options) in written.items()
        if fmt in Image.SAVE
    ]
    cases.append(("foreign/WEBP-lossless", _encode(_gradient("RGB"), "WEBP", lossless=True), {"unsupported_format"}))
    psd = b"8BPS\x00\x01" + b"\0" * 6 + struct.pack(">HIIHH", 3, 48, 64, 8, 3) + b"\0" * 12 + b"\0\0" + b"\x80" * 64
    cases += [
        ("foreign/PSD", psd, {"unsupported_format"}),
        # No signature: nothing recognises them (TGA's first bytes can look like a cursor's).
        ("foreign/TGA", _encode(_gradient("RGB"), "TGA"), {"not_an_image", "unsupported_format"}),
        ("foreign/IM", _encode(_gradient("RGB"), "IM"), {"not_an_image"}),
        ("foreign/PDF", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", {"not_an_image"}),
        ("foreign/SVG", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', {"not_an_image"}),
        ("foreign/HEIC", b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64, None),
    ]
    return cases


def _junk(rng: random.Random) -> list[Case]:
    text = b"not an image, just a note: kumquats 3, limes 2\n" * 10
    return [
        ("junk/zero-bytes", b"", {"empty"}),
        ("junk/one-byte", b"\xff", {"not_an_image"}),
        ("junk/text", text, {"not_an_image"}),
        ("junk/script", b"#!/bin/sh\nrm -rf /\n", {"not_an_image"}),
        ("junk/nul", b"\0" * 4096, {"not_an_image"}),
        ("junk/jpeg-signature-only", b"\xff\xd8\xff", {"corrupt", "truncated"}),
        ("junk/png-signature-only", PNG_SIGNATURE, {"corrupt", "truncated"}),
        *[(f"junk/random-{n}", rng.randbytes(n), {"not_an_image", "unsupported_format"}) for n in (7, 100, 5000)],
        ("junk/jpeg-then-random", b"\xff\xd8\xff\xe0" + rng.randbytes(3000), None),
        ("junk/png-then-random", PNG_SIGNATURE + rng.randbytes(3000), {"corrupt", "truncated"}),
    ]


def png_header_only(width: int, height: int, depth: int = 8, color: int = 2) -> bytes:
    """A tiny PNG that declares any dimensions: a decompression bomb needs no pixel data to claim them."""
    return png_raw(width, height, depth, color, b"")


def _bombs() -> list[Case]:
    zeros = png_raw(9000, 9000, 8, 0, b"\0" * (9001 * 9000), compress=9)  # 81 MP of gray in 80 KB
    gray = png_raw(8000, 8000, 8, 0, b"\0" * (8001 * 8000), compress=9)  # 64 MP: fits the pixel limit, not the budget
    text_bomb = png_chunk(b"zTXt", b"comment\0\0" + zlib.compress(b"\0" * 20_000_000, 9))
    icc_bomb = png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(b"\0" * 20_000_000, 9))
    tiny = png_raw(4, 4, 8, 2, b"\0" + b"\x80" * 12 + (b"\0" + b"\x80" * 12) * 3)
    return [
        ("bomb/png-81mp-zeros", zeros, {"too_many_pixels"}),
        ("bomb/png-64mp-gray-over-budget", gray, {"too_many_pixels"}),
        ("bomb/png-header-60000", png_header_only(60_000, 60_000), {"too_many_pixels"}),
        ("bomb/png-header-2^31", png_header_only(2**31 - 1, 2**31 - 1), {"too_many_pixels", "corrupt"}),
        ("bomb/png-header-0x0", png_header_only(0, 0), {"bad_dimensions", "corrupt"}),
        ("bomb/png-ztxt", tiny[:33] + text_bomb + tiny[33:], {"corrupt", FEATURES}),
        ("bomb/png-iccp", tiny[:33] + icc_bomb + tiny[33:], {"corrupt", FEATURES}),
        ("bomb/png-excess-idat", png_raw(4, 4, 8, 0, b"\0" * 5_000_020, compress=9), {FEATURES, "corrupt"}),
    ]


def _exif_cases(jpeg: bytes) -> list[Case]:
    """Valid pixels under broken or hostile EXIF: EXIF never rejects an image (its orientation is ignored)."""
    orientation = lambda value, kind=3, count=1: exif_block([(0x0112, kind, count, value)])  # noqa: E731
    blocks = {
        "orientation-6": orientation(struct.pack("<H", 6)),
        "orientation-0": orientation(struct.pack("<H", 0)),
        "orientation-9": orientation(struct.pack("<H", 9)),
        "orientation-65535": orientation(struct.pack("<H", 65535)),
        "orientation-ascii": orientation(b"6\0", kind=2, count=2),
        "orientation-rational": exif_block([(0x0112, 5, 1, struct.pack("<I", 26))]) + struct.pack("<II", 6, 0),
        "orientation-count-1000": orientation(struct.pack("<I", 8), count=1000),
        "orientation-bad-type": orientation(struct.pack("<H", 6), kind=99),
        "ifd-loop": b"II\x2a\x00\x08\x00\x00\x00" + struct.pack("<HHHII", 1, 0x8769, 4, 1, 8) + struct.pack("<I", 8),
        "ifd-offset-far": b"II\x2a\x00" + struct.pack("<I", 2**31),
        "big-endian-6": exif_block([(0x0112, 3, 1, struct.pack(">H", 6))], big_endian=True),
        "garbage": bytes(range(256)) * 4,
        "empty": b"",
    }
    cases: list[Case] = [
        (f"exif/jpeg-{name}", _with_segment(jpeg, 0xE1, b"Exif\0\0" + block), {FEATURES})
        for name, block in blocks.items()
    ]
    png = _encode(_gradient("RGB"), "PNG")
    cases += [
        (f"exif/png-{name}", png[:33] + png_chunk(b"eXIf", block) + png[33:], {FEATURES})
        for name, block in blocks.items()
        if name in ("orientation-6", "ifd-loop", "garbage")
    ]
    cases.append(
        ("exif/png-exif-after-idat", png[:-12] + png_chunk(b"eXIf", blocks["orientation-6"]) + png[-12:], {FEATURES})
    )
    cases.append(
        (
            "exif/jpeg-xmp-orientation",
            _with_segment(jpeg, 0xE1, b'http://ns.adobe.com/xap/1.0/\0<x:xmpmeta tiff:Orientation="6"/>'),
            {FEATURES},
        )
    )
    return cases


def _jpeg_structure(jpeg: bytes, progressive: bytes) -> list[Case]:
    def sof(offset: int, value: bytes) -> Callable[[bytearray], None]:
        def edit(body: bytearray) -> None:
            body[offset : offset + len(value)] = value

        return edit

    segments, rest = jpeg_segments(jpeg)
    full_chroma = _encode(_gradient("RGB"), "JPEG", progressive=True, subsampling=0)
    first_scan = progressive.index(b"\xff\xda")
    second_scan = progressive.index(b"\xff\xda", first_scan + 2)
    scans = [i for i in range(len(progressive) - 1) if progressive[i : i + 2] == b"\xff\xda"]
    smallest = min(range(len(scans) - 1), key=lambda k: scans[k + 1] - scans[k])
    scan = progressive[scans[smallest] : scans[smallest + 1]]
    return [
        ("jpeg-marker/sof-65535x65535", _edit_sof(jpeg, sof(1, b"\xff\xff\xff\xff")), {"too_many_pixels"}),
        ("jpeg-marker/sof-height-0", _edit_sof(jpeg, sof(1, b"\0\0")), {"bad_dimensions", "corrupt"}),
        ("jpeg-marker/sof-12-bit", _edit_sof(jpeg, sof(0, b"\x0c")), {"corrupt"}),
        ("jpeg-marker/sof-2-components", _edit_sof(jpeg, sof(5, b"\x02")), {"corrupt"}),
        ("jpeg-marker/sof-sampling-0", _edit_sof(jpeg, sof(7, b"\x00")), {"corrupt"}),
        ("jpeg-marker/sof-sampling-15", _edit_sof(jpeg, sof(7, b"\xff")), {"corrupt"}),
        ("jpeg-marker/sof-progressive", _edit_sof(jpeg, lambda b: None, marker=0xC2), None),
        ("jpeg-marker/sof-lossless", _edit_sof(jpeg, lambda b: None, marker=0xC3), None),
        ("jpeg-marker/sof-arithmetic", _edit_sof(jpeg, lambda b: None, marker=0xC9), None),
        ("jpeg-marker/no-eoi", jpeg[:-2], {FEATURES, "truncated", "corrupt"}),
        ("jpeg-marker/no-huffman", jpeg_join([s for s in segments if s[0] != 0xC4], rest), None),  # libjpeg's defaults
        ("jpeg-marker/no-quantization", jpeg_join([s for s in segments if s[0] != 0xDB], rest), {"corrupt"}),
        ("jpeg-marker/no-scan", jpeg_join(segments, b"\xff\xd9"), {"corrupt", "truncated"}),
        ("jpeg-marker/restart-interval-1", jpeg_join([*segments, (0xDD, b"\0\x01")], rest), {"corrupt", FEATURES}),
        ("jpeg-marker/segment-length-overflow", jpeg[:4] + b"\xff\xff" + jpeg[6:], None),
        (
            "jpeg-marker/thousand-scans",
            progressive[:second_scan] + scan * 1000 + progressive[second_scan:],
            {"corrupt"},
        ),
        # 8000x8000 progressive: libjpeg's coefficient buffer alone is over the budget at 4:4:4, not at 4:2:0.
        ("jpeg-marker/progressive-444-huge", _edit_sof(full_chroma, sof(1, b"\x1f\x40\x1f\x40")), {"too_many_pixels"}),
        (
            "jpeg-marker/progressive-420-huge",
            _edit_sof(progressive[:second_scan] + b"\xff\xd9", sof(1, b"\x1f\x40\x1f\x40")),
            None,
        ),
    ]


def _png_structure(png: bytes) -> list[Case]:
    chunks = png_chunks(png)
    ihdr = chunks[0][1]

    def with_ihdr(body: bytes, crc: int | None = None) -> bytes:
        return PNG_SIGNATURE + png_chunk(b"IHDR", body, crc) + b"".join(png_chunk(k, b) for k, b in chunks[1:])

    def ihdr_with(depth: int, color: int) -> bytes:
        return ihdr[:8] + bytes([depth, color]) + ihdr[10:]

    idat = b"".join(b for k, b in chunks if k == b"IDAT")
    return [
        ("png-chunk/ihdr-bad-crc", with_ihdr(ihdr, crc=0xDEADBEEF), {"corrupt"}),
        ("png-chunk/ihdr-huge-dims", with_ihdr(struct.pack(">II", 100_000, 100_000) + ihdr[8:]), {"too_many_pixels"}),
        ("png-chunk/ihdr-depth-3", with_ihdr(ihdr_with(3, 2)), {"corrupt"}),
        ("png-chunk/ihdr-color-5", with_ihdr(ihdr_with(8, 5)), {"corrupt"}),
        ("png-chunk/ihdr-16-bit-palette", with_ihdr(ihdr_with(16, 3)), {"corrupt"}),
        ("png-chunk/ihdr-interlace-7", with_ihdr(ihdr[:12] + b"\x07"), None),
        ("png-chunk/ihdr-short", PNG_SIGNATURE + png_chunk(b"IHDR", ihdr[:5]), {"corrupt", "truncated"}),
        ("png-chunk/idat-bad-crc", png[: -12 - 12 - 4] + b"\0\0\0\0" + png[-12:], None),
        (
            "png-chunk/idat-garbage",
            png_join([(k, b if k != b"IDAT" else bytes(len(b))) for k, b in chunks]),
            {"corrupt", "truncated"},
        ),
        ("png-chunk/no-idat", png_join([(k, b) for k, b in chunks if k != b"IDAT"]), {"corrupt", "truncated"}),
        ("png-chunk/no-iend", png[:-12], {FEATURES, "truncated", "corrupt"}),
        (
            "png-chunk/idat-split-bytes",
            png_join([chunks[0], *((b"IDAT", idat[i : i + 1]) for i in range(len(idat))), (b"IEND", b"")]),
            {FEATURES},
        ),
        ("png-chunk/unknown-critical", png_join([chunks[0], (b"ABCD", b"x"), *chunks[1:]]), None),
        ("png-chunk/plte-in-rgb-300-entries", png_join([chunks[0], (b"PLTE", bytes(900)), *chunks[1:]]), None),
        ("png-chunk/trns-too-long", png_join([chunks[0], (b"tRNS", bytes(5000)), *chunks[1:]]), None),
        ("png-chunk/length-2^31", png[:33] + struct.pack(">I", 2**31 - 1) + png[37:], None),
        (
            "png-chunk/many-text-chunks",
            png_join([chunks[0], *[(b"tEXt", b"k\0" + b"v" * 100)] * 5000, *chunks[1:]]),
            {FEATURES},
        ),
    ]


def _multi_frame(jpeg: bytes) -> list[Case]:
    frames = [_gradient("RGB"), _gradient("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    apng = _encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)
    chunks = png_chunks(apng)
    broken_fctl = png_join(
        [(k, b[:4] + struct.pack(">II", 10_000, 10_000) + b[12:] if k == b"fcTL" else b) for k, b in chunks]
    )
    huge_actl = png_join([(k, struct.pack(">II", 2**31 - 1, 0) if k == b"acTL" else b) for k, b in chunks])
    photo = Image.open(io.BytesIO(jpeg))
    mpo = _encode(photo, "MPO", save_all=True, append_images=[photo.transpose(Image.Transpose.ROTATE_90)])
    return [
        ("multi/apng", apng, {FEATURES}),
        ("multi/apng-fctl-huge", broken_fctl, None),
        ("multi/apng-actl-huge", huge_actl, None),
        ("multi/mpo", mpo, {FEATURES}),
        ("multi/mpo-truncated-index", mpo[:300] + mpo[300:600][::-1] + mpo[600:], None),
    ]


# ----------------------------------------------------------------------------- random mutations
def _bitflip(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice([1, 2, 4, 8, 32])):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.choice([rng.randrange(1, 64), rng.randrange(len(data)), len(data) - rng.randrange(1, 16)])]


def _splice(rng: random.Random, data: bytes) -> bytes:
    """A random run of bytes duplicated, removed or overwritten."""
    start = rng.randrange(len(data))
    end = min(len(data), start + rng.randrange(1, 512))
    return rng.choice(
        [data[:end] + data[start:], data[:start] + data[end:], data[:start] + rng.randbytes(end - start) + data[end:]]
    )


def _jpeg_marker(rng: random.Random, data: bytes) -> bytes:
    """One header segment of a real JPEG edited: a byte of its payload, its length, or the marker itself."""
    segments, rest = jpeg_segments(data)
    k = rng.randrange(len(segments))
    marker, payload = segments[k]
    choice = rng.randrange(4)
    if choice == 0 and payload:
        body = bytearray(payload)
        body[rng.randrange(len(body))] = rng.choice([0, 1, 2, 0x0F, 0x10, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        segments[k] = (marker, bytes(body))
    elif choice == 1:
        segments[k] = (rng.choice([0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC9, 0xCC, 0xDB, 0xDD, 0xE1, 0xFE]), payload)
    elif choice == 2:
        segments.insert(k, segments[k])
    else:
        return (
            jpeg_join(segments[:k], b"")
            + bytes([0xFF, marker])
            + struct.pack(">H", rng.choice([0, 1, 2, 3, 0xFFFF]))
            + payload
            + jpeg_join(segments[k + 1 :], rest)[2:]
        )
    return jpeg_join(segments, rest)


def _png_chunk_edit(rng: random.Random, data: bytes) -> bytes:
    """One chunk of a real PNG edited (with or without a right CRC), dropped, repeated or moved."""
    chunks = png_chunks(data)
    k = rng.randrange(len(chunks))
    kind, body = chunks[k]
    choice = rng.randrange(5)
    if choice == 0 and body:
        edited = bytearray(body)
        edited[rng.randrange(len(edited))] = rng.randrange(256)
        chunks[k] = (kind, bytes(edited))
    elif choice == 1:
        del chunks[k]
    elif choice == 2:
        chunks.insert(rng.randrange(len(chunks) + 1), chunks[k])
    elif choice == 3:
        chunks.insert(
            rng.randrange(1, len(chunks) + 1),
            (
                rng.choice([b"PLTE", b"tRNS", b"acTL", b"fcTL", b"fdAT", b"iCCP", b"sBIT", b"gAMA", b"eXIf"]),
                rng.randbytes(rng.randrange(40)),
            ),
        )
    else:  # a wrong CRC
        out = bytearray(png_join(chunks))
        pos = len(PNG_SIGNATURE) + sum(12 + len(b) for _, b in chunks[:k]) + 8 + len(body)
        out[pos : pos + 4] = rng.randbytes(4)
        return bytes(out)
    return png_join(chunks)


def _huge_dimensions(rng: random.Random, data: bytes) -> bytes:
    """A real image declaring other dimensions than its pixels: huge, zero or off by a little."""
    width, height = rng.choice(
        [
            (65535, 65535),
            (65535, 1),
            (1, 65535),
            (8000, 8000),
            (10_000, 7000),
            (0, 5),
            (101, 100),
            (50, 50),
            (rng.randrange(1, 20000), rng.randrange(1, 20000)),
        ]
    )
    if data.startswith(PNG_SIGNATURE):
        chunks = png_chunks(data)
        chunks[0] = (b"IHDR", struct.pack(">II", width, height) + chunks[0][1][8:])
        return png_join(chunks)

    def edit(body: bytearray) -> None:
        body[1:5] = struct.pack(">HH", min(height, 65535), min(width, 65535))

    return _edit_sof(data, edit)


_MUTATIONS: dict[str, Callable[[random.Random, bytes], bytes]] = {
    "bitflip": _bitflip,
    "truncate": _truncate,
    "splice": _splice,
    "jpeg-marker": _jpeg_marker,
    "png-chunk": _png_chunk_edit,
    "huge-dims": _huge_dimensions,
}
