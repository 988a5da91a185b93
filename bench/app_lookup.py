"""Answer lookups by upload id (what the app's page does on every poll), with many answers stored.

The answers store (fruits.answers) on its two backends:

- sqlite (the embedded default): `--answers` answers (default 1,000,000) upserted in batches as the
  stream writes them, then `--lookups` random lookups of stored ids, timed one by one; and the same
  lookups while a writer thread keeps upserting (the stream's micro-batches go on while people poll);
- DynamoDB on a moto server (its own process on 127.0.0.1): moto fills slowly (a Python dict behind
  an HTTP server, 25 items per request), so `--dynamo-answers` (default 20,000) items. A lookup here
  is an HTTP round trip to moto, not DynamoDB's own latency: the ratio against its empty table is
  what this measures (does the item count matter?), not production milliseconds.

Baselines measured in the same run: the same ids looked up in a Python dict of the same JSON bodies
and decoded the same way (the cost of the answer itself), and the sqlite store holding 1,000 answers.

    .venv/bin/python bench/app_lookup.py [--answers 1000000] [--lookups 20000] [--dynamo-answers 20000]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import machine, save

from fruits.answers import ANSWERED, Answer, DynamoAnswers, SqliteAnswers, open_answer_store
from fruits.settings import Settings

CLASSES = ["Apple Red 1", "Banana", "Kaki", "Limes", "Pear", "Tomato 4"]
RETENTION_S = 30 * 86400.0


def answer(upload_id: str, rng: random.Random, now: float) -> Answer:
    """An answer shaped like the stream's: three classes, five neighbours, a map position."""
    top = sorted(((c, rng.random()) for c in rng.sample(CLASSES, 3)), key=lambda t: -t[1])
    return Answer(
        upload_id,
        ANSWERED,
        answered_at=now,
        uploaded_at=now - 1.2,
        consent=rng.random() < 0.5,
        prediction=top[0][0],
        confidence=top[0][1],
        is_novel=False,
        top=tuple(top),
        neighbours=tuple(rng.sample(range(640), 5)),
        map_xy=(rng.random(), rng.random()),
        model_name="fruits-pca",
        model_version="3",
    )


def ids(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.getrandbits(128):032x}" for _ in range(count)]


def fill(store, upload_ids: list[str], chunk: int) -> float:
    rng, now, started = random.Random(1), time.time(), time.perf_counter()
    for start in range(0, len(upload_ids), chunk):
        store.put_many(answer(i, rng, now) for i in upload_ids[start : start + chunk])
    return time.perf_counter() - started


def timed(lookup: Callable[[str], Answer | None], queries: list[str], min_seconds: float = 0.0) -> np.ndarray:
    """Seconds per lookup, after one untimed pass over the queries (a serving store's pages are cached);
    the queries again and again until `min_seconds` have passed. Every query must find its answer."""
    for upload_id in queries:
        lookup(upload_id)
    out: list[float] = []
    deadline = time.perf_counter() + min_seconds
    while not out or time.perf_counter() < deadline:
        for upload_id in queries:
            started = time.perf_counter()
            found = lookup(upload_id)
            out.append(time.perf_counter() - started)
            if found is None or found.upload_id != upload_id:
                raise SystemExit(f"app_lookup.py: lookup of {upload_id} found {found!r}")
    return np.asarray(out)


def summary(seconds: np.ndarray) -> dict[str, float]:
    return {f"p{q}_us": round(float(np.percentile(seconds, q)) * 1e6, 1) for q in (50, 95, 99)}


def sqlite_runs(folder: Path, count: int, lookups: int) -> dict[str, dict]:
    upload_ids = ids(count, seed=7)
    queries = random.Random(3).choices(upload_ids, k=lookups)
    rng = random.Random(1)
    bodies = {i: answer(i, rng, time.time()).to_json() for i in queries}  # the baseline: a dict, same JSON
    runs = {"dict + JSON decode (baseline)": summary(timed(lambda i: Answer.from_json(bodies[i]), queries))}

    small = SqliteAnswers(folder / "small.db", RETENTION_S)
    fill(small, upload_ids[:1000], 1000)
    small_queries = random.Random(4).choices(upload_ids[:1000], k=lookups)
    runs["sqlite, 1,000 stored"] = summary(timed(small.get, small_queries))

    store = SqliteAnswers(folder / "answers.db", RETENTION_S)
    fill_s = fill(store, upload_ids, 10_000)
    print(
        f"sqlite: {count:,} answers upserted in {fill_s:.1f} s ({count / fill_s:,.0f}/s), "
        f"{os.path.getsize(folder / 'answers.db') / 2**20:.0f} MiB",
        flush=True,
    )
    runs[f"sqlite, {count:,} stored"] = {**summary(timed(store.get, queries)), "fill_s": round(fill_s, 1)}

    stop, written = threading.Event(), [0]

    def writer() -> None:  # the stream: a micro-batch of 50 app answers every 0.5 s, on its own connection
        writes = SqliteAnswers(folder / "answers.db", RETENTION_S)
        wrng = random.Random(9)
        while not stop.wait(0.5):
            written[0] += writes.put_many(answer(i, wrng, time.time()) for i in wrng.choices(upload_ids, k=50))

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        runs[f"sqlite, {count:,} stored, stream writing"] = summary(timed(store.get, queries, min_seconds=10.0))
    finally:
        stop.set()
        thread.join()
    print(f"sqlite: {written[0]:,} answers upserted by the writer during those lookups", flush=True)
    return runs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dynamo_runs(folder: Path, count: int, lookups: int) -> dict[str, dict]:
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("app_lookup.py: moto_server did not start") from None
                time.sleep(0.2)
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        runs = {}
        for name, stored in (
            ("DynamoDB (moto), 1 stored (baseline)", 1),
            (f"DynamoDB (moto), {count:,} stored", count),
        ):
            settings = Settings.load(
                env={}, state_dir=folder, answers=f"dynamodb://answers-{stored}", dynamodb_endpoint_url=endpoint
            )
            store = open_answer_store(settings)
            assert isinstance(store, DynamoAnswers)
            store.create_table()
            upload_ids = ids(stored, seed=11)
            fill_s = fill(store, upload_ids, 500)
            print(f"moto DynamoDB: {stored:,} answers upserted in {fill_s:.1f} s", flush=True)
            runs[name] = {
                **summary(timed(store.get, random.Random(5).choices(upload_ids, k=lookups))),
                "fill_s": round(fill_s, 1),
            }
        return runs
    finally:
        server.terminate()
        server.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=int, default=1_000_000, help="answers in the sqlite store")
    parser.add_argument("--lookups", type=int, default=20_000, help="timed lookups per variant")
    parser.add_argument("--dynamo-answers", type=int, default=20_000, help="items in the moto DynamoDB table")
    parser.add_argument("--dynamo-lookups", type=int, default=2_000, help="timed lookups per DynamoDB variant")
    args = parser.parse_args()
    print(f"answer lookups by upload id; {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="app-lookup-") as tmp:
        runs = sqlite_runs(Path(tmp), args.answers, args.lookups)
        runs.update(dynamo_runs(Path(tmp), args.dynamo_answers, args.dynamo_lookups))
    baseline = runs["dict + JSON decode (baseline)"]["p95_us"]
    moto_baseline = runs["DynamoDB (moto), 1 stored (baseline)"]["p95_us"]
    width = max(map(len, runs))
    print(f"\n{'':{width}}  {'p50 µs':>9}  {'p95 µs':>9}  {'p99 µs':>9}  p95 / baseline")
    for name, run in runs.items():
        base = moto_baseline if name.startswith("DynamoDB") else baseline
        run["p95_ratio"] = round(run["p95_us"] / base, 2)
        print(
            f"{name:{width}}  {run['p50_us']:9.1f}  {run['p95_us']:9.1f}  {run['p99_us']:9.1f}  {run['p95_ratio']:.2f}"
        )
    path = save(
        "app_lookup",
        {"answers": args.answers, "lookups": args.lookups, "dynamo_answers": args.dynamo_answers, "runs": runs},
    )
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
