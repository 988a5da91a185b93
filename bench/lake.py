"""Lake maintenance: files and full-table read time of the results table before and after compaction.

One run: `fruits stream` (in process) ingests `--uploads` copies of the stream/ images in
micro-batches of `--batch` files (what a steady trickle with a short trigger produces: one small
file per batch), then `fruits.lake.maintain` compacts and checkpoints the table. Reported, before
and after: data files, files per partition, and the best of `--repeats` full reads of every
column with delta-rs (to Arrow), Polars and DuckDB. The ratio is before / after.

    .venv/bin/python bench/lake.py [--uploads 5000] [--batch 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import DATA, ensure_model, image_files, land, machine, project_settings, save, scratch_state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=50, help="files per micro-batch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from deltalake import DeltaTable

    from fruits import lake
    from streaming.job import StreamingJob

    base = project_settings()
    files = image_files(DATA / "stream")
    work = Path(tempfile.mkdtemp(prefix="bench-lake-"))
    try:
        settings = base.replace(
            source=str(work / "landing"),
            output=str(work / "results"),
            errors=str(work / "errors"),
            checkpoint=str(work / "checkpoint"),
            trigger="available-now",
            max_files_per_trigger=args.batch,
            state_dir=scratch_state(work / "state", base),
            mlflow_tracking_uri=base.tracking_uri,
        )
        ensure_model(settings)
        for i in range(args.uploads):
            f = files[i % len(files)]
            land(f, work / "landing", f"c{i // len(files)}_{f.name}")
        print(f"{args.uploads} uploads in batches of {args.batch}; {machine()}", flush=True)
        started = time.perf_counter()
        job = StreamingJob(settings)
        job.start()
        job.run_until_stopped()
        summary = job.summary()
        job.spark.stop()
        print(f"streamed {summary['rows']} rows in {summary['batches']} batches, {time.perf_counter() - started:.0f} s")
        assert summary["rows"] == args.uploads, summary

        before = measure(DeltaTable(settings.output_uri), args.repeats)
        maintained = lake.maintain(settings, settings.output_uri)
        after = measure(DeltaTable(settings.output_uri), args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"maintenance took {maintained.seconds:.1f} s ({maintained.files_compacted} files compacted)")
    print(f"{'':28} {'before':>9} {'after':>9} {'before/after':>13}")
    for key in ("files", "max_files_per_partition", "rows", "read_deltalake_s", "read_polars_s", "read_duckdb_s"):
        b, a = before[key], after[key]
        print(f"{key:28} {b:9.3f} {a:9.3f} {b / a if a else float('nan'):13.1f}")
    path = save(
        "lake",
        {
            "uploads": args.uploads,
            "batch": args.batch,
            "before": before,
            "after": after,
            "maintenance": maintained.as_dict(),
        },
    )
    print(f"saved {path}")
    return 0 if after["rows"] == before["rows"] == args.uploads else 1


def measure(table, repeats: int) -> dict:
    import duckdb
    import polars as pl

    uri = table.table_uri
    files = table.file_uris()
    per_partition = Counter(Path(f).parent.name for f in files)

    def best(read) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            read()
            times.append(time.perf_counter() - start)
        return min(times)

    def with_duckdb() -> None:
        dataset = table.to_pyarrow_dataset()  # noqa: F841  (DuckDB scans it by name)
        duckdb.sql("select count(*), sum(len(features)) from dataset").fetchall()

    rows = table.to_pyarrow_table(columns=["path"]).num_rows
    return {
        "files": len(files),
        "max_files_per_partition": max(per_partition.values()),
        "rows": rows,
        "read_deltalake_s": best(lambda: table.to_pyarrow_table()),
        "read_polars_s": best(lambda: pl.read_delta(uri)),
        "read_duckdb_s": best(with_duckdb),
    }


if __name__ == "__main__":
    raise SystemExit(main())
