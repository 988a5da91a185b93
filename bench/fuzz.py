"""Fuzz the decode for as long as asked: the seeded generator of tests/hostile_images.py with fresh seeds,
then atheris (coverage-guided, libFuzzer) on fruits.decode.decode, seeded with the generator's files.

Everything runs in child processes watched from here, so a native crash in a decoder or a hang is caught
and reported with the input that did it. A finding is an input that crashes or hangs the decode, or
whose decode fails in a way no reason explains (`decode_failed`): each is written to the regression
corpus the tests replay (tests/decode_regressions.json) with what it got, for a person to fix.

    .venv/bin/python bench/fuzz.py --minutes 10 [--engines generator,atheris] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common import DATA, ROOT, machine, save

sys.path.insert(0, str(ROOT / "tests"))

MUTATIONS_PER_CHILD = 500
HANG_SECONDS = 30  # one input: the slowest legitimate decode here takes about 2 s
SLOW_MS = 5000  # a libFuzzer slow unit is a finding if its decode, replayed uninstrumented, still takes this long
ATHERIS_RSS_MB = 2048  # libFuzzer's limit for a child: the decode's budget is 256 MB


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


# ----------------------------------------------------------------------------- children
def child_generator(seed: int, mutations: int, crafted: bool, max_pixels: int) -> None:
    """Decode the generator's inputs one by one; a line before and after each, for the watchdog."""
    from fruits import decode
    from hostile_images import generate

    for i, hostile in enumerate(generate(seed, mutations, DATA, crafted=crafted)):
        print(f"start {i}", flush=True)
        start = time.perf_counter()
        try:
            decode.decode(hostile.data, max_pixels)
            outcome, detail = "features", ""
        except decode.Rejected as exc:
            outcome, detail = exc.reason, exc.detail
        except BaseException as exc:  # the contract is broken: report it, do not die
            outcome, detail = "raised", f"{type(exc).__name__}: {exc}"
        ms = 1000 * (time.perf_counter() - start)
        print(
            json.dumps({"i": i, "family": hostile.family, "outcome": outcome, "ms": ms, "detail": detail[:200]}),
            flush=True,
        )
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}), flush=True)


def child_atheris(max_pixels: int, stats: str, libfuzzer_args: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["PIL", "fruits"]):
        from fruits import decode
    counts: Counter[str] = Counter()
    slowest = [0.0]

    def one(data: bytes) -> None:
        start = time.perf_counter()
        try:
            decode.decode(data, max_pixels)
            counts["features"] += 1
        except decode.Rejected as exc:
            counts[exc.reason] += 1
            if exc.reason == "decode_failed":
                raise AssertionError(f"decode_failed: {exc.detail}") from None
        slowest[0] = max(slowest[0], 1000 * (time.perf_counter() - start))
        if sum(counts.values()) % 1000 == 0:  # libFuzzer ends the process without Python's exit hooks
            partial = Path(stats + ".tmp")  # replaced at once: the watcher reads it meanwhile
            partial.write_text(
                json.dumps(
                    {
                        "inputs": sum(counts.values()),
                        "reasons": counts,
                        "peak_rss_mb": peak_rss_mb(),
                        "slowest_ms": slowest[0],
                    }
                )
            )
            partial.replace(stats)

    atheris.Setup([sys.argv[0], *libfuzzer_args], one)
    atheris.Fuzz()


def child_replay(path: str, max_pixels: int) -> None:
    from fruits import decode

    start = time.perf_counter()
    try:
        decode.decode(Path(path).read_bytes(), max_pixels)
        reason, detail = "features", ""
    except decode.Rejected as exc:
        reason, detail = exc.reason, exc.detail
    print(f"{1000 * (time.perf_counter() - start):.0f}\t{reason}\t{detail}")


# ----------------------------------------------------------------------------- the watcher
@dataclass
class Finding:
    engine: str
    outcome: str  # a reason no reason explains (decode_failed), "crash: SIGSEGV", "hang", "raised", "oom"
    detail: str
    data: bytes = field(repr=False)

    @property
    def signature(self) -> str:
        """Findings of one cause: same outcome, same exception class and message but for numbers."""
        return self.outcome + re.sub(r"\d+", "#", self.detail[:60])


@dataclass
class Totals:
    inputs: int = 0
    reasons: Counter = field(default_factory=Counter)
    crashes: int = 0
    hangs: int = 0
    slowest_ms: float = 0.0
    slowest_input: str = ""
    peak_rss_mb: float = 0.0
    coverage: int | None = None  # atheris: edges covered (Python and instrumented code)


def _child_command(*args: str) -> list[str]:
    return [sys.executable, __file__, "--child", *args]


def run_generator(
    deadline: float, seed: int, max_pixels: int, totals: Totals, findings: list[Finding], progress
) -> None:
    """Children of MUTATIONS_PER_CHILD fresh mutations each (the crafted files once), until the deadline."""
    from hostile_images import generate

    chunk = 0
    while time.monotonic() < deadline:
        chunk_seed, crafted = seed * 1_000_003 + chunk, chunk == 0
        process = subprocess.Popen(
            _child_command("generator", str(chunk_seed), str(MUTATIONS_PER_CHILD), str(int(crafted)), str(max_pixels)),
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        started = None
        watched = _watch(process)
        for line in watched.lines:
            if line.startswith("start "):
                started = int(line.split()[1])
                continue
            record = json.loads(line)
            if "peak_rss_mb" in record:
                totals.peak_rss_mb = max(totals.peak_rss_mb, record["peak_rss_mb"])
                continue
            started = None
            totals.inputs += 1
            totals.reasons[record["outcome"]] += 1
            if record["ms"] > totals.slowest_ms:
                totals.slowest_ms = record["ms"]
                totals.slowest_input = f"seed {chunk_seed} #{record['i']} {record['family']}"
            if record["outcome"] in ("decode_failed", "raised"):
                data = generate(chunk_seed, MUTATIONS_PER_CHILD, DATA, crafted=crafted)[record["i"]].data
                findings.append(
                    Finding(
                        "generator",
                        record["outcome"],
                        f"{record['detail']} (seed {chunk_seed} #{record['i']} {record['family']})",
                        data,
                    )
                )
        if watched.kind and started is None:
            raise RuntimeError(f"the generator's child failed outside any input ({watched.outcome}): see its stderr")
        if watched.kind:
            totals.crashes += watched.kind == "crash"
            totals.hangs += watched.kind == "hang"
            data = generate(chunk_seed, MUTATIONS_PER_CHILD, DATA, crafted=crafted)[started].data
            findings.append(Finding("generator", watched.outcome, f"seed {chunk_seed} #{started}", data))
        progress()
        chunk += 1


@dataclass
class Watched:
    lines: list[str]
    kind: str | None = None  # None, "crash" or "hang"
    outcome: str = ""


def _watch(process: subprocess.Popen) -> Watched:
    """Read a child's lines until it ends; kill it when no line came for HANG_SECONDS (a hang)."""
    watched = Watched([])
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    while True:
        if not selector.select(timeout=HANG_SECONDS):
            process.kill()
            process.wait()
            watched.kind, watched.outcome = "hang", f"hang: no progress in {HANG_SECONDS} s"
            return watched
        line = process.stdout.readline()
        if not line:
            break
        watched.lines.append(line.strip())
    process.wait()
    if process.returncode < 0:
        watched.kind, watched.outcome = "crash", f"crash: {signal.Signals(-process.returncode).name}"
    elif process.returncode > 0:
        watched.kind, watched.outcome = "crash", f"crash: exit status {process.returncode}"
    return watched


def run_atheris(deadline: float, seed: int, max_pixels: int, totals: Totals, findings: list[Finding], progress) -> None:
    """libFuzzer rounds until the deadline (a round ends at its first finding); the corpus carries over."""
    from hostile_images import generate

    with tempfile.TemporaryDirectory() as tmp:
        corpus, artifacts, stats = Path(tmp, "corpus"), Path(tmp, "artifacts"), Path(tmp, "stats.json")
        corpus.mkdir()
        artifacts.mkdir()
        for i, hostile in enumerate(generate(seed, 200, DATA)):
            if len(hostile.data) <= 200_000:
                (corpus / f"seed-{i:04d}").write_bytes(hostile.data)
        while (left := deadline - time.monotonic()) > 5:
            args = [
                str(corpus),
                f"-max_total_time={int(left)}",
                f"-timeout={HANG_SECONDS}",
                f"-seed={seed}",
                f"-rss_limit_mb={ATHERIS_RSS_MB}",
                f"-artifact_prefix={artifacts}/",
                "-print_final_stats=1",
                "-max_len=200000",
            ]
            log = Path(tmp, "libfuzzer.log")
            with log.open("w") as err:
                process = subprocess.Popen(
                    _child_command("atheris", str(max_pixels), str(stats), *args),
                    stderr=err,
                    stdout=subprocess.DEVNULL,
                    cwd=ROOT,
                )
                while process.poll() is None:  # libFuzzer keeps its own time and its own watchdog
                    time.sleep(1)
                    if stats.is_file():
                        progress(json.loads(stats.read_text())["inputs"])
            text = log.read_text(errors="replace")
            runs = re.findall(r"stat::number_of_executed_units: (\d+)", text)
            if not runs:
                raise RuntimeError(f"atheris ran nothing: {text.strip()[-500:]}")
            totals.inputs += int(runs[-1])
            coverage = re.findall(r"cov: (\d+)", text)
            totals.coverage = max(totals.coverage or 0, *(int(c) for c in coverage)) if coverage else totals.coverage
            if stats.is_file():
                round_stats = json.loads(stats.read_text())
                totals.reasons.update(round_stats["reasons"])
                totals.peak_rss_mb = max(totals.peak_rss_mb, round_stats["peak_rss_mb"])
                if round_stats["slowest_ms"] > totals.slowest_ms:
                    totals.slowest_ms, totals.slowest_input = round_stats["slowest_ms"], "(atheris)"
                stats.unlink()
            for artifact in sorted(artifacts.iterdir()):
                finding = _classify(artifact, max_pixels, totals)
                findings += [finding] if finding else []
                artifact.unlink()
            seed += 1


def _classify(artifact: Path, max_pixels: int, totals: Totals) -> Finding | None:
    """What a libFuzzer artifact (crash-, timeout-, oom-, slow-unit-) does to the decode, replayed in a fresh
    child; None for a slow unit that is not slow without the instrumentation."""
    data = artifact.read_bytes()
    try:
        out = subprocess.run(
            _child_command("replay", str(artifact), str(max_pixels)),
            capture_output=True,
            text=True,
            timeout=HANG_SECONDS * 2,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        totals.hangs += 1
        return Finding("atheris", "hang", artifact.name, data)
    if out.returncode != 0:
        totals.crashes += 1
        outcome = f"crash: {signal.Signals(-out.returncode).name}" if out.returncode < 0 else "crash"
        return Finding("atheris", outcome, out.stderr.strip()[-200:], data)
    ms, reason, detail = out.stdout.strip().split("\t", 2)
    kind = artifact.name.split("-")[0]
    if kind == "slow" and float(ms) < SLOW_MS:
        return None  # slow under instrumentation (or on a busy machine) only
    return Finding("atheris", reason if kind == "crash" else f"{kind}: {reason} in {float(ms):,.0f} ms", detail, data)


def record(findings: list[Finding], now: str) -> list[str]:
    """The smallest input of each cause into the regression corpus; returns the names added."""
    from hostile_images import Regression, add_regressions

    smallest: dict[str, Finding] = {}
    for finding in findings:
        if finding.signature not in smallest or len(finding.data) < len(smallest[finding.signature].data):
            smallest[finding.signature] = finding
    new = [
        Regression(
            f"fuzz-{f.engine}-{hashlib.sha1(f.data).hexdigest()[:10]}",
            f.data,
            f.outcome,
            f"bench/fuzz.py {now} ({f.engine}): {f.detail}",
        )
        for f in smallest.values()
    ]
    return [r.name for r in add_regressions(new)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--engines", default="generator,atheris", help="comma-separated: generator, atheris")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000, help="default: from the clock")
    parser.add_argument("--max-pixels", type=int, default=64_000_000)
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, rest = args.child[0], args.child[1:]
        if kind == "generator":
            child_generator(int(rest[0]), int(rest[1]), rest[2] == "1", int(rest[3]))
        elif kind == "atheris":
            child_atheris(int(rest[0]), rest[1], rest[2:])
        else:
            child_replay(rest[0], int(rest[1]))
        return

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    skipped = {}
    if "atheris" in engines:
        try:
            import atheris  # noqa: F401
        except ImportError:
            engines.remove("atheris")
            skipped["atheris"] = "not installed (pip install -e '.[dev]')"
    print(
        f"fuzzing the decode for {args.minutes:g} min ({', '.join(engines)}), seed {args.seed}; {machine()}",
        file=sys.stderr,
    )
    started = time.monotonic()
    end = started + args.minutes * 60
    totals = {engine: Totals() for engine in engines}
    findings: list[Finding] = []
    last_line = [0.0]

    def progress(running: int = 0) -> None:
        """A line every 15 s; `running`: inputs of an atheris round not counted in the totals yet."""
        if time.monotonic() - last_line[0] >= 15:
            last_line[0] = time.monotonic()
            done = ", ".join(
                f"{name} {t.inputs + (running if name == 'atheris' else 0):,} inputs" for name, t in totals.items()
            )
            print(
                f"fuzz {_clock(time.monotonic() - started)}/{_clock(end - started)}: {done}, {len(findings)} findings",
                file=sys.stderr,
                flush=True,
            )

    for n, engine in enumerate(engines):
        share = (end - time.monotonic()) / (len(engines) - n)
        run = run_generator if engine == "generator" else run_atheris
        run(time.monotonic() + share, args.seed, args.max_pixels, totals[engine], findings, progress)
    added = record(findings, time.strftime("%Y-%m-%d")) if findings else []
    summary = {
        "minutes": args.minutes,
        "seed": args.seed,
        "max_pixels": args.max_pixels,
        "inputs": sum(t.inputs for t in totals.values()),
        "engines": {name: {**asdict(t), "reasons": dict(t.reasons.most_common())} for name, t in totals.items()},
        "skipped": skipped,
        "findings": [
            {"engine": f.engine, "outcome": f.outcome, "detail": f.detail, "bytes": len(f.data)} for f in findings
        ],
        "corpus_added": added,
    }
    save("fuzz", summary)
    for name, t in totals.items():
        print(
            f"{name}: {t.inputs:,} inputs, {t.crashes} crashes, {t.hangs} hangs, slowest {t.slowest_ms:,.0f} ms "
            f"{t.slowest_input}, peak RSS {t.peak_rss_mb:,.0f} MB; {dict(t.reasons.most_common())}"
        )
    for name, why in skipped.items():
        print(f"{name}: skipped, {why}")
    print(f"{len(findings)} findings; regression corpus +{len(added)}: {', '.join(added) or 'nothing new'}")
    if args.json:
        print(json.dumps(summary))


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


if __name__ == "__main__":
    main()
