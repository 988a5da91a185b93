"""The app under load: simulated people send test/ photos through the app's own endpoints while the stream runs.

For `--seconds` (default 120), `--rate` people per second (default 5) each open the page (cookie +
CSRF token), post one test/ photo to /api/uploads and poll /api/answers/<id> the way the page does
(every 0.3 s, backing off after 8 s) until the answer is there; the stream (1 s trigger) writes the
answers. The app runs in this process on uvicorn, the stream in this process's Spark (local[*]).

Measured, per upload: from the POST to the answer seen by the poller (what a person waits for;
goal p95 <= 3 s) and how many uploads never got an answer (goal 0). Baseline, from the same run:
the stream's own upload->commit latency of those files, and its upload->answer-written latency
(streaming.ops over the measured window: the numbers /ops shows). Their ratio is what the app's
path adds: the HTTP upload, the landing, the answer store, and the polling's granularity.

All simulated people come from 127.0.0.1: the per-client rate limits are lifted for the run (the
app would otherwise count them as one person).

    .venv/bin/python bench/app.py [--rate 5] [--seconds 120] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import DATA, ensure_model, image_files, machine, project_settings, save

from demo.workspace import app_workspace

WARMUP = 5
MODEL_NAME = "fruits-app-bench"  # fitted with held-out images (a novelty threshold) on the first run
ANSWER_TIMEOUT_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=5.0, help="uploads per second (one simulated person each)")
    parser.add_argument("--seconds", type=float, default=120.0, help="how long people keep coming")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line last")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    photos = [p.read_bytes() for p in image_files(DATA / "test")]
    work = Path(tempfile.mkdtemp(prefix="bench-app-"))
    try:
        summary = run(photos, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = save("app", {**summary, "args": vars(args)})
    print(report(summary))
    print(f"saved {path}")
    if args.json:
        print(json.dumps(summary, sort_keys=True), flush=True)


def run(photos: list[bytes], work: Path, args: argparse.Namespace) -> dict:
    from app.main import create_app
    from app.serve import BackgroundServer
    from demo.run import stop_stream, wait_for_first_trigger
    from demo.visitors import Visitor
    from streaming.job import StreamingJob
    from streaming.monitor import read_progress
    from streaming.ops import stream_stats

    base = project_settings()
    settings = app_workspace(
        base,
        work,
        app_uploads_per_minute=10**6,
        app_requests_per_minute=10**7,
        model_name=MODEL_NAME,
    )
    ensure_model(settings, evaluated=True)  # a novelty threshold, for "a fruit I don't know yet"
    job = StreamingJob(settings)
    job.start()
    try:
        wait_for_first_trigger(job)
        with BackgroundServer(create_app(settings)) as server:
            for n in range(WARMUP):  # Python workers, their engines, the known map: loaded before measuring
                one_person(server.url, photos[n], Visitor)
            measured_from = time.time()
            outcomes = people(server.url, photos, args, Visitor, job.raise_if_failed)
            measured_until = time.time()  # every answer seen: its batch's progress line is written
    finally:
        stop_stream(job)
    batches, swaps = read_progress(settings.progress_log)
    stream = stream_stats(batches, swaps, since=measured_from, until=measured_until)
    return summarise(outcomes, stream, args, time.time() - measured_from)


def one_person(url: str, photo: bytes, visitor_class: type) -> dict:
    """Open the page, send the photo, poll for the answer: the seconds from the POST to the answer seen."""
    visitor = visitor_class(url)
    started = time.perf_counter()
    status, upload_id = visitor.send(photo)
    if upload_id is None:
        return {"status": status, "answered": False}
    uploaded = time.perf_counter()
    view = visitor.wait_for_answer(upload_id, timeout=ANSWER_TIMEOUT_S)
    done = time.perf_counter()
    return {
        "status": 201,
        "answered": view is not None,
        "upload_s": uploaded - started,
        "answer_s": done - started if view is not None else None,
        "stream_answer_s": view.get("seconds") if view else None,
        "verdict": view.get("status") if view else None,
    }


def people(
    url: str, photos: list[bytes], args: argparse.Namespace, visitor_class: type, check_stream: Callable[[], None]
) -> list[dict]:
    """One new person every 1/rate seconds for `seconds`, each in a thread of their own while they wait;
    `check_stream` raises if the stream failed (no point sending more)."""
    count = int(args.rate * args.seconds)
    outcomes: list[dict] = []
    lock = threading.Lock()

    def person(n: int) -> None:
        outcome = one_person(url, photos[n % len(photos)], visitor_class)
        with lock:
            outcomes.append(outcome)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(16, int(args.rate * (ANSWER_TIMEOUT_S / 4)))) as pool:
        for n in range(count):
            delay = start + n / args.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            check_stream()
            pool.submit(person, n)
    return outcomes


def summarise(outcomes: list[dict], stream: dict, args: argparse.Namespace, seconds: float) -> dict:
    answered = [o["answer_s"] for o in outcomes if o["answered"]]
    seen = np.asarray(answered) if answered else np.asarray([np.nan])
    upload = np.asarray([o["upload_s"] for o in outcomes if o["status"] == 201])
    commit_p95 = stream["latency_p95_s"]
    return {
        "machine": machine(),
        "uploads": len(outcomes),
        "refused": sum(o["status"] != 201 for o in outcomes),
        "unanswered": sum(not o["answered"] for o in outcomes),
        "rejected": sum(o.get("verdict") == "rejected" for o in outcomes),
        "answer_seen_p50_s": round(float(np.percentile(seen, 50)), 3),
        "answer_seen_p95_s": round(float(np.percentile(seen, 95)), 3),
        "answer_seen_max_s": round(float(np.max(seen)), 3),
        "upload_request_p95_s": round(float(np.percentile(upload, 95)), 3) if len(upload) else None,
        "stream_commit_p50_s": stream["latency_p50_s"],
        "stream_commit_p95_s": commit_p95,
        "stream_answer_p50_s": stream["answer_latency_p50_s"],
        "stream_answer_p95_s": stream["answer_latency_p95_s"],
        "stream_batches": stream["batches"],
        "stream_files": stream["files"],
        "ratio_p95_seen_vs_commit": round(float(np.percentile(seen, 95)) / commit_p95, 2) if commit_p95 else None,
        "goal_p95_s": 3.0,
        "rate": args.rate,
        "seconds": round(seconds, 1),
    }


def report(s: dict) -> str:
    verdict = "meets" if s["answer_seen_p95_s"] <= s["goal_p95_s"] and not s["unanswered"] else "MISSES"
    return "\n".join(
        [
            f"{s['uploads']} uploads at {s['rate']:g}/s through the app ({s['machine']}), 1 s trigger: "
            f"{s['unanswered']} without an answer, {s['refused']} refused, {s['rejected']} rejected by the stream",
            f"{'':28}{'p50':>8}{'p95':>8}  ratio (p95 / stream commit p95)",
            f"{'POST -> answer seen':28}{s['answer_seen_p50_s']:8.2f}{s['answer_seen_p95_s']:8.2f}"
            f"  {s['ratio_p95_seen_vs_commit']}",
            f"{'stream: upload -> answer':28}{s['stream_answer_p50_s'] or float('nan'):8.2f}"
            f"{s['stream_answer_p95_s'] or float('nan'):8.2f}",
            f"{'stream: upload -> commit':28}{s['stream_commit_p50_s'] or float('nan'):8.2f}"
            f"{s['stream_commit_p95_s'] or float('nan'):8.2f}  1.00 (baseline)",
            f"goal: p95 <= {s['goal_p95_s']:g} s and 0 uploads without an answer: {verdict}",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
