"""The stream's source, listing vs notifications: what an idle trigger costs and how soon a new upload lands.

One run, one moto server in this process, one Spark session, the registered model. For 1k, 10k
and 100k objects already under s3://B/images/ (32 class folders), and for each source mode:
1. a fresh stream (checkpoint and tables on local disk, 1 s trigger) on the prefix;
2. idle triggers (nothing new): seconds per trigger, from Spark's own progress
   (durationMs.triggerExecution), and S3 LIST requests per trigger, counted by the moto server
   itself (CountingMotoServer: it sees Spark's S3A requests and boto3's alike);
3. time to first row: one new JPEG is PUT (S3 event -> the Lambda's handler -> SNS -> SQS) and
   timed until the commit of the micro-batch holding it (the job's JSON progress line).
The notification mode's one-off backfill listing at its first start is reported apart.

    .venv/bin/python bench/source.py [--sizes 1000,10000,100000] [--idle-triggers 3]

Scaled, and why: the objects already there are `.bin` filler (neither mode ingests them; a
listing costs the same LIST requests whatever the names), written straight into moto's
in-process S3 backend: moto serves ~80 PUTs/s over HTTP here (100k objects: ~20 min), in-process
it takes seconds. moto answers each LIST page in time proportional to the whole bucket (~2 s per
page at 100k objects, where S3 takes tens of ms), so listing-mode SECONDS at 100k overstate what
S3 would cost; the LIST request counts are S3's (S3A's page size is set to S3's 1,000 keys: moto
would otherwise return 5,000 per page). At 100k, fewer idle triggers are timed.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from common import DATA, ensure_model, machine, project_settings, save, scratch_state

LIST_PRICE_PER_1000 = 0.005  # $ per 1,000 S3 LIST requests (most regions; issue 12)
TRIGGERS_PER_DAY_AT_2S = 43_200
REGION = "eu-west-3"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="objects under the prefix, comma-separated")
    parser.add_argument("--idle-triggers", type=int, default=3, help="idle triggers timed per run (2 from 100k)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    sizes = [int(s) for s in args.sizes.split(",")]

    from demo.emulated_aws import CountingMotoServer, EventPollers, patched_env, wired_bucket

    base = project_settings()
    work = Path(tempfile.mkdtemp(prefix="bench-source-"))
    server = CountingMotoServer()
    server.start()
    fake_account = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": None,
        "AWS_PROFILE": None,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
    }
    results = []
    try:
        with patched_env(fake_account):
            import boto3

            bucket = f"bench-source-{uuid.uuid4().hex[:8]}"
            s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION)
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
            http_puts = http_put_rate(s3, bucket)
            with (
                wired_bucket(work, REGION, server.endpoint, bucket, uuid.uuid4().hex[:8]) as world,
                EventPollers(world),
            ):
                bench = Bench(base, server, world, s3, work)
                print(f"{machine()}; moto: {http_puts:.0f} PUTs/s over HTTP, filler written in-process")
                for n in sizes:
                    seconds = bench.fill(n)
                    print(f"\n{n:,} objects under s3://{bucket}/images/ (filled in {seconds:.0f} s)")
                    for mode in ("listing", "notifications"):
                        triggers = args.idle_triggers if n < 100_000 else min(args.idle_triggers, 2)
                        result = bench.measure(mode, n, triggers)
                        results.append(result)
                        print(
                            f"  {mode:<13} idle trigger {result['idle_trigger_s']:7.2f} s, "
                            f"{result['lists_per_trigger']:6.1f} LIST/trigger; first row after "
                            f"{result['first_row_s']:6.1f} s; first start {result['start_lists']} LIST"
                        )
                bench.spark.stop()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(report(results))
    path = save("source", {"results": results, "args": vars(args), "http_puts_per_second": round(http_puts, 1)})
    print(f"saved {path}")


def http_put_rate(s3, bucket: str, n: int = 200) -> float:
    start = time.perf_counter()
    for i in range(n):
        s3.put_object(Bucket=bucket, Key=f"probe/{i}.bin", Body=b"x")
    rate = n / (time.perf_counter() - start)
    for i in range(n):
        s3.delete_object(Bucket=bucket, Key=f"probe/{i}.bin")
    return rate


class Bench:
    def __init__(self, base, server, world, s3, work: Path):
        from fruits.spark import get_spark

        self.base = base.replace(s3_endpoint_url=server.endpoint, maintenance_interval="off")
        self.server, self.world, self.s3, self.work = server, world, s3, work
        self.classes = sorted(p.name for p in (DATA / "stream").iterdir() if p.is_dir())
        self.image = sorted((DATA / "stream" / self.classes[0]).glob("*.jpg"))[0]
        self.filled = 0
        ensure_model(self.base)
        self.spark = get_spark(self.base, "bench-source", uris=[f"s3a://{world.bucket}/"])
        # S3 returns at most 1,000 keys per LIST page whatever S3A asks for (5,000 by default);
        # moto honours any max-keys, so without this it would count 5x fewer LIST requests than S3.
        self.spark.sparkContext._jsc.hadoopConfiguration().set("fs.s3a.paging.maximum", "1000")
        # Every idle trigger reports its progress (by default at most one per 10 s).
        self.spark.conf.set("spark.sql.streaming.noDataProgressEventInterval", "0")

    def fill(self, n: int) -> float:
        """Filler objects up to `n` under images/<class>/, written into moto's backend in this process."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        start = time.perf_counter()
        for i in range(self.filled, n):
            key = f"images/{self.classes[i % len(self.classes)]}/filler-{i:06d}.bin"
            backend.put_object(self.world.bucket, key, b"x", disable_notification=True)
        self.filled = n
        return time.perf_counter() - start

    def lists(self) -> int:
        return self.server.counts()[("s3", "LIST")]

    def measure(self, mode: str, n: int, idle_triggers: int) -> dict:
        from streaming.job import StreamingJob

        run = self.work / f"{mode}-{n}"
        settings = self.base.replace(
            source=f"s3a://{self.world.bucket}/images/",
            output=str(run / "results"),
            errors=str(run / "errors"),
            checkpoint=str(run / "checkpoint"),
            trigger="1s",
            state_dir=scratch_state(run / "state", self.base),
            mlflow_tracking_uri=self.base.tracking_uri,
            notifications=self.world.stream_queue_url if mode == "notifications" else None,
        )
        self.world_queue_purge()
        before_start = self.lists()
        job = StreamingJob(settings, spark=self.spark)
        job.start()
        try:
            idle = self.wait_idle(job, 1)  # the first trigger: notifications backfill here, once
            start_lists = self.lists() - before_start
            marked, lists_at_mark = len(idle), self.lists()
            idle = self.wait_idle(job, marked + idle_triggers)
            lists_per_trigger = (self.lists() - lists_at_mark) / idle_triggers
            seconds = [p["durationMs"]["triggerExecution"] / 1000 for p in idle[marked : marked + idle_triggers]]
            first_row = self.first_row(job, settings, mode, n)
        finally:
            job.request_stop()
            job.run_until_stopped()
        return {
            "objects": n,
            "mode": mode,
            "idle_trigger_s": round(sum(seconds) / len(seconds), 3),
            "idle_trigger_runs_s": [round(s, 3) for s in seconds],
            "lists_per_trigger": round(lists_per_trigger, 1),
            "first_row_s": round(first_row, 2),
            "start_lists": start_lists,
        }

    def world_queue_purge(self) -> None:
        """Messages of the other mode's uploads must not reach this run."""
        import boto3

        sqs = boto3.client("sqs", endpoint_url=self.world.endpoint, region_name=REGION)
        while batch := sqs.receive_message(QueueUrl=self.world.stream_queue_url, MaxNumberOfMessages=10).get(
            "Messages"
        ):
            sqs.delete_message_batch(
                QueueUrl=self.world.stream_queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
            )

    @staticmethod
    def wait_idle(job, count: int, timeout: float = 3600.0) -> list[dict]:
        """Until the query has reported `count` idle triggers (no batch ran); returns them in order."""
        deadline = time.monotonic() + timeout
        while True:
            job.raise_if_failed()
            idle = [
                p
                for p in (json.loads(p.json) for p in job.query.recentProgress)
                if "addBatch" not in p["durationMs"] and "triggerExecution" in p["durationMs"]
            ]
            if len(idle) >= count:
                return idle
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(idle)} idle triggers after {timeout:.0f} s")
            time.sleep(0.05)

    def first_row(self, job, settings, mode: str, n: int, timeout: float = 3600.0) -> float:
        """Seconds from the PUT of one new image to the commit of the batch that holds it."""
        key = f"images/{self.image.parent.name}/bench-{mode}-{n}.jpg"
        before = len(progress(settings))
        put_at = time.time()
        self.s3.put_object(Bucket=self.world.bucket, Key=key, Body=self.image.read_bytes())
        deadline = time.monotonic() + timeout
        while True:
            job.raise_if_failed()
            done = [r for r in progress(settings)[before:] if r["files"] and not r["replayed"]]
            if done:
                self.s3.delete_object(Bucket=self.world.bucket, Key=key)  # the next runs see filler only
                return done[0]["committed_at"] - put_at
            if time.monotonic() > deadline:
                raise RuntimeError(f"{key} not committed after {timeout:.0f} s")
            time.sleep(0.05)


def progress(settings) -> list[dict]:
    log = settings.progress_log
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def report(results: list[dict]) -> str:
    lines = [
        "source cost per trigger, listing vs notifications (1 s trigger, moto S3/SQS)",
        f"{'objects':>8}  {'mode':<13}  {'idle trigger s':>14}  {'LIST/trigger':>12}  {'LIST $/day @2s':>14}  "
        f"{'first row s':>11}  {'first start LIST':>16}",
    ]
    for r in results:
        per_day = r["lists_per_trigger"] * TRIGGERS_PER_DAY_AT_2S * LIST_PRICE_PER_1000 / 1000
        lines.append(
            f"{r['objects']:>8,}  {r['mode']:<13}  {r['idle_trigger_s']:>14.3f}  {r['lists_per_trigger']:>12.1f}  "
            f"{per_day:>14.2f}  {r['first_row_s']:>11.1f}  {r['start_lists']:>16}"
        )
    lines.append("")
    lines.append("listing / notifications, per size:")
    by = {(r["objects"], r["mode"]): r for r in results}
    for n in sorted({r["objects"] for r in results}):
        listing, notified = by.get((n, "listing")), by.get((n, "notifications"))
        if not (listing and notified):
            continue
        lines.append(
            f"{n:>8,}: idle trigger x{listing['idle_trigger_s'] / notified['idle_trigger_s']:.1f}, "
            f"first row x{listing['first_row_s'] / notified['first_row_s']:.1f}, LIST requests "
            f"{listing['lists_per_trigger']:.0f} vs {notified['lists_per_trigger']:.0f} per trigger"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
