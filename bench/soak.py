"""Soak: peak RSS of the streaming job over thousands of uploads; memory must stay flat.

`fruits stream` (trigger 1s) runs as a subprocess in its own process group, against a fresh
landing dir, lake and checkpoint, with the registered model from the project's .fruits store
(fitted first, in a subprocess, if there is none). `--uploads` copies of the 640 stream/ images,
named c<copy>_<name> in their class folders, are landed atomically (hidden temp name + rename)
at a steady `--rate`, after a warm-up of `--warmup` files (w_<name>, committed before the soak
clock starts, so the Python workers and their engines exist). The default 60 files/s is about a
third of the steady streaming throughput bench/stream.py measured here (~180 images/s): every 1 s
micro-batch gets ~60 files of real work, so the job is busy all along (~1.5 batches per 100
uploads, all code paths every batch) without the landing dir turning into a backlog drained by a
few huge batches, and with headroom for a shared machine. At 5,000 uploads that is ~85 s of
feeding, ~85 micro-batches. A soak under ~30 s mostly measures warm-up (the JVM heap grows under
load for its first ~10-15 s) and fails the growth check: validate small runs at a lower rate.

Every second (`--interval`; shorter for a soak under ~50 s) this samples the RSS of the whole
process tree (psutil, children recursive): the Python driver, the JVM it launched, the PySpark
Python workers (daemon + forked workers, reported together), plus anything else; and the
committed rows (the results table's Delta log: row counts of the committed files). RSS sums double-count pages a
forked worker shares with the daemon, so the absolute total overstates the footprint a little;
growth is what this watches. Transient forks of the JVM (Hadoop's local FS runs shell commands;
between fork and exec a child shows the JVM's whole RSS) are not counted.

The JVM's live heap is measured idle, the same way at every probe: at 20%, 50% and 100% of the
uploads committed, the feed pauses, the soak waits until every landed upload is committed and
then --settle seconds (no task running), and takes the JVM's class histogram (`jcmd
GC.class_histogram`: a full GC, then the live objects by class); the live heap is its total.
Measured under load, a probe sees whatever the running task holds at that instant (Spark's
execution memory pages alone are 2 x 64 MiB of long[]), and `GC.heap_info` read after `GC.run`
also counts what the job allocated in between: both made single readings jump by 100+ MiB with
nothing retained. The feed then resumes where its schedule left off (no burst).

Baseline = median RSS over 20-40% of the soak (time from the first upload to the last commit),
after warm-up; growth = median over the last 20% / baseline. RSS alone cannot tell a leak in the
JVM from G1 growing its committed heap toward -Xmx (it does, in steps, and keeps it), hence the
live heap probes above. The run FAILS if the JVM's live heap at 100% exceeds the one at 20%
by more than --max-growth (default 10%, with 64 MiB of slack for bounded caches) or if the
Python workers' or driver's RSS grows by more than --max-growth. Total RSS and peaks are reported.
At the end it waits until every upload is committed, sends SIGTERM (graceful stop), and checks:
exit 0, summary rows == uploads + warm-up, 0 errors, and the committed table has exactly one
row per file landed (no duplicate paths, none missing). Writes bench/out/soak.json and
bench/out/soak_rss.png.

    .venv/bin/python bench/soak.py [--uploads 5000] [--rate 60] [--max-growth 0.10]
    (validation: .venv/bin/python bench/soak.py --uploads 800 --rate 20)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common import (
    DATA,
    OUT,
    ROOT,
    ensure_model,
    image_files,
    land,
    machine,
    project_settings,
    python_env,
    save,
    scratch_state,
    table_paths,
)

MiB = 2**20
STARTUP_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 180.0


@dataclass
class Sample:
    t: float  # seconds since the first upload (negative: before feeding)
    uploaded: int
    rows: int
    total: int  # bytes of RSS, whole tree
    driver: int
    jvm: int
    workers: int
    other: int
    n_workers: int


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--uploads", type=int, default=5000, help="copies of the stream images to land (>= 5000 for the real soak)"
    )
    parser.add_argument("--rate", type=float, default=60.0, help="uploads per second, steady")
    parser.add_argument("--trigger", default="1s", help="the job's micro-batch trigger")
    parser.add_argument(
        "--maintenance-interval",
        default="2m",
        help="the job's lake maintenance interval: compaction and vacuum run during the soak",
    )
    parser.add_argument(
        "--max-growth",
        type=float,
        default=0.10,
        help="fail if the JVM's live heap (100%% vs 20%% committed), or the Python workers' or "
        "driver's RSS (last 20%% vs 20-40%%), grows by more than this",
    )
    parser.add_argument(
        "--interval",
        type=float,
        help="seconds between RSS samples (default 1; shorter for a short soak, so each 20%% window gets ~10 samples)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=600.0,
        help="seconds to wait, after the last upload, for everything to be committed",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=64,
        help="files (w_<name>) landed and committed before the soak clock starts: Python workers "
        "and their engines exist by then (default 64; 0 for none)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (job logs, lake) for inspection")
    parser.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds to wait, at each live-heap probe, after the landed uploads are all committed",
    )
    parser.add_argument(
        "--histograms",
        action="store_true",
        help="print the classes whose live bytes grew most between the live-heap probes, and save "
        "the histograms to bench/out/soak_histograms.json: where to look when the heap grows",
    )
    args = parser.parse_args()
    if args.interval is None:
        args.interval = max(0.2, min(1.0, args.uploads / args.rate / 50))
    if args.uploads < 1 or args.rate <= 0 or args.interval <= 0:
        sys.exit("soak.py: --uploads, --rate and --interval must be positive")

    import psutil

    base = project_settings()
    files = image_files(DATA / "stream")
    if not files:
        sys.exit(f"soak.py: no images under {DATA / 'stream'}")
    ensure_model(base, in_process=False)  # no Spark session in this process: it would share the cores
    uploads = [(files[i % len(files)], f"c{i // len(files)}_{files[i % len(files)].name}") for i in range(args.uploads)]
    print(
        f"soak: {args.uploads} uploads ({len(files)} stream images, {-(-args.uploads // len(files))} copies) "
        f"at {args.rate:g}/s, trigger {args.trigger}, RSS every {args.interval:g} s; {machine()}",
        flush=True,
    )

    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    state = scratch_state(work / "state", base)
    landing, results, errors = work / "landing", work / "lake" / "results", work / "lake" / "errors"
    landing.mkdir()
    command = [
        sys.executable,
        "-m",
        "cli",
        "stream",
        "--source",
        str(landing),
        "--output",
        str(results),
        "--errors",
        str(errors),
        "--checkpoint",
        str(work / "checkpoint"),
        "--trigger",
        args.trigger,
        "--maintenance-interval",
        args.maintenance_interval,
        "--state-dir",
        str(state),
        "--tracking-uri",
        base.tracking_uri,
        "--json",
    ]
    stdout_path, stderr_path = work / "stream.stdout", work / "stream.stderr"
    problems: list[str] = []
    samples: list[Sample] = []
    proc = None
    try:
        with open(stdout_path, "w") as out, open(stderr_path, "w") as err:
            proc = subprocess.Popen(
                command, cwd=ROOT, env=python_env(), stdout=out, stderr=err, start_new_session=True
            )  # its own process group
        root = psutil.Process(proc.pid)
        counter = RowCounter(str(results))
        warm = (
            [
                (files[i * len(files) // args.warmup], f"w_{files[i * len(files) // args.warmup].name}")
                for i in range(min(args.warmup, len(files)))
            ]
            if args.warmup > 0
            else []
        )
        if warm:
            warm_up(warm, landing, counter, proc, stderr_path)
        jcmd, jvm = jcmd_path(), jvm_of(root)
        heap: dict[str, float | None] = {}
        histograms: dict[str, dict[str, tuple[int, int]]] = {}
        if jcmd is None or jvm is None:
            problems.append("jcmd or the JVM not found: cannot measure the live heap (install a JDK, not a JRE)")
        probes = [0.2, 0.5, 1.0] if jcmd and jvm else []
        fed = Feeder(uploads, landing, args.rate)
        t0 = time.perf_counter()
        fed.start()
        deadline = None
        next_tick = t0
        while True:
            now = time.perf_counter()
            samples.append(sample(root, now - t0, fed.count, counter.rows() - len(warm)))
            while probes and samples[-1].rows >= probes[0] * args.uploads:
                point = f"{probes.pop(0):.0%}"
                histograms[point] = idle_histogram(fed, counter, len(warm), args, jcmd, jvm, problems)
                heap[point] = sum(size for _, size in histograms[point].values()) or None
            if proc.poll() is not None:
                problems.append(f"the streaming job exited early ({proc.returncode}):\n{tail(stderr_path)}")
                break
            if samples[-1].rows >= args.uploads:
                break
            if fed.done.is_set() and deadline is None:
                deadline = now + args.drain_timeout
            if deadline is not None and now > deadline:
                problems.append(
                    f"only {samples[-1].rows} of {args.uploads} uploads committed "
                    f"{args.drain_timeout:g} s after the last upload"
                )
                break
            if len(samples) % round(10 / args.interval) == 0:
                last = samples[-1]
                print(
                    f"  t={last.t:5.0f} s  uploaded {last.uploaded:6d}  committed {last.rows:6d}  "
                    f"RSS {last.total / MiB:6.0f} MiB (JVM {last.jvm / MiB:.0f}, workers {last.workers / MiB:.0f}, "
                    f"driver {last.driver / MiB:.0f})",
                    flush=True,
                )
            next_tick += args.interval
            time.sleep(max(0.0, next_tick - time.perf_counter()))
        fed.cancel.set()  # only matters when the loop ended on a problem
        fed.join()
        soak_seconds = samples[-1].t
        if fed.error:
            problems.append(f"feeding failed: {fed.error}")

        summary = stop(proc, stdout_path, stderr_path, problems)
        if summary is not None and (summary.get("rows") != args.uploads + len(warm) or summary.get("errors")):
            problems.append(
                f"the job's summary says {summary.get('rows')} rows, {summary.get('errors')} errors "
                f"for {args.uploads} uploads + {len(warm)} warm-up files"
            )
        problems += exactly_once(str(results), str(errors), warm + uploads)
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # our child's own group: the driver, its JVM, its workers
            proc.wait()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    report = analyse(samples, args, soak_seconds, fed.count, problems, heap)
    if args.histograms and len(histograms) > 1:
        report["heap_growth_by_class"] = histogram_growth(histograms)
        (OUT / "soak_histograms.json").write_text(json.dumps(histograms))
    plot = plot_rss(samples, report, args, OUT / "soak_rss.png")
    path = save(
        "soak",
        {
            "uploads": args.uploads,
            "rate": args.rate,
            "trigger": args.trigger,
            "soak_seconds": round(soak_seconds, 2),
            "feed_seconds": round(fed.seconds, 2),
            **report,
            "problems": problems,
            "samples": [asdict(s) for s in samples],
        },
    )
    print(f"saved {path} and {plot}")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


# ----------------------------------------------------------------------------- the job
def warm_up(
    warm: list[tuple[Path, str]], landing: Path, counter: RowCounter, proc: subprocess.Popen, stderr_path: Path
) -> None:
    """Land the warm-up files and wait until they are committed: the job is then started and warm
    (model loaded, Python workers and their engines built); the clock is its own progress."""
    t0 = time.perf_counter()
    for src, name in warm:
        land(src, landing, name)
    while counter.rows() < len(warm):
        if proc.poll() is not None:
            raise SystemExit(
                f"soak.py: the streaming job exited during warm-up ({proc.returncode}):\n{tail(stderr_path)}"
            )
        if time.perf_counter() - t0 > STARTUP_TIMEOUT_S:
            raise SystemExit(f"soak.py: {len(warm)} warm-up files not committed within {STARTUP_TIMEOUT_S:g} s")
        time.sleep(0.25)
    print(f"warm-up: {len(warm)} files committed in {time.perf_counter() - t0:.1f} s; soak starts", flush=True)


def stop(proc: subprocess.Popen, stdout_path: Path, stderr_path: Path, problems: list[str]) -> dict | None:
    """SIGTERM to the driver only (it stops its queries and JVM itself); exit 0 and a JSON summary expected."""
    if proc.poll() is not None:
        return None
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        problems.append(f"the job did not stop within {STOP_TIMEOUT_S:g} s of SIGTERM")
        return None
    if code != 0:
        problems.append(f"the job exited {code} after SIGTERM (expected 0):\n{tail(stderr_path)}")
    lines = [line for line in stdout_path.read_text().splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        problems.append("no JSON summary on the job's last stdout line")
        return None


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Feeder(threading.Thread):
    """Lands the uploads on a fixed schedule (t0 + i / rate, shifted by the time spent paused), like steady users."""

    def __init__(self, uploads: list[tuple[Path, str]], landing: Path, rate: float):
        super().__init__(name="feeder", daemon=True)
        self.uploads, self.landing, self.rate = uploads, landing, rate
        self.count = 0
        self.seconds = 0.0
        self.error: str | None = None
        self.done = threading.Event()
        self.cancel = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self.landing_lock = threading.Lock()  # held while one upload lands and is counted

    def pause(self) -> None:
        """Land nothing more until resume(); on return, `count` is final (an upload landing now is counted)."""
        self.running.clear()
        with self.landing_lock:
            pass

    def resume(self) -> None:
        self.running.set()

    def run(self) -> None:
        start = time.perf_counter()
        try:
            for i, (src, name) in enumerate(self.uploads):
                delay = start + i / self.rate - time.perf_counter()
                if self.cancel.wait(delay) if delay > 0 else self.cancel.is_set():
                    return
                while True:
                    with self.landing_lock:
                        if self.running.is_set():
                            land(src, self.landing, name)
                            self.count = i + 1
                            break
                    paused = time.perf_counter()
                    while not self.running.wait(0.5):
                        if self.cancel.is_set():
                            return
                    start += time.perf_counter() - paused  # resume on schedule, without a burst
        except OSError as exc:
            self.error = str(exc)
        finally:
            self.seconds = time.perf_counter() - start
            self.done.set()


class RowCounter:
    """Committed rows, from the results table's Delta log (the row count of each committed file)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.table = None

    def rows(self) -> int:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            if self.table is None:
                self.table = DeltaTable(self.uri)
            else:
                self.table.update_incremental()
        except TableNotFoundError:
            return 0
        actions = self.table.get_add_actions(flatten=True)
        return sum(n or 0 for n in actions.column("num_records").to_pylist()) if actions.num_rows else 0


def exactly_once(results: str, errors: str, uploads: list[tuple[Path, str]]) -> list[str]:
    """One committed row per upload: same count, no duplicate path, none missing; no errors rows."""
    paths = table_paths(results)
    expected = {f"{src.parent.name}/{name}" for src, name in uploads}
    got = ["/".join(p.rstrip("/").split("/")[-2:]) for p in paths]
    problems = []
    if len(got) != len(expected) or len(set(got)) != len(got) or set(got) != expected:
        dupes = len(got) - len(set(got))
        problems.append(
            f"exactly once violated: {len(got)} rows for {len(expected)} uploads, {dupes} duplicate "
            f"paths, {len(expected - set(got))} missing, {len(set(got) - expected)} unexpected"
        )
    error_rows = len(table_paths(errors))
    if error_rows:
        problems.append(f"{error_rows} rows in the errors table (every upload is a valid image)")
    return problems


# ----------------------------------------------------------------------------- memory
HEAP_SLACK = 64 * MiB  # growth allowed regardless of ratio: bounded caches (seen-files map, UI history)


def jcmd_path() -> str | None:
    java = shutil.which("java")
    for candidate in (shutil.which("jcmd"), str(Path(os.path.realpath(java)).with_name("jcmd")) if java else None):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def jvm_of(root) -> int | None:
    import psutil

    try:
        for child in root.children(recursive=True):
            if child.name() == "java" and child.ppid() == root.pid:
                return child.pid
    except psutil.Error:
        return None
    return None


def idle_histogram(
    fed: Feeder, counter: RowCounter, warm: int, args: argparse.Namespace, jcmd: str, pid: int, problems: list[str]
) -> dict[str, tuple[int, int]]:
    """The JVM's live objects with the job idle: pause the feed, wait for every landed upload to be
    committed and --settle more seconds, take the class histogram, resume the feed."""
    fed.pause()
    try:
        deadline = time.perf_counter() + args.drain_timeout
        while counter.rows() - warm < fed.count:
            if time.perf_counter() > deadline:
                problems.append(
                    f"live-heap probe: {fed.count - counter.rows() + warm} landed uploads still "
                    f"uncommitted after {args.drain_timeout:g} s"
                )
                return {}
            time.sleep(0.2)
        time.sleep(args.settle)
        return class_histogram(jcmd, pid)
    finally:
        fed.resume()


def class_histogram(jcmd: str, pid: int) -> dict[str, tuple[int, int]]:
    """Live objects per class right after a full GC (the histogram forces one): {class: (instances, bytes)}."""
    import re

    try:
        text = subprocess.run(
            [jcmd, str(pid), "GC.class_histogram"], capture_output=True, text=True, timeout=120, check=True
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return {}
    rows = re.findall(r"^\s*\d+:\s+(\d+)\s+(\d+)\s+(\S+)", text, flags=re.MULTILINE)
    return {name: (int(count), int(size)) for count, size, name in rows}


def histogram_growth(histograms: dict[str, dict[str, tuple[int, int]]], top: int = 15) -> list[dict]:
    """Print and return the classes whose live bytes grew most from the first histogram to the last."""
    points = list(histograms)
    first, last = histograms[points[0]], histograms[points[-1]]
    grown = sorted(last, key=lambda name: last[name][1] - first.get(name, (0, 0))[1], reverse=True)[:top]
    table = [
        {
            "class": name,
            **{f"mib_{p}": round(histograms[p].get(name, (0, 0))[1] / MiB, 2) for p in points},
            **{f"instances_{p}": histograms[p].get(name, (0, 0))[0] for p in points},
        }
        for name in grown
    ]
    print(f"\nJVM live bytes by class, the {top} that grew most {points[0]} -> {points[-1]} (jcmd GC.class_histogram)")
    print(f"{'class':60}  " + "  ".join(f"{p:>8}" for p in points) + "  (MiB)   instances")
    for row in table:
        print(
            f"{row['class'][:60]:60}  "
            + "  ".join(f"{row[f'mib_{p}']:8.1f}" for p in points)
            + "  "
            + " -> ".join(str(row[f"instances_{p}"]) for p in points)
        )
    return table


def sample(root, t: float, uploaded: int, rows: int) -> Sample:
    import psutil

    seen = []  # (pid, ppid, is_java, command, rss)
    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for proc in tree:
        try:
            command = " ".join(proc.cmdline())
            is_java = proc.name() == "java" or command.split(" ", 1)[0].endswith("/java")
            seen.append((proc.pid, proc.ppid(), is_java, command, proc.memory_info().rss))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    java_pids = {pid for pid, _, is_java, _, _ in seen if is_java}
    parts = {"driver": 0, "jvm": 0, "workers": 0, "other": 0}
    n_workers = 0
    for pid, ppid, is_java, command, rss in seen:
        if pid == root.pid:
            parts["driver"] += rss
        elif is_java:
            if ppid in java_pids:
                # The JVM forks helpers (Hadoop's local FS runs shell commands): between fork and
                # exec the child shows the JVM's whole RSS, yet shares every page. Not memory.
                continue
            parts["jvm"] += rss
        elif "pyspark.daemon" in command or "pyspark.worker" in command:
            parts["workers"] += rss
            n_workers += 1
        else:
            parts["other"] += rss
    return Sample(t, uploaded, rows, sum(parts.values()), n_workers=n_workers, **parts)


def analyse(
    samples: list[Sample],
    args: argparse.Namespace,
    soak_seconds: float,
    fed: int,
    problems: list[str],
    heap: dict[str, float | None],
) -> dict:
    """Print the table; return the numbers. Appends to `problems` (growth, too few samples)."""
    soaked = [s for s in samples if s.t >= 0]
    if not soaked or soak_seconds <= 0:
        problems.append("no samples during the soak")
        return {}

    def window(lo: float, hi: float) -> list[Sample]:
        return [s for s in soaked if lo * soak_seconds <= s.t <= hi * soak_seconds]

    def med(chosen: list[Sample], part: str = "total") -> float:
        return statistics.median(getattr(s, part) for s in chosen) if chosen else float("nan")

    base_window, last_window = window(0.2, 0.4), window(0.8, 1.0)
    if min(len(base_window), len(last_window)) < 3:
        problems.append(
            f"soak too short for its windows ({len(base_window)} and {len(last_window)} samples, "
            "need 3 each): raise --uploads or lower --rate"
        )
    baseline = med(base_window)
    growth = {
        part: med(last_window, part) / med(base_window, part) if med(base_window, part) else float("nan")
        for part in ("total", "driver", "jvm", "workers")
    }

    def at_fraction(fraction: float) -> Sample | None:
        return next((s for s in soaked if s.rows >= fraction * args.uploads), None)

    peak = max(soaked, key=lambda s: s.total)
    # (name, bytes, reference for the ratio column, note): each part against its own baseline median
    rows: list[tuple[str, float, float, str]] = [
        ("baseline: median, 20-40% of soak", baseline, baseline, f"{len(base_window)} samples, after warm-up"),
    ]
    points = {}
    for fraction in (0.2, 0.5, 1.0):
        point = at_fraction(fraction)
        points[f"{fraction:.0%}"] = None if point is None else asdict(point)
        rows.append(
            (
                f"at {fraction:.0%} committed",
                point.total if point else float("nan"),
                baseline,
                f"t={point.t:.0f} s, {point.rows} rows" if point else "never reached",
            )
        )
    rows += [
        (
            "median, last 20% of soak",
            med(last_window),
            baseline,
            f"{len(last_window)} samples; JVM committed heap included (see the live heap below)",
        ),
        ("peak, whole tree", peak.total, baseline, f"t={peak.t:.0f} s"),
    ]
    most_workers = max(s.n_workers for s in soaked)
    for part, label, extra in (
        ("jvm", "JVM", ""),
        ("workers", "Python workers", f"{most_workers} processes at most"),
        ("driver", "Python driver", ""),
    ):
        rows.append((f"{label}: baseline median", med(base_window, part), med(base_window, part), ""))
        rows.append(
            (f"{label}: last 20% median", med(last_window, part), med(base_window, part), f"growth {growth[part]:.3f}")
        )
        rows.append((f"{label}: peak", max(getattr(s, part) for s in soaked), med(base_window, part), extra))
    heap_first, heap_last = heap.get("20%"), heap.get("100%")
    for point, value in heap.items():
        rows.append(
            (
                f"JVM live heap, idle, {point}",
                value if value else float("nan"),
                heap_first or 0.0,
                "jcmd GC.class_histogram total",
            )
        )
    heap_ok = bool(heap_first and heap_last) and (
        heap_last <= heap_first * (1 + args.max_growth) or heap_last - heap_first <= HEAP_SLACK
    )
    python_ok = all(growth[p] <= 1 + args.max_growth for p in ("workers", "driver"))
    if any(s.other for s in soaked):
        rows.append(
            ("other processes: peak", max(s.other for s in soaked), 0.0, "in the tree, neither JVM nor workers")
        )
    width = max(len(r[0]) for r in rows)
    print(
        f"\nsoak: RSS of `fruits stream` + JVM + Python workers, {args.uploads} uploads at {args.rate:g}/s "
        f"(fed in {fed} files), trigger {args.trigger}, {soak_seconds:.0f} s from first upload to last commit"
    )
    print(f"{'':{width}}  {'RSS MiB':>8}  {'ratio':>6}  note")
    for name, value, reference, note in rows:
        ratio = f"{value / reference:6.2f}" if reference else f"{'-':>6}"
        print(f"{name:{width}}  {value / MiB:8.0f}  {ratio}  {note}")
    flat = heap_ok and python_ok
    print(
        f"verdict: {'FLAT' if flat else 'GROWTH: FAIL'} (JVM live heap "
        f"{'n/a' if not (heap_first and heap_last) else f'{heap_first / MiB:.0f} -> {heap_last / MiB:.0f} MiB'}, "
        f"Python workers x{growth['workers']:.3f}, driver x{growth['driver']:.3f}; "
        f"total RSS x{growth['total']:.3f}, which includes heap the JVM committed but does not use)"
    )
    if not heap_ok and heap_first and heap_last:
        problems.append(
            f"JVM live heap grew from {heap_first / MiB:.0f} to {heap_last / MiB:.0f} MiB "
            f"(limit +{args.max_growth:.0%} or +{HEAP_SLACK // MiB} MiB)"
        )
    if not python_ok:
        problems.append(
            "Python memory grew: "
            + ", ".join(f"{p} x{growth[p]:.3f}" for p in ("workers", "driver"))
            + (
                ""
                if soak_seconds >= 30
                else f". NB: a {soak_seconds:.0f} s soak mostly measures warm-up: "
                "soak >= 30 s, e.g. --rate 20 for 800 uploads"
            )
        )
    return {
        "baseline_rss_mib": round(baseline / MiB, 1),
        "last20_rss_mib": round(med(last_window) / MiB, 1),
        "growth": {k: round(v, 4) for k, v in growth.items()},
        "peak_rss_mib": {
            "total": round(peak.total / MiB, 1),
            **{p: round(max(getattr(s, p) for s in soaked) / MiB, 1) for p in ("jvm", "workers", "driver", "other")},
        },
        "at_committed": points,
        "jvm_live_heap_mib": {k: round(v / MiB, 1) if v else None for k, v in heap.items()},
        "flat": flat,
    }


def plot_rss(samples: list[Sample], report: dict, args: argparse.Namespace, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(parents=True, exist_ok=True)
    t = [s.t for s in samples]
    fig, ax = plt.subplots(figsize=(10, 5.5))
    for part, label, style in (
        ("total", "whole tree", "-"),
        ("jvm", "JVM", "-"),
        ("workers", "Python workers", "-"),
        ("driver", "Python driver", "--"),
    ):
        ax.plot(t, [getattr(s, part) / MiB for s in samples], style, label=label, linewidth=1.6)
    end = max((s.t for s in samples), default=0.0)
    if end > 0:
        ax.axvspan(0.2 * end, 0.4 * end, color="tab:green", alpha=0.08, label="baseline window (20-40%)")
        ax.axvspan(0.8 * end, end, color="tab:red", alpha=0.08, label="last 20%")
    ax.set_xlabel("seconds since the first upload")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    heap = report.get("jvm_live_heap_mib", {})
    live = " -> ".join(f"{v:.0f}" for v in heap.values() if v) or "n/a"
    growth = report.get("growth", {})
    ax.set_title(
        f"Streaming job memory over {args.uploads} uploads at {args.rate:g}/s: "
        f"{'flat' if report.get('flat') else 'GROWS'}\n"
        f"JVM live heap, idle, at 20/50/100%: {live} MiB; last 20% vs 20-40%: Python driver "
        f"x{growth.get('driver', float('nan')):.3f}, workers x{growth.get('workers', float('nan')):.3f}",
        fontsize=10,
    )
    rows_ax = ax.twinx()
    rows_ax.plot(t, [s.uploaded for s in samples], ":", color="black", alpha=0.6, label="uploaded (right axis)")
    rows_ax.plot(t, [s.rows for s in samples], ":", color="tab:purple", label="committed rows (right axis)")
    rows_ax.set_ylabel("files")
    rows_ax.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    more, more_labels = rows_ax.get_legend_handles_labels()
    fig.legend(handles + more, labels + more_labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main())
