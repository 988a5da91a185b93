"""Streaming job vs pure engine: steady-state throughput ratio, and upload->commit latency.

One run, same machine, same images (stream/, 640 files):
1. baseline: pure ONNX Runtime in this process (all cores), bytes -> features, decode included;
2. throughput: the job is started and warmed up on a few files, then a backlog of
   `--copies` x 640 uploads (new names) appears at once (one directory rename) and is drained
   (processingTime 1 s, --max-files-per-trigger): images/s from the rename to the last commit;
3. latency: with a 1 s trigger, files trickle into the landing dir at `--rate` files/s; each
   file's latency is its batch's commit time minus the file's modification (upload) time.

    .venv/bin/python bench/stream.py [--copies 4] [--rate 20] [--seconds 30] [--max-files 1000]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from common import DATA, best_of, ensure_model, image_files, land, machine, project_settings, save, scratch_state

from fruits.featurize import Featurizer, featurize_batch, make_engine
from fruits.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=4, help="backlog = copies x the 640 stream images")
    parser.add_argument("--rate", type=float, default=20.0, help="files per second in the latency phase")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the latency phase")
    parser.add_argument("--max-files", type=int, default=1000, help="maxFilesPerTrigger")
    parser.add_argument("--verbose", action="store_true", help="print each micro-batch's timings")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")

    files = image_files(DATA / "stream")
    base = project_settings()
    featurizer = Featurizer.load(base.replace(weights="imagenet", engine="onnx"))
    contents = [f.read_bytes() for f in files]
    engine = make_engine("onnx", featurizer.payload, None)
    featurize_batch(engine, contents[:64], base.max_image_pixels)
    pure, _ = best_of(2, lambda: len(featurize_batch(engine, contents, base.max_image_pixels).features))
    print(f"{len(files)} stream images; {machine()}")
    print(f"pure ONNX Runtime: {pure:.1f} images/s (baseline)")

    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    try:
        throughput, latency = run_stream(base, files, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = throughput / pure
    print(f"streaming steady state: {throughput:.1f} images/s = {ratio:.2f} x pure ORT (goal >= 0.8)")
    print(f"upload->commit latency at {args.rate:g} files/s, 1 s trigger: p50 {latency['latency_p50_s']:.2f} s, "
          f"p95 {latency['latency_p95_s']:.2f} s, max {latency['latency_max_s']:.2f} s "
          f"({latency['files']} files)")
    path = save("stream", {"pure_ort_images_per_second": round(pure, 1),
                           "stream_images_per_second": round(throughput, 1), "ratio": round(ratio, 3),
                           "latency": latency, "args": vars(args)})
    print(f"saved {path}")


def run_stream(base: Settings, files: list[Path], work: Path, args) -> tuple[float, dict]:
    from streaming.job import StreamingJob

    landing = work / "landing"
    settings = base.replace(
        source=str(landing), output=str(work / "results"), errors=str(work / "errors"),
        checkpoint=str(work / "checkpoint"), trigger="1s", max_files_per_trigger=args.max_files,
        # Share the project's caches (ONNX export) and registry, but keep progress logs apart.
        state_dir=scratch_state(work / "state", base), mlflow_tracking_uri=base.tracking_uri,
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
    warm = sum(r["input"] for r in _results(settings))
    appeared = time.time()
    staging.rename(landing / "backlog")
    job.process_available()
    records = _results(settings)
    assert sum(r["input"] for r in records) == warm + backlog, "backlog not fully committed"
    throughput = backlog / (records[-1]["committed_at"] - appeared)
    if args.verbose:
        for query in job.queries:
            for p in query.recentProgress:
                if p.numInputRows:
                    print(f"  {query.name} batch {p.batchId}: {p.numInputRows} rows, {p.durationMs}")
    print(f"backlog of {backlog} files drained in {len(records) - 1} batch(es) of at most {args.max_files}")

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
    job.request_stop()
    job.run_until_stopped()
    latencies = np.array(list(job.monitor.snapshot().latencies)[before:])
    latency = {
        "files": int(len(latencies)),
        "sent": sent,
        "latency_p50_s": float(np.percentile(latencies, 50)),
        "latency_p95_s": float(np.percentile(latencies, 95)),
        "latency_max_s": float(latencies.max()),
    }
    return throughput, latency


def _results(settings: Settings) -> list[dict]:
    import json

    return [r for r in map(json.loads, settings.progress_log.read_text().splitlines()) if r["query"] == "results"]


if __name__ == "__main__":
    main()
