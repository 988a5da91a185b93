"""Shared benchmark helpers: where the data is, timing, and a printed table of ratios.

Benchmarks print ratios against a baseline measured in the same run, because machines here
are shared and noisy: an absolute number from another day means little, a ratio much more.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("FRUITS_SHARED_DIR") or ROOT.parent / "shared").resolve()
DATA = SHARED / "data" / "fruits360"
OUT = ROOT / "bench" / "out"


def machine() -> str:
    cores = os.cpu_count()
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    return f"{platform.machine()} {cores} cores, {mem:.0f} GiB, Python {platform.python_version()}, {platform.system()}"


def best_of(repeats: int, fn: Callable[[], int]) -> tuple[float, list[float]]:
    """Run `fn` (returns items processed) `repeats` times; items/s of the best run, and all runs."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        items = fn()
        rates.append(items / (time.perf_counter() - start))
    return max(rates), rates


def table(title: str, rows: list[tuple[str, float, str]], baseline: float, unit: str = "images/s") -> str:
    width = max(len(r[0]) for r in rows)
    lines = [title, f"{'':{width}}  {unit:>10}  {'ratio':>7}  note"]
    for name, value, note in rows:
        lines.append(f"{name:{width}}  {value:10.1f}  {value / baseline:7.2f}  {note}")
    return "\n".join(lines)


def save(name: str, payload: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def median(values: list[float]) -> float:
    return statistics.median(values)
