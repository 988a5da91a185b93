"""The decode's memory and speed: v1 (before issue 20, tests/decode_v1.py) against now, in one run.

Memory: the peak RSS one decode adds, in a fresh child process per image and decoder, for the worst
images under the 64-megapixel limit (8000x8000 PNGs of each mode, progressive JPEGs) and the largest
each mode may now be within the budget (max_image_pixels x 4 bytes). Speed: images/s over the real
images of subset/ (320 small JPEGs), both decoders in this process.

    .venv/bin/python bench/decode.py [--max-pixels 64000000] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA, ROOT, best_of, machine, save, table

sys.path.insert(0, str(ROOT / "tests"))


def _child(decoder: str, path: str, max_pixels: int) -> None:
    """Decode one file and print what it became and the RSS the decode added (MB)."""
    data = Path(path).read_bytes()
    if decoder == "v1":
        from decode_v1 import decode_v1 as run
    else:
        from fruits.decode import decode as run
    before = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    assert peak_rss() < before + 50e6, "the child starts near its high-water mark"
    start = time.perf_counter()
    try:
        run(data, max_pixels)
        outcome = "features"
    except Exception as exc:  # v1 raises anything; now only Rejected
        outcome = getattr(exc, "reason", type(exc).__name__)
    peak = peak_rss()
    ms = 1000 * (time.perf_counter() - start)
    print(json.dumps({"outcome": outcome, "peak_mb": (peak - before) / 1e6, "ms": ms}))


def peak_rss() -> int:
    """This process's peak resident memory in bytes (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _measure(decoder: str, path: Path, max_pixels: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", decoder, str(path), str(max_pixels)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _worst_images(folder: Path, max_pixels: int) -> dict[str, Path]:
    import numpy as np
    from PIL import Image

    from hostile_images import exif_block, png_chunk

    def save(name: str, img: Image.Image, fmt: str, **options) -> None:
        img.save(folder / name, fmt, **options)

    side = int(max_pixels**0.5)
    x = np.linspace(0, 255, side, dtype=np.uint8)[None, :].repeat(side, axis=0)
    rgb = Image.fromarray(np.stack([x, x.T, np.full_like(x, 90)], axis=-1))
    deep = x.astype(np.uint16) * 257
    save("png-16-bit-gray", Image.fromarray(deep), "PNG", compress_level=1)
    save("png-rgba", rgb.convert("RGBA"), "PNG", compress_level=1)
    save("png-gray", rgb.convert("L"), "PNG", compress_level=1)
    save("png-rgb", rgb, "PNG", compress_level=1)
    save("jpeg-progressive-444", rgb, "JPEG", progressive=True, subsampling=0, quality=50)
    save("jpeg-progressive-420", rgb, "JPEG", progressive=True, subsampling=2, quality=50)
    save("jpeg-baseline", rgb, "JPEG", quality=50)
    png = (folder / "png-rgb").read_bytes()
    orientation = png_chunk(b"eXIf", exif_block([(0x0112, 3, 1, struct.pack("<H", 6))]))
    (folder / "png-rgb-rotated").write_bytes(png[:33] + orientation + png[33:])
    # The largest of each costly mode the budget now admits (bytes a pixel: 16-bit gray 2 + 4, RGBA 4 + 4).
    budget = max_pixels * 4
    gray_side, rgba_side = int((budget / 6) ** 0.5), int((budget / 8) ** 0.5)
    save(f"png-16-bit-gray-{gray_side}", Image.fromarray(deep[:gray_side, :gray_side]), "PNG", compress_level=1)
    save(f"png-rgba-{rgba_side}", rgb.crop((0, 0, rgba_side, rgba_side)).convert("RGBA"), "PNG", compress_level=1)
    return {p.name: p for p in sorted(folder.iterdir())}


def _speed(repeats: int) -> tuple[float, float]:
    from decode_v1 import decode_v1
    from fruits.decode import decode

    contents = [f.read_bytes() for f in sorted((DATA / "subset").glob("*/*.jpg"))]

    def rate(run) -> float:
        return best_of(repeats, lambda: sum(1 for data in contents if run(data, 64_000_000) is not None))[0]

    return rate(decode_v1), rate(decode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-pixels", type=int, default=64_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], int(args.child[2]))
        return
    print(f"decode memory and speed, v1 vs now; {machine()}", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in _worst_images(Path(tmp), args.max_pixels).items():
            v1, now = _measure("v1", path, args.max_pixels), _measure("now", path, args.max_pixels)
            rows.append({"image": name, "bytes": path.stat().st_size, "v1": v1, "now": now})
            print(
                f"  {name}: v1 {v1['outcome']} {v1['peak_mb']:.0f} MB, now {now['outcome']} {now['peak_mb']:.0f} MB",
                file=sys.stderr,
            )
    worst_v1 = max(r["v1"]["peak_mb"] for r in rows if r["v1"]["outcome"] == "features")
    worst_now = max(r["now"]["peak_mb"] for r in rows if r["now"]["outcome"] == "features")
    width = max(len(r["image"]) for r in rows)
    print(
        f"peak RSS one decode adds (MB), images of at most {args.max_pixels:,} pixels; "
        f"budget now {args.max_pixels * 4 / 1e6:,.0f} MB"
    )
    print(f"{'':{width}}  {'v1 MB':>7}  {'now MB':>7}  {'now/v1':>6}  now")
    for r in rows:
        print(
            f"{r['image']:{width}}  {r['v1']['peak_mb']:7.0f}  {r['now']['peak_mb']:7.0f}  "
            f"{r['now']['peak_mb'] / max(r['v1']['peak_mb'], 1):6.2f}  {r['now']['outcome']}"
        )
    print(f"worst accepted image: v1 {worst_v1:,.0f} MB, now {worst_now:,.0f} MB ({worst_now / worst_v1:.2f}x)")
    v1_rate, now_rate = _speed(args.repeats)
    print(
        table(
            "decode speed, subset/ (320 JPEGs, 100x100)", [("v1", v1_rate, "baseline"), ("now", now_rate, "")], v1_rate
        )
    )
    summary = {
        "max_pixels": args.max_pixels,
        "images": rows,
        "worst_accepted_mb": {"v1": worst_v1, "now": worst_now},
        "decode_images_per_s": {"v1": v1_rate, "now": now_rate},
    }
    save("decode", summary)
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
