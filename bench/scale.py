"""Scaling on a Spark standalone cluster: the fit and the stream on 10,000 images, on a standalone cluster
of 1 worker and of 2 workers of 1 core each and on local[*], against pure ONNX Runtime on as many cores.

The images: the 1,680 images of ../shared (every split, 40 classes) hardlinked under new names
(<class>/<copy>_<name>) into a temp folder outside the repo until there are --images of them; the
same bytes several times over, which costs Spark and ONNX Runtime what new images would.

Per configuration, in this order (cluster x 1 worker, cluster x 2 workers, then local[*]: the scaling
figures first, saved after each configuration in case a later one fails; demo.standalone
starts and stops each cluster, its workers in an environment of their own):
1. pure ONNX Runtime on the configuration's executor cores: 1 or 2 processes of one thread each,
   bytes -> features with decode, on --baseline-images images; measured right before the fit and
   right before the stream, each ratio against the one next to it;
2. the fit: `fruits fit --images <the copies> --spark-master M` as a fresh process (no held-out
   images): its featurize step (images / its `featurize` timing) and its whole run;
3. the stream: `fruits stream --spark-master M` on a landing folder (1 s trigger, --max-files per batch):
   a. fed: --rate uploads/s land for --seconds (fresh copies: upload -> commit latency is real);
      the rate it committed and the latency;
   b. backlog: --images uploads appear at once (one rename) and are drained; steady state = the
      batches after the first (first commit to last), and the whole drain from the rename.
CPU seconds are sampled every 0.5 s (psutil) for the driver (the `fruits` process and its JVM; on
local[*] also its Python workers, which are the executors there), the executors (the workers' executor
JVMs and Python workers) and the cluster's daemons. This machine has 2 cores: with 2 workers the driver
competes with the executors for them; the executors' CPU seconds per image say whether a core's work
per image changed, the driver's how much of the 2 cores it took.

From these numbers: throughput per executor core and the scaling efficiency from 1 to 2 workers,
each against pure ONNX Runtime; and the EMR sizing (executors, nodes and $/h for --sizing-rates
uploads/s on m5.xlarge; the fit of --fit-images images), with infra/prices.json and infra.cost.

    .venv/bin/python bench/scale.py [--images 10000] [--rate 20] [--seconds 60] [--json]

32 minutes here for 10,000 images (2 cores shared with other sessions, load average 9-18; 13 minutes
for --images 400). A progress line per phase; with --json the last
stdout line is the summary (also saved to bench/out/scale.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import psutil
from common import (
    ROOT,
    hardlinked_images,
    machine,
    project_settings,
    python_env,
    save,
    scratch_state,
)

from demo.standalone import standalone_cluster

LOCAL = "local[*]"
MODEL = "fruits-scale"
INSTANCE_TYPE, NODE_VCPUS = "m5.xlarge", 4  # the default type (infra/defaults.py); one executor of 4 cores a node
SAMPLE_S = 0.5


def say(line: str) -> None:
    print(line, flush=True)


# ----------------------------------------------------------------------------- images
# ----------------------------------------------------------------------------- pure ONNX Runtime
_ENGINE = None


def _init_engine(onnx_model: bytes) -> None:
    global _ENGINE
    from fruits.featurize import make_engine

    _ENGINE = make_engine("onnx", onnx_model, 1)


def _featurize_files(paths: list[str]) -> int:
    from fruits.featurize import featurize_batch
    from fruits.settings import Settings

    result = featurize_batch(_ENGINE, [Path(p).read_bytes() for p in paths], Settings().max_image_pixels)
    assert all(f is not None for f in result.features)
    return len(paths)


def pure_rate(onnx_model: bytes, files: list[Path], cores: int) -> float:
    """Images/s of `cores` processes running ONNX Runtime with one thread each, as a Python worker does."""
    shares = [[str(f) for f in files[i::cores]] for i in range(cores)]
    with ProcessPoolExecutor(cores, get_context("spawn"), initializer=_init_engine, initargs=(onnx_model,)) as pool:
        list(pool.map(_featurize_files, [s[:32] for s in shares]))  # engines built and warm in every process
        start = time.perf_counter()
        done = sum(pool.map(_featurize_files, shares))
        return done / (time.perf_counter() - start)


# ----------------------------------------------------------------------------- CPU seconds
class CpuMeter(threading.Thread):
    """CPU seconds (user + system) of process groups, sampled: a process that exits keeps its last sample."""

    def __init__(self, groups: dict[str, Callable[[], list[psutil.Process]]]):
        super().__init__(daemon=True)
        self.groups = groups
        self.latest: dict[str, dict[int, float]] = {name: {} for name in groups}
        self.stopped = threading.Event()
        self.lock = threading.Lock()

    def sample(self) -> None:
        for name, members in self.groups.items():
            for process in members():
                try:
                    times = process.cpu_times()
                except psutil.Error:
                    continue
                with self.lock:
                    self.latest[name][process.pid] = times.user + times.system

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_S):
            self.sample()

    def mark(self) -> dict[str, dict[int, float]]:
        self.sample()
        with self.lock:
            return {name: dict(pids) for name, pids in self.latest.items()}

    def since(self, mark: dict[str, dict[int, float]]) -> dict[str, float]:
        now = self.mark()
        return {
            name: round(sum(cpu - mark[name].get(pid, 0.0) for pid, cpu in pids.items()), 1)
            for name, pids in now.items()
        }


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


# ----------------------------------------------------------------------------- jobs
@contextmanager
def fruits_process(command: list[str], log: Path) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", *command],
        cwd=ROOT,
        env=python_env(),
        stdout=subprocess.PIPE,
        stderr=log.open("ab"),
        text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


def job_flags(state: Path, tracking_uri: str, master: str) -> list[str]:
    return ["--state-dir", str(state), "--tracking-uri", tracking_uri, "--spark-master", master, "--json", "-q"]


def run_fit(images: Path, n: int, state: Path, tracking_uri: str, master: str, meter_groups: dict, work: Path) -> dict:
    work.mkdir()
    log = work / "fit.log"
    with fruits_process(
        ["fit", "--images", str(images), "--model-name", MODEL, *job_flags(state, tracking_uri, master)], log
    ) as process:
        meter = CpuMeter({**meter_groups, "driver": lambda: tree(process.pid)})
        meter.start()
        mark = meter.mark()
        start = time.perf_counter()
        out, _ = process.communicate(timeout=7200)
        wall = time.perf_counter() - start
        cpu = meter.since(mark)
        meter.stopped.set()
    if process.returncode != 0:
        raise SystemExit(f"scale.py: the fit failed ({process.returncode}):\n{log.read_text()[-3000:]}")
    summary = json.loads(out.strip().splitlines()[-1])
    if summary["images"] != n or summary["skipped"]:
        raise SystemExit(f"scale.py: the fit used {summary['images']} images ({summary['skipped']} skipped), not {n}")
    featurize = summary["timings"]["featurize"]
    return {
        "wall_s": round(wall, 1),
        "seconds": summary["seconds"],
        "timings": summary["timings"],
        "featurize_images_per_s": round(n / featurize, 1),
        "images_per_s": round(n / wall, 1),
        "cpu_s": cpu,
    }


def progress_batches(state: Path) -> list[dict]:
    path = state / "stream-progress.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r["event"] == "batch" and not r["replayed"] and r["files"]]


def committed_files(state: Path) -> int:
    return sum(r["files"] for r in progress_batches(state))


def wait_for(
    predicate: Callable[[], bool], process: subprocess.Popen, what: str, log: Path, timeout: float = 3600
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise SystemExit(
                f"scale.py: the stream exited ({process.returncode}) while waiting for {what}:\n"
                f"{log.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise SystemExit(f"scale.py: timed out waiting for {what}")
        time.sleep(0.5)


def run_stream(
    images: list[Path],
    state: Path,
    tracking_uri: str,
    master: str,
    meter_groups: dict,
    work: Path,
    args: argparse.Namespace,
) -> dict:
    """Warm-up, then the fed phase, then the backlog, on one `fruits stream` process."""
    from fruits.upload import land

    landing = work / "landing"
    landing.mkdir()
    command = [
        "stream",
        "--source",
        str(landing),
        "--output",
        str(work / "results"),
        "--errors",
        str(work / "errors"),
        "--checkpoint",
        str(work / "checkpoint"),
        "--trigger",
        "1s",
        "--max-files-per-trigger",
        str(args.max_files),
        "--model",
        f"models:/{MODEL}@champion",
        "--maintenance-interval",
        "off",
        "--model-refresh-interval",
        "off",
        *job_flags(state, tracking_uri, master),
    ]
    log = work / "stream.log"
    with fruits_process(command, log) as process:
        meter = CpuMeter({**meter_groups, "driver": lambda: tree(process.pid)})
        meter.start()
        for i, src in enumerate(images[:32]):  # warm-up: the session, the executors, their engines
            land(src.read_bytes(), landing / "warmup" / f"w{i}_{src.name}")
        wait_for(lambda: committed_files(state) >= 32, process, "the warm-up", log)

        # a. fed: uploads at a steady rate, each a fresh copy (its modification time is its upload time)
        before, mark = len(progress_batches(state)), meter.mark()
        sent, start, fed_from = 0, time.monotonic(), time.time()
        while time.monotonic() - start < args.seconds:
            src = images[sent % len(images)]
            land(src.read_bytes(), landing / "fed" / src.parent.name / f"f{sent}_{src.name}")
            sent += 1
            time.sleep(max(0.0, start + sent / args.rate - time.monotonic()))
        wait_for(lambda: committed_files(state) >= 32 + sent, process, "the fed uploads", log)
        fed_cpu = meter.since(mark)
        batches = progress_batches(state)[before:]
        latencies = np.array([ms / 1000 for r in batches for ms in r["latencies_ms"]])
        fed = {
            "rate": args.rate,
            "uploads": sent,
            "batches": len(batches),
            "committed_per_s": round(sent / (batches[-1]["committed_at"] - fed_from), 1),
            "latency_p50_s": round(float(np.percentile(latencies, 50)), 2),
            "latency_p95_s": round(float(np.percentile(latencies, 95)), 2),
            "cpu_s": fed_cpu,
        }
        say(
            f"    fed {args.rate:g}/s for {args.seconds:g} s: {sent} uploads committed in {len(batches)} batches, "
            f"latency p50 {fed['latency_p50_s']} s, p95 {fed['latency_p95_s']} s; CPU s {fed_cpu}"
        )

        # b. backlog: every image at once, drained. Copies, not links: the file source ignores files older than
        # its maxFileAge (7 days) before the newest one it has seen, and a link keeps the shared file's date.
        staging = landing / "_backlog"  # Spark skips _-prefixed folders until the rename
        for src in images:
            target = staging / src.parent.name / src.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
        before, mark = len(progress_batches(state)), meter.mark()
        appeared = time.time()
        staging.rename(landing / "backlog")
        wait_for(lambda: committed_files(state) >= 32 + sent + len(images), process, "the backlog", log)
        backlog_cpu = meter.since(mark)
        batches = progress_batches(state)[before:]
        if len(batches) < 3:
            raise SystemExit("scale.py: the backlog took fewer than 3 batches: raise --images or lower --max-files")
        steady_images = sum(r["files"] for r in batches[1:])
        steady = steady_images / (batches[-1]["committed_at"] - batches[0]["committed_at"])
        backlog = {
            "uploads": len(images),
            "batches": len(batches),
            "steady_per_s": round(steady, 1),
            "drain_per_s": round(len(images) / (batches[-1]["committed_at"] - appeared), 1),
            "drain_s": round(batches[-1]["committed_at"] - appeared, 1),
            "cpu_s": backlog_cpu,
        }
        say(
            f"    backlog of {len(images)}: steady {backlog['steady_per_s']} images/s, whole drain "
            f"{backlog['drain_per_s']} images/s ({backlog['drain_s']} s, {len(batches)} batches); CPU s {backlog_cpu}"
        )
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=300)
        meter.stopped.set()
    return {"fed": fed, "backlog": backlog}


# ----------------------------------------------------------------------------- one configuration
def run_configuration(
    name: str,
    master: str,
    cores: int,
    cluster,
    images_dir: Path,
    images: list[Path],
    onnx: bytes,
    base,
    tracking_uri: str,
    work: Path,
    args: argparse.Namespace,
) -> dict:
    groups: dict[str, Callable[[], list[psutil.Process]]] = {}
    if cluster is not None:
        daemons = [p.pid for p in cluster.processes]
        groups["executors"] = lambda: [c for pid in daemons for c in tree(pid)[1:]]
        groups["daemons"] = lambda: [p for pid in daemons for p in tree(pid)[:1]]
    sample = images[:: max(1, len(images) // args.baseline_images)][: args.baseline_images]
    result: dict = {"name": name, "master": master, "executor_cores": cores, "images": len(images)}

    pure = pure_rate(onnx, sample, cores)
    say(f"  [{name}] pure ONNX Runtime on {cores} core(s): {pure:.1f} images/s")
    fit = run_fit(
        images_dir, len(images), scratch_state(work / "fit-state", base), tracking_uri, master, groups, work / "fit"
    )
    fit["pure_images_per_s"] = round(pure, 1)
    fit["featurize_per_core"] = round(fit["featurize_images_per_s"] / cores, 1)
    fit["featurize_over_pure"] = round(fit["featurize_images_per_s"] / pure, 3)
    result["fit"] = fit
    say(
        f"  [{name}] fit of {len(images)} images: {fit['wall_s']} s spawn -> exit; featurize step "
        f"{fit['featurize_images_per_s']} images/s = {fit['featurize_over_pure']:.2f} x pure; CPU s {fit['cpu_s']}"
    )

    pure = pure_rate(onnx, sample, cores)
    say(f"  [{name}] pure ONNX Runtime on {cores} core(s): {pure:.1f} images/s")
    (work / "stream").mkdir()
    stream = run_stream(
        images, scratch_state(work / "stream-state", base), tracking_uri, master, groups, work / "stream", args
    )
    stream["pure_images_per_s"] = round(pure, 1)
    stream["steady_per_core"] = round(stream["backlog"]["steady_per_s"] / cores, 1)
    stream["steady_over_pure"] = round(stream["backlog"]["steady_per_s"] / pure, 3)
    result["stream"] = stream
    return result


def scaling(one: dict, two: dict) -> dict:
    """1 -> 2 workers: the efficiency, the pure engine's own on the same cores, and what the driver took."""
    out = {}
    for job in ("fit", "stream"):
        rate = {
            r["name"]: r["fit"]["featurize_images_per_s"] if job == "fit" else r["stream"]["backlog"]["steady_per_s"]
            for r in (one, two)
        }
        pure = {r["name"]: r[job]["pure_images_per_s"] for r in (one, two)}
        cpu = {r["name"]: r["fit"]["cpu_s"] if job == "fit" else r["stream"]["backlog"]["cpu_s"] for r in (one, two)}
        # The fit's CPU covers the whole run, the stream's the drain: per image of that phase.
        phase_s = {
            r["name"]: r["fit"]["wall_s"] if job == "fit" else r["stream"]["backlog"]["drain_s"] for r in (one, two)
        }
        efficiency = rate[two["name"]] / (2 * rate[one["name"]])
        pure_efficiency = pure[two["name"]] / (2 * pure[one["name"]])
        out[job] = {
            "efficiency": round(efficiency, 3),
            "pure_efficiency": round(pure_efficiency, 3),
            "efficiency_over_pure": round(efficiency / pure_efficiency, 3),
            "executor_cpu_ms_per_image": {n: round(1000 * c["executors"] / one["images"], 2) for n, c in cpu.items()},
            "driver_cpu_ms_per_image": {n: round(1000 * c["driver"] / one["images"], 2) for n, c in cpu.items()},
            "daemons_cpu_s": {n: c["daemons"] for n, c in cpu.items()},
            # cores of the machine's 2 the driver kept busy, on average over the phase
            "driver_cores": {n: round(c["driver"] / phase_s[n], 2) for n, c in cpu.items()},
        }
    return out


# ----------------------------------------------------------------------------- EMR sizing
def sizing(one: dict, args: argparse.Namespace) -> dict:
    """Executors, nodes and $/h for the stream at each rate; the fit's time and cost at --fit-images.

    From the 1-worker cluster: its driver had the machine's other core, as an EMR driver has the primary
    node, so its rates are what one executor core delivers. A node = --node-cores such cores."""
    from infra.cluster import ClusterOptions, build_request
    from infra.cost import FIT_STARTUP_MINUTES, estimate_cost

    per_node = one["stream"]["steady_per_core"] * args.node_cores
    rows = []
    for rate in args.sizing_rates:
        executors = max(1, math.ceil(rate / (per_node * args.utilization)))
        cost = estimate_cost(
            build_request(ClusterOptions(bucket="sizing", region=args.region, core_count=executors)),
            args.region,
            per_node,
        )
        rows.append(
            {
                "uploads_per_s": rate,
                "executors": executors,
                "executor_cores": executors * NODE_VCPUS,
                "nodes": executors + 1,
                "per_hour": round(cost.per_hour, 3),
                "per_million_uploads": round(cost.per_hour / (rate * 3600) * 1e6, 3),
            }
        )
    # The fit on the default cluster (2 core nodes): its featurize step at the measured per-core rate; the
    # steps after it (scaler, PCA, classifier, projection, log and register) grow with the rows and are
    # NOT assumed to shrink with more cores (their Spark jobs are short, the SVD runs on the driver).
    fit, core_nodes = one["fit"], 2
    featurize_rate = fit["featurize_per_core"] * args.node_cores * core_nodes
    after = fit["seconds"] - fit["timings"]["setup"] - fit["timings"]["featurize"]
    seconds = fit["timings"]["setup"] + args.fit_images / featurize_rate + after * args.fit_images / one["images"]
    per_hour = estimate_cost(
        build_request(ClusterOptions(bucket="sizing", region=args.region)), args.region, per_node
    ).per_hour
    billed_h = seconds / 3600 + FIT_STARTUP_MINUTES["EMR on EC2"] / 60
    return {
        "instance_type": INSTANCE_TYPE,
        "region": args.region,
        "node_vcpus": NODE_VCPUS,
        "node_cores_equivalent": args.node_cores,
        "utilization": args.utilization,
        "images_per_s_per_node": round(per_node, 1),
        "stream": rows,
        "fit": {
            "images": args.fit_images,
            "core_nodes": core_nodes,
            "featurize_per_s": round(featurize_rate, 1),
            "seconds": round(seconds),
            "per_hour": round(per_hour, 3),
            "startup_minutes": FIT_STARTUP_MINUTES["EMR on EC2"],
            "cost": round(per_hour * billed_h, 3),
        },
    }


# ----------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000, help="copies of the shared images (default 10,000)")
    parser.add_argument("--rate", type=float, default=20.0, help="uploads/s of the fed phase (default 20)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the fed phase (default 60 s)")
    parser.add_argument("--max-files", type=int, default=1000, help="the stream's files per micro-batch (1000)")
    parser.add_argument("--baseline-images", type=int, default=960, help="images of each pure ONNX Runtime run")
    parser.add_argument("--sizing-rates", type=float, nargs="+", default=[10.0, 100.0, 1000.0])
    parser.add_argument("--fit-images", type=int, default=90_000, help="the fit to size (default 90,000)")
    parser.add_argument(
        "--node-cores",
        type=float,
        default=2.0,
        help="cores of this machine one m5.xlarge node equals (default 2: its 4 vCPUs are 2 "
        "physical cores, this machine's 2 vCPUs are 2 cores)",
    )
    parser.add_argument(
        "--utilization",
        type=float,
        default=0.7,
        help="the share of a node's throughput the sizing plans to use (default 0.7: headroom)",
    )
    parser.add_argument("--region", default="eu-west-3")
    parser.add_argument("--json", action="store_true", help="print the summary as the last stdout line")
    args = parser.parse_args()
    if args.images < 400 or args.rate <= 0 or args.seconds <= 0:  # the fit's PCA (k=300) needs more than 300
        raise SystemExit("scale.py: --images must be at least 400, --rate and --seconds positive")

    from fruits.featurize import Featurizer

    started = time.perf_counter()
    base = project_settings()
    onnx = Featurizer.load(base.replace(engine="onnx")).payload
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    results = []
    try:
        images, distinct = hardlinked_images(work / "images", args.images)
        say(
            f"{len(images)} images: the {distinct} shared images hardlinked under new names into "
            f"{work / 'images'} (the same photos over again, not new ones); {machine()}"
        )
        tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
        for name, workers in (("1 worker", 1), ("2 workers", 2), (LOCAL, 0)):
            say(f"[{name}] {'local[*] in the driver JVM' if not workers else f'{workers} x 1 core, 2g'}")
            config_dir = work / f"config-{workers}"
            config_dir.mkdir()
            if workers:
                with standalone_cluster(config_dir / "cluster", workers=workers, cores=1, memory="2g") as cluster:
                    results.append(
                        run_configuration(
                            name,
                            cluster.master_url,
                            workers,
                            cluster,
                            work / "images",
                            images,
                            onnx,
                            base,
                            tracking_uri,
                            config_dir,
                            args,
                        )
                    )
            else:
                results.append(
                    run_configuration(
                        name,
                        LOCAL,
                        os.cpu_count() or 2,
                        None,
                        work / "images",
                        images,
                        onnx,
                        base,
                        tracking_uri,
                        config_dir,
                        args,
                    )
                )
            save(
                "scale", {"images": args.images, "partial": True, "configurations": results}
            )  # kept if a later one fails
    finally:
        shutil.rmtree(work, ignore_errors=True)

    one, two, _ = results
    summary = {
        "images": args.images,
        "images_note": f"hardlinked copies of the {distinct} shared images under new names",
        "configurations": results,
        "scaling_1_to_2_workers": scaling(one, two),
        "sizing": sizing(one, args),
        "seconds": round(time.perf_counter() - started),
    }
    print_report(summary)
    path = save("scale", summary)
    say(f"saved {path}; {summary['seconds']} s in all")
    if args.json:
        print(json.dumps(summary, default=str), flush=True)
    return 0


def print_report(s: dict) -> None:
    say("")
    say(
        f"{'':<12} {'fit featurize':>14} {'per core':>9} {'x pure':>7} {'fit wall':>9} "
        f"{'stream steady':>14} {'per core':>9} {'x pure':>7} {'drain':>7} {'fed p50/p95':>12}"
    )
    for r in s["configurations"]:
        f, st = r["fit"], r["stream"]
        say(
            f"{r['name']:<12} {f['featurize_images_per_s']:>12.1f}/s {f['featurize_per_core']:>9.1f} "
            f"{f['featurize_over_pure']:>7.2f} {f['wall_s']:>8.0f}s {st['backlog']['steady_per_s']:>12.1f}/s "
            f"{st['steady_per_core']:>9.1f} {st['steady_over_pure']:>7.2f} {st['backlog']['drain_per_s']:>6.1f}/s "
            f"{st['fed']['latency_p50_s']:>5.2f}/{st['fed']['latency_p95_s']:.2f}s"
        )
    for job, m in s["scaling_1_to_2_workers"].items():
        say(
            f"{job}: 1 -> 2 workers efficiency {m['efficiency']:.2f} (pure ONNX Runtime on 1 -> 2 processes: "
            f"{m['pure_efficiency']:.2f}; ratio {m['efficiency_over_pure']:.2f}); executor CPU ms/image "
            f"{m['executor_cpu_ms_per_image']}; driver CPU ms/image {m['driver_cpu_ms_per_image']}; driver cores "
            f"used {m['driver_cores']}"
        )
    e = s["sizing"]
    say(
        f"EMR sizing ({e['instance_type']}, {e['region']}, {e['images_per_s_per_node']} images/s a node, planned at "
        f"{e['utilization']:.0%}):"
    )
    for row in e["stream"]:
        say(
            f"  {row['uploads_per_s']:>6g} uploads/s: {row['executors']} executors ({row['executor_cores']} cores) on "
            f"{row['nodes']} nodes, ${row['per_hour']}/h, ${row['per_million_uploads']} per 1M uploads"
        )
    f = e["fit"]
    say(
        f"  fit of {f['images']:,} images on 1 primary + {f['core_nodes']} core nodes: ~{f['seconds']} s, "
        f"${f['cost']} with {f['startup_minutes']:g} min of start-up"
    )


if __name__ == "__main__":
    sys.exit(main())
