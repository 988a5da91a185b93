"""The stream's Delta sink over many micro-batches: the driver's memory and commit time.

A stream commits each micro-batch to its tables through one long-lived `fruits.sinks.LakeWriter`.
This runs `--batches` commits of `--rows` rows shaped like the stream's (1280 + 300 floats and the
model's columns; synthetic: no Spark, no images) through it, each variant in its own fresh Python
process, and reports RSS and per-commit time at the start and at the end:

- shipped: the sink re-opens its DeltaTable every `REOPEN_EVERY_VERSIONS` versions (from the
  latest checkpoint);
- baseline, measured in the same run: the same sink never re-opening, kept current with
  `update_incremental()` only (what the stream did before; its memory grew with every commit).

    .venv/bin/python bench/commits.py [--batches 800] [--rows 60]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC

from common import ROOT, machine, python_env, save


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=800, help="micro-batches committed (>= 300)")
    parser.add_argument("--rows", type=int, default=60, help="result rows per micro-batch")
    parser.add_argument("--variant", choices=["shipped", "baseline"], help=argparse.SUPPRESS)  # one child run
    args = parser.parse_args()
    if args.batches < 300:
        sys.exit("commits.py: --batches must be at least 300 (three checkpoints)")
    if args.variant:
        print(json.dumps(run(args.variant, args.batches, args.rows)))
        return 0

    print(f"{args.batches} commits of {args.rows} rows to a local Delta table; {machine()}", flush=True)
    runs = {}
    for variant in ("baseline", "shipped"):
        out = subprocess.run(
            [sys.executable, __file__, "--variant", variant, "--batches", str(args.batches), "--rows", str(args.rows)],
            cwd=ROOT,
            env=python_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        runs[variant] = json.loads(out.strip().splitlines()[-1])
    print(f"\n{'':34}  {'baseline':>10}  {'shipped':>10}  shipped/baseline")
    for key, label, unit in (
        ("rss_start_mib", "RSS after the first 100 commits", "MiB"),
        ("rss_end_mib", "RSS after the last commit", "MiB"),
        ("rss_growth_mib", "RSS growth, first 100 -> last", "MiB"),
        ("commit_ms_first", "commit time, commits 100-200", "ms"),
        ("commit_ms_last", "commit time, last 100 commits", "ms"),
    ):
        b, s = runs["baseline"][key], runs["shipped"][key]
        ratio = f"{s / b:.2f}" if b else "-"
        print(f"{label:34}  {b:8.1f} {unit:>3}  {s:8.1f} {unit:>3}  {ratio}")
    path = save("commits", {"batches": args.batches, "rows": args.rows, **runs})
    print(f"saved {path}")
    return 0


def run(variant: str, batches: int, n: int) -> dict:
    """One variant in this (fresh) process: RSS and mean commit time, early and late."""
    from datetime import datetime

    import numpy as np
    import psutil
    import pyarrow as pa

    from fruits import sinks
    from fruits.settings import Settings

    if variant == "baseline":
        sinks.REOPEN_EVERY_VERSIONS = 10**12
    work = tempfile.mkdtemp(prefix="bench-commits-")
    settings = Settings.load(output=f"{work}/results", errors=f"{work}/errors", state_dir=f"{work}/state")
    writer = sinks.LakeWriter(settings, "bench")
    now = datetime.now(UTC)
    rng = np.random.default_rng(0)

    def rows(batch: int) -> pa.Table:
        return pa.Table.from_pydict(
            {
                "path": [f"/landing/c/{batch}_{i}.jpg" for i in range(n)],
                "label": ["c"] * n,
                "size": [5000] * n,
                "modification_time": [now] * n,
                "ingest_time": [now] * n,
                "features": list(rng.random((n, 1280), dtype=np.float32)),
                "pca": list(rng.random((n, 300), np.float32)),
                "prediction": ["c"] * n,
                "confidence": [0.9] * n,
                "novelty_score": [0.1] * n,
                "is_novel": [False] * n,
                "model_name": ["m"] * n,
                "model_version": ["1"] * n,
                "featurizer_sha256": ["x"] * n,
                "ingest_date": [now.date()] * n,
            },
            schema=sinks.RESULTS.schema,
        )

    errors = sinks.ERRORS.schema.empty_table()
    process = psutil.Process()
    seconds, rss_start = [], 0.0
    for batch in range(batches):
        data = rows(batch)
        started = time.perf_counter()
        if not writer.done(batch):  # what MicroBatch does: check, then commit
            writer.commit(batch, data, errors)
        seconds.append(time.perf_counter() - started)
        if batch == 99:
            rss_start = process.memory_info().rss / 2**20
    rss_end = process.memory_info().rss / 2**20
    return {
        "rss_start_mib": round(rss_start, 1),
        "rss_end_mib": round(rss_end, 1),
        "rss_growth_mib": round(rss_end - rss_start, 1),
        "commit_ms_first": round(1000 * float(np.mean(seconds[100:200])), 1),
        "commit_ms_last": round(1000 * float(np.mean(seconds[-100:])), 1),
    }


if __name__ == "__main__":
    sys.exit(main())
