"""Fit end to end vs (Spark start + pure featurize): what the batch job costs beyond its two irreducible parts.

One run, same machine, same images (subset/, 320 files; or `--images N`: N hardlinked copies of the 1,680
shared images under new names, <class>/c<copy>_<split>_<name> in a temp folder outside the repo, the same
bytes several times over); each repeat measures, in this order:
1. Spark start: a fresh Python process that only builds the local session as the fit does
   (fruits.spark.get_spark with short_job=True: the same JVM options) and stops it; wall time
   from spawn to exit (its in-process get_spark time is shown too);
2. pure featurize: ONNX Runtime in this process (all cores), files -> features, reading and
   decoding included (the engine is built and warmed once, before the first repeat);
3. fit: `python -m cli fit --images subset --json` as a fresh process with its own temp
   state dir and its own sqlite MLflow store; wall time from spawn to exit, plus the `seconds`
   the fit reports (from the start of fit() to its summary). The state dir's ONNX cache is a
   symlink to the project's .fruits/cache, so the one-off Keras -> ONNX export (~4 s, once per
   weights file) is EXCLUDED; the run is invalid if the cached export changed during the fit.
   Its peak memory: the whole process tree (the `fruits fit` process, its JVM, the JVM's Python daemon
   and workers) sampled every 0.2 s with psutil, the peak of the tree's sum of PSS (shared pages split
   between the processes that map them: what the tree takes from the machine) and of RSS (each shared
   page counted in every process), and the peak by kind of process. Reported: the worst repeat.

Baseline = Spark start + pure featurize; ratio = fit wall / baseline. The best (shortest) of
`--repeats` is reported for each figure. The breakdown is the `timings` of the fit's --json
summary (setup: Spark session, MLflow store, featurizer; featurize; the model's scaler, PCA and
head; projection; evaluate; log and register), plus what happens outside fit(): process start and
imports, then shutdown.

    .venv/bin/python bench/fit.py [--images DIR|N] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from common import (
    DATA,
    ROOT,
    hardlinked_images,
    image_files,
    machine,
    project_settings,
    python_env,
    save,
    scratch_state,
)

MEMORY_SAMPLE_S = 0.2
# The pure engine's images per call: 32, the baseline of every earlier run (the fit's workers call with
# fruits.featurize.INFERENCE_CHUNK, smaller for memory, measured as fast).
PURE_CHUNK = 32
GiB = 2**30

SPARK_START = """
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from fruits.settings import Settings
from fruits.spark import get_spark
settings = Settings.load(state_dir=Path(sys.argv[1]))
t1 = time.perf_counter()
spark = get_spark(settings, "bench-spark-start", short_job=True)
t2 = time.perf_counter()
spark.stop()
t3 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "get_spark": t2 - t1, "stop": t3 - t2}))
"""

TIMING_NOTES = {
    "setup": "Spark session, new MLflow store, featurizer (weights sha, cached ONNX)",
    "featurize": "Spark pandas UDF over every fit image",
    "scaler": "StringIndexer + StandardScaler (Spark ML)",
    "pca": "PCA (Spark ML): column statistics, the covariance's pass, its SVD on the driver",
    "head": "logistic regression (Spark ML): local checkpoint, one Spark job per L-BFGS iteration",
    "project": "the training rows' projection, to the driver (1-NN, maps, PC1/PC2 plot)",
    "evaluate": "held-out images: featurize, classify, metrics (only with --eval-images)",
    "maps": "t-SNE maps (only with --eval-images)",
    "log_and_register": "MLflow run, features parquet, plots, model logging, registration",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--images",
        default=str(DATA / "subset"),
        help="labelled images (<class>/<file>.jpg), or a number N: N hardlinked copies of the "
        "shared images (every split, 40 classes) in a temp folder outside the repo",
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--pca-k",
        type=int,
        help="passed to the fit (default: the fit's, 300); lower it for "
        "small --images (it must not exceed the image count)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp state dirs (fit logs) for inspection")
    args = parser.parse_args()
    if args.repeats < 1:
        sys.exit("fit.py: --repeats must be at least 1")
    logging.basicConfig(level=logging.WARNING)

    from fruits.featurize import Featurizer, featurize_batch, make_engine

    base = project_settings()
    work = Path(tempfile.mkdtemp(prefix="bench-fit-"))
    if args.images.isdigit():
        copies, distinct = hardlinked_images(work / "images", int(args.images))
        print(f"{len(copies)} hardlinked copies of the {distinct} shared images in {work / 'images'}")
        args.images = str(work / "images")
    files = image_files(Path(args.images))
    if not files:
        sys.exit(f"fit.py: no images under {args.images}")
    n = len(files)
    featurizer = Featurizer.load(base.replace(engine="onnx"))  # exports once if needed
    engine = make_engine("onnx", featurizer.payload, None)
    featurize_batch(
        engine, [f.read_bytes() for f in files[:64]], base.max_image_pixels, PURE_CHUNK
    )  # first calls allocate
    print(f"{n} images from {args.images}; {machine()}")

    def pure_featurize() -> float:
        start = time.perf_counter()
        result = featurize_batch(engine, [f.read_bytes() for f in files], base.max_image_pixels, PURE_CHUNK)
        seconds = time.perf_counter() - start
        if any(v is None for v in result.features):
            raise SystemExit("fit.py: pure featurize rejected an image: the run is invalid")
        return seconds

    runs, problems = [], []
    try:
        for repeat in range(args.repeats):
            start = spark_start(work / f"start-{repeat}")
            featurize = pure_featurize()
            fit = fit_run(base, args, work / f"fit-{repeat}", n)
            problems += [f"repeat {repeat + 1}: {p}" for p in fit.pop("problems")]
            runs.append(
                {
                    "spark_start": start,
                    "featurize_seconds": featurize,
                    "fit": fit,
                    "load_average_1m": round(os.getloadavg()[0], 1),
                }
            )
            print(
                f"  repeat {repeat + 1}: spark start {start['wall']:.1f} s, pure featurize {featurize:.1f} s, "
                f"fit {fit['wall']:.1f} s (reports {fit.get('seconds', float('nan')):.1f} s), peak memory "
                f"{fit['memory']['pss_gib']:.2f} GiB PSS / {fit['memory']['rss_gib']:.2f} GiB RSS; load average "
                f"{runs[-1]['load_average_1m']}",
                flush=True,
            )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    start = min(r["spark_start"]["wall"] for r in runs)
    get_spark_s = min(r["spark_start"]["get_spark"] for r in runs)
    featurize = min(r["featurize_seconds"] for r in runs)
    best_fit = min((r["fit"] for r in runs), key=lambda f: f["wall"])
    baseline = start + featurize
    rows = [
        ("Spark start (fresh process)", start, f"spawn -> exit; get_spark() alone {get_spark_s:.1f} s"),
        ("pure ONNX Runtime featurize", featurize, f"{n / featurize:.0f} images/s, all cores, decode included"),
        ("baseline = start + featurize", baseline, "baseline"),
        ("fruits fit (fresh process)", best_fit["wall"], "spawn -> exit, own sqlite store, ONNX export excluded"),
        ("  of which fit() reports", best_fit.get("seconds", float("nan")), "summary 'seconds'"),
    ]
    rows += [(f"  {name}", seconds, note) for name, seconds, note in best_fit["breakdown"]]
    print(
        seconds_table(
            f"fit end to end vs Spark start + pure featurize, {n} images, best of {args.repeats}", rows, baseline
        )
    )
    ratio = best_fit["wall"] / baseline
    own = best_fit.get("timings", {}).get("featurize")
    print(
        f"fit / (start + featurize) = {ratio:.2f}"
        + (f"; the fit's own featurize pass = {own / featurize:.2f} x pure ORT's time" if own else "")
    )
    memory = max((r["fit"]["memory"] for r in runs), key=lambda m: m["pss_gib"])
    print(
        f"the fit's peak process-tree memory (worst of {args.repeats}): {memory['pss_gib']:.2f} GiB PSS, "
        f"{memory['rss_gib']:.2f} GiB RSS summed; PSS peaks by kind: "
        + ", ".join(f"{k} {v:.2f}" for k, v in memory["pss_gib_by_kind"].items())
    )
    path = save(
        "fit",
        {
            "images": n,
            "repeats": args.repeats,
            "ratio_fit_over_baseline": round(ratio, 3),
            "peak_memory": memory,
            "best": {
                "spark_start_s": start,
                "featurize_s": featurize,
                "baseline_s": baseline,
                "fit_wall_s": best_fit["wall"],
                "fit_reported_s": best_fit.get("seconds"),
                "breakdown": best_fit["breakdown"],
            },
            "runs": runs,
            "problems": problems,
        },
    )
    print(f"saved {path}")
    for problem in problems:
        print(f"INVALID: {problem}", file=sys.stderr)
    return 1 if problems else 0


def spark_start(state: Path) -> dict[str, float]:
    """Spawn -> exit of a process that only starts and stops the local session."""
    state.mkdir(parents=True)
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", SPARK_START, str(state)], cwd=ROOT, env=python_env(), capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"fit.py: the Spark start process failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return {"wall": wall, **json.loads(done.stdout.strip().splitlines()[-1])}


def fit_run(base, args: argparse.Namespace, work: Path, n: int) -> dict:
    """`fruits fit` in a fresh process: wall time, and its --json summary (timings included)."""
    state = scratch_state(work / "state", base)
    command = [
        sys.executable,
        "-m",
        "cli",
        "fit",
        "--images",
        args.images,
        "--json",
        "-q",
        "--state-dir",
        str(state),
        "--tracking-uri",
        f"sqlite:///{state / 'mlflow.db'}",
    ]
    if args.pca_k:
        command += ["--pca-k", str(args.pca_k)]
    exports = sorted((base.cache_dir / "onnx").glob("*.onnx"))
    before = {p: p.stat().st_mtime_ns for p in exports}
    t0 = time.perf_counter()
    with (work / "fit.stderr").open("w") as stderr:
        process = subprocess.Popen(
            command, cwd=ROOT, env=python_env(), stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        meter = TreeMemory(process.pid)
        meter.start()
        stdout, _ = process.communicate()
        wall = time.perf_counter() - t0
        meter.stop()
    result: dict = {"wall": wall, "returncode": process.returncode, "breakdown": [], "memory": meter.peaks()}
    if process.returncode != 0:
        tail = (work / "fit.stderr").read_text()[-2000:]
        return {**result, "problems": [f"fit exited {process.returncode}:\n{tail}"]}
    try:
        summary = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {**result, "problems": ["no JSON summary on the fit's last stdout line"]}
    problems = []
    if summary.get("images") != n or summary.get("skipped"):
        problems.append(f"the fit used {summary.get('images')} images ({summary.get('skipped')} skipped), expected {n}")
    after = {p: p.stat().st_mtime_ns for p in sorted((base.cache_dir / "onnx").glob("*.onnx"))}
    if not before or after != before:
        problems.append("the fit exported ONNX (the cache was not shared): its time includes the one-off export")
    timings = summary.get("timings") or {}
    result.update(
        seconds=float(summary["seconds"]),
        timings=timings,
        summary={
            k: summary.get(k)
            for k in (
                "images",
                "classes",
                "skipped",
                "featurized",
                "pca_k",
                "lapack",
                "explained_variance",
                "engine",
                "seconds",
            )
        },
    )
    outside = wall - result["seconds"]
    order = list(TIMING_NOTES)  # the fit's steps in the order they run (its JSON sorts them by name)
    steps = sorted(timings, key=lambda name: order.index(name) if name in order else len(order))
    result["breakdown"] = [(f"fit(): {name}", timings[name], TIMING_NOTES.get(name, "")) for name in steps]
    result["breakdown"].append(("outside fit()", outside, "Python start, imports, CLI; summary; JVM shutdown"))
    return {**result, "problems": problems}


class TreeMemory(threading.Thread):
    """The peak memory of a process tree (the `fruits fit` process, its JVM, the JVM's Python daemon and
    workers), sampled every MEMORY_SAMPLE_S: the peak of the SUM over the tree at one sample, as RSS and
    as PSS. RSS counts a page shared by several processes in each of them (the Python workers are forked
    from one daemon and share its pages; every process maps the same libraries): the sum overstates what
    the tree takes from the machine. PSS splits each shared page between the processes that map it, so
    the sum of PSS is what the tree holds. Also the peak per kind of process (driver, JVM, Python workers)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.stopped = threading.Event()
        self.peak = {"rss": 0, "pss": 0}
        self.by_kind: dict[str, int] = {}
        self.samples = 0

    def run(self) -> None:
        while not self.stopped.is_set():
            self.sample()
            self.stopped.wait(MEMORY_SAMPLE_S)

    def sample(self) -> None:
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        rss = pss = 0
        kinds: dict[str, int] = {}
        for process in processes:
            try:
                info = process.memory_full_info()
                kind = process_kind(process, self.root)
            except psutil.Error:  # exited between the listing and the read
                continue
            rss += info.rss
            pss += info.pss
            kinds[kind] = kinds.get(kind, 0) + info.pss
        self.samples += 1
        self.peak = {"rss": max(self.peak["rss"], rss), "pss": max(self.peak["pss"], pss)}
        for kind, value in kinds.items():
            self.by_kind[kind] = max(self.by_kind.get(kind, 0), value)

    def stop(self) -> None:
        self.stopped.set()
        self.join()

    def peaks(self) -> dict:
        return {
            "rss_gib": round(self.peak["rss"] / GiB, 3),
            "pss_gib": round(self.peak["pss"] / GiB, 3),
            "pss_gib_by_kind": {k: round(v / GiB, 3) for k, v in sorted(self.by_kind.items())},
            "samples": self.samples,
            "every_s": MEMORY_SAMPLE_S,
        }


def process_kind(process: psutil.Process, root: psutil.Process) -> str:
    if process.pid == root.pid:
        return "python driver"
    if process.name() == "java":
        return "driver JVM"
    return "python workers (daemon + workers)"


def seconds_table(title: str, rows: list[tuple[str, float, str]], baseline: float) -> str:
    """common.table, but for durations (a ratio above 1 = slower than the baseline)."""
    width = max(len(r[0]) for r in rows)
    lines = [title, f"{'':{width}}  {'seconds':>8}  {'ratio':>6}  note"]
    for name, value, note in rows:
        lines.append(f"{name:{width}}  {value:8.2f}  {value / baseline:6.2f}  {note}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
