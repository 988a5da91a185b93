"""Why an upload has no features: the `reason` codes of the errors table and of the fit's skipped files.

One table for every code anyone writes, cited by the README. A code keeps its meaning forever;
a new kind of failure gets a new code here first. The `detail` next to a reason says more, for people.
"""

from __future__ import annotations

REASONS: dict[str, str] = {
    # Set while decoding (fruits/decode.py)
    "empty": "the file has 0 bytes",
    "not_an_image": "its content is no image format at all (text, a script, random bytes)",
    "unsupported_format": "an image in a format other than JPEG or PNG (TIFF, WebP, GIF, BMP...): never parsed",
    "truncated": "the image data ends before the image does",
    "corrupt": "the decoder refuses its data (or a JPEG of more scans than any encoder writes)",
    "bad_dimensions": "the image declares a zero width or height",
    "too_many_pixels": "over the pixel limit (decompression bombs), or decoding it would hold more than 4 bytes per "
    "pixel of that limit: its pixels as Pillow stores them (16-bit, alpha, multi-channel), their "
    "RGB or rotated copy, libjpeg's whole-image buffer of a progressive JPEG",
    "unsupported_mode": "it decodes to a pixel format the conversion does not know",
    "decode_failed": "decoding failed in a way none of the codes above explains; the detail names the exception "
    "(a decoder bug, or memory exhausted)",
    # Set while featurizing (fruits/featurize.py)
    "engine_failed": "the inference engine failed on this image alone (its chunk was retried image by image)",
    # Set by the stream before reading a file (streaming/batch.py)
    "too_large": "over the file size limit: never read",
    "missing": "deleted or replaced between the listing (or the notification) and the read",
    # Set by the stream when the upload fails its whole micro-batch (streaming/poison.py)
    "poison": "it fails its micro-batch's Spark task alone (a Python worker killed or crashed, an exception that "
    "escaped featurizing); the detail names the failure",
}
POISON = "poison"
EMPTY_DETAIL = "file has 0 bytes"

MAX_DETAIL = 300  # characters: enough for an exception's message, small enough for a table cell


def unread_reason(size: int | None, max_bytes: int, missing: str) -> tuple[str, str]:
    """(reason, detail) of an upload the stream was given but did not read, from its size (None: it is gone):
    over the limit, empty, else missing (`missing` says how it went: the source knows). The one rule for
    both sources (streaming/batch.py)."""
    if size is not None and size > max_bytes:
        return "too_large", f"{size:,} bytes is over the {max_bytes:,}-byte limit; not read"
    if size == 0:
        return "empty", EMPTY_DETAIL
    return "missing", missing


def exception_detail(exc: BaseException) -> str:
    """An exception as a `detail`: its class and message on one line, at most MAX_DETAIL characters, control
    characters and lone surrogates escaped (one must not fail the write of the errors table or of a TSV)."""
    try:
        message = str(exc)
    except Exception:  # an exception whose message itself fails
        message = "(unprintable message)"
    return bounded_detail(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)


def bounded_detail(text: str) -> str:
    """Any text as a `detail`: one line, control characters and lone surrogates escaped, at most MAX_DETAIL
    characters."""
    text = " ".join(text.split())
    safe = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return safe if len(safe) <= MAX_DETAIL else safe[: MAX_DETAIL - 3] + "..."
