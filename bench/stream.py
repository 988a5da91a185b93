"""Streaming job vs pure engine: steady-state throughput ratio, upload->commit latency, the driver's share.

One run, same machine, same images (stream/, 640 files):
1. baseline: pure ONNX Runtime in this process (all cores), bytes -> features, decode included,
   measured before and after the stream phases (their mean: this machine's speed drifts);
2. throughput: the job is started and warmed up on a few files, then a backlog of
   `--copies` x 640 uploads (new names) appears at once (one directory rename) and is drained
   (processingTime 1 s, --max-files-per-trigger). Steady state: the images of the batches after
   the first over the time from the first batch's commit to the last one's (each of those batches
   lists the folder, plans, reads, featurizes, collects and commits: the stream's every cost but
   its start). The whole drain (from the rename) is shown too;
3. latency: with a 1 s trigger, files trickle into the landing dir at `--rate` files/s; each
   file's latency is its batch's commit time minus the file's modification (upload) time;
4. the driver (--driver-files, default 10x the default batch of 1000): one micro-batch's frame
   built by the job's own MicroBatch.rows() over that many files, run twice: written nowhere
   (Spark's noop sink: executors only) and collected to the driver as Arrow then committed
   to a Delta table, as the job does. Their difference is what passing through the driver costs.

    .venv/bin/python bench/stream.py [--copies 6] [--rate 20] [--seconds 30] [--max-files 1000]
                                     [--driver-files 10000]

Numbers come from the job's JSON progress lines (stream-progress.jsonl), never from log wording.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import threading
import time
from datetime import UTC
from pathlib import Path

import numpy as np
from common import DATA, best_of, ensure_model, image_files, land, machine, project_settings, save, scratch_state

from fruits.featurize import Featurizer, featurize_batch, make_engine
from fruits.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=6, help="backlog = copies x the 640 stream images")
    parser.add_argument("--rate", type=float, default=20.0, help="files per second in the latency phase")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the latency phase")
    parser.add_argument("--max-files", type=int, default=1000, help="maxFilesPerTrigger")
    parser.add_argument(
        "--driver-files", type=int, default=10_000, help="files in the one micro-batch of the driver check (0: skip it)"
    )
    parser.add_argument("--verbose", action="store_true", help="print each micro-batch's timings")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")

    files = image_files(DATA / "stream")
    base = project_settings()
    featurizer = Featurizer.load(base.replace(weights="imagenet", engine="onnx"))
    contents = [f.read_bytes() for f in files]
    engine = make_engine("onnx", featurizer.payload, None)
    featurize_batch(engine, contents[:64], base.max_image_pixels)

    def pure_rate() -> float:
        return best_of(2, lambda: len(featurize_batch(engine, contents, base.max_image_pixels).features))[0]

    before = pure_rate()
    print(f"{len(files)} stream images; {machine()}")
    print(f"pure ONNX Runtime: {before:.1f} images/s (before the stream)")

    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    try:
        (throughput, drain), latency, settings, job = run_stream(base, files, work, args)
        driver = driver_share(settings, job, files, work, args.driver_files) if args.driver_files else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    after = pure_rate()
    pure = (before + after) / 2
    print(f"pure ONNX Runtime: {after:.1f} images/s (after the stream); baseline = mean {pure:.1f} images/s")
    ratio = throughput / pure
    print(
        f"streaming steady state: {throughput:.1f} images/s = {ratio:.2f} x pure ORT (goal >= 0.8); "
        f"whole drain from the rename: {drain:.1f} images/s = {drain / pure:.2f} x"
    )
    print(
        f"upload->commit latency at {args.rate:g} files/s, 1 s trigger: p50 {latency['latency_p50_s']:.2f} s, "
        f"p95 {latency['latency_p95_s']:.2f} s, max {latency['latency_max_s']:.2f} s "
        f"({latency['files']} files)"
    )
    if driver:
        print(
            f"one micro-batch of {driver['files']} files: executors only (noop) {driver['noop_s']:.1f} s; "
            f"collected to the driver as Arrow {driver['collect_s']:.1f} s ({driver['arrow_mb']:.0f} MB), "
            f"then Delta commit {driver['commit_s']:.1f} s: the driver adds "
            f"{driver['driver_share']:.0%} to the batch"
        )
    path = save(
        "stream",
        {
            "pure_ort_images_per_second": round(pure, 1),
            "pure_ort_before_after": [round(before, 1), round(after, 1)],
            "stream_images_per_second": round(throughput, 1),
            "ratio": round(ratio, 3),
            "drain_images_per_second": round(drain, 1),
            "drain_ratio": round(drain / pure, 3),
            "latency": latency,
            "driver": driver,
            "args": vars(args),
        },
    )
    print(f"saved {path}")


def run_stream(base: Settings, files: list[Path], work: Path, args):
    from streaming.job import StreamingJob

    landing = work / "landing"
    settings = base.replace(
        source=str(landing),
        output=str(work / "results"),
        errors=str(work / "errors"),
        checkpoint=str(work / "checkpoint"),
        trigger="1s",
        max_files_per_trigger=args.max_files,
        # Share the project's caches (ONNX export) and registry, but keep progress logs apart.
        state_dir=scratch_state(work / "state", base),
        mlflow_tracking_uri=base.tracking_uri,
    )
    ensure_model(settings)

    landing.mkdir()
    for f in files[::20]:
        land(f, landing / "warmup", f.name)
    staging = landing / "_backlog"  # Spark ignores _-prefixed folders until the rename
    for copy in range(args.copies):
        for f in files:
            land(f, staging, f"c{copy}_{f.name}")
    backlog = args.copies * len(files)

    job = StreamingJob(settings)
    job.start()
    job.process_available()  # warm: Python workers and their engines exist
    warm = len(_progress(settings))
    appeared = time.time()
    staging.rename(landing / "backlog")
    job.process_available()
    records = _progress(settings)[warm:]
    assert sum(r["files"] for r in records) == backlog, "backlog not fully committed"
    assert len(records) >= 3, "raise --copies: the steady state needs at least two batches after the first"
    drain = backlog / (records[-1]["committed_at"] - appeared)
    steady = sum(r["files"] for r in records[1:]) / (records[-1]["committed_at"] - records[0]["committed_at"])
    if args.verbose:
        for r in records:
            print(
                f"  batch {r['batch']}: {r['files']} files in {r['seconds']:.2f} s (commit {r['commit_seconds']:.2f} s)"
            )
    print(
        f"backlog of {backlog} files drained in {len(records)} batch(es) of at most {args.max_files}; "
        f"Delta commits took {sum(r['commit_seconds'] for r in records):.1f} s of "
        f"{sum(r['seconds'] for r in records):.1f} s"
    )

    # Latency phase: a steady trickle of uploads with the job idling between them.
    before = len(job.monitor.snapshot().latencies)
    stop = threading.Event()
    sent = 0

    def trickle() -> None:
        nonlocal sent
        interval = 1.0 / args.rate
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline and not stop.is_set():
            f = files[sent % len(files)]
            land(f, landing, f"t{sent}_{f.name}")
            sent += 1
            time.sleep(interval)

    feeder = threading.Thread(target=trickle)
    feeder.start()
    feeder.join()
    job.process_available()
    latencies = np.array(list(job.monitor.snapshot().latencies)[before:])
    latency = {
        "files": len(latencies),
        "sent": sent,
        "latency_p50_s": float(np.percentile(latencies, 50)),
        "latency_p95_s": float(np.percentile(latencies, 95)),
        "latency_max_s": float(latencies.max()),
    }
    job.request_stop()
    job.run_until_stopped()
    return (steady, drain), latency, settings, job


def driver_share(settings: Settings, job, files: list[Path], work: Path, n: int) -> dict:
    """The job's own micro-batch frame over `n` files: executors only, vs collected + committed on the driver."""
    from datetime import datetime

    from fruits import source
    from fruits.sinks import RESULTS, DeltaSink

    folder = work / "driver"
    for i in range(n):
        f = files[i % len(files)]
        land(f, folder, f"d{i}_{f.name}")
    batch = job.batch
    frame = batch.rows(batch.inputs(source.read_images(job.spark, str(folder))), batch.model.projection_in_udf)
    frame.write.format("noop").mode("overwrite").save()  # warm the workers on this plan
    start = time.perf_counter()
    frame.write.format("noop").mode("overwrite").save()
    noop = time.perf_counter() - start
    start = time.perf_counter()
    rows = frame.toArrow()
    collect = time.perf_counter() - start
    results, _ = batch.split(rows, 0, datetime.now(UTC), batch.model.resolved)
    start = time.perf_counter()
    DeltaSink(settings, str(work / "driver-results"), RESULTS, "bench").append(results, 0)
    commit = time.perf_counter() - start
    assert results.num_rows == n, f"{results.num_rows} of {n} rows"
    return {
        "files": n,
        "noop_s": round(noop, 2),
        "collect_s": round(collect, 2),
        "commit_s": round(commit, 2),
        "arrow_mb": round(rows.nbytes / 2**20, 1),
        "driver_share": round((collect + commit - noop) / noop, 3),
    }


def _progress(settings: Settings) -> list[dict]:
    import json

    records = [json.loads(line) for line in settings.progress_log.read_text().splitlines()]
    return [r for r in records if r["event"] == "batch" and not r["replayed"]]


if __name__ == "__main__":
    main()
