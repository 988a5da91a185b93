"""Forged notifications for as long as asked: tests/forged_notifications.py's generator, seed after seed.

Each round generates --bodies forged SQS bodies (mutations of real Lambda, S3 and SNS bodies) and
  1. parses every one with fruits.notifications.parse_body: its outcome must be the one it was
     built for (malformed, ignored, a test event, or the announcement of one key and ETag);
  2. unless --parser-only, sends them between a few real uploads' announcements to an SQS queue
     on a moto server and runs the notification feed and the executors' reads on them (no Spark):
     nothing may raise, every real upload must be read exactly once, with its bytes.
A body that breaks a rule is a finding: listed in the --json summary and appended to
bench/out/forged-findings.jsonl (add it to tests/fruits/test_notification_messages.py once fixed).

The parser's cost is printed against json.loads of the same bodies, measured in the same run.

    python bench/fuzz_notifications.py --minutes 10 [--seed 0] [--bodies 300] [--parser-only] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

from common import OUT, ROOT, machine, save

sys.path.insert(0, str(ROOT / "tests"))

from demo.emulated_aws import patched_env
from forged_notifications import ANNOUNCES, IGNORED, MALFORMED, Forged, Forger, Real
from fruits.notifications import (
    Location,
    NotificationFeed,
    parse_body,
    plan_partitions,
    read_uploads,
    reader_config,
)
from fruits.settings import Settings

BUCKET, PREFIX, REGION = "fruits-fuzz", "images/", "eu-west-3"
# The moto server's account, never a real one.
FAKE_ACCOUNT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": None,
    "AWS_PROFILE": None,
}


def outcome_of(forged: Forged, location: Location) -> tuple[str, str | None]:
    """(the body's outcome, what is wrong with it or None)."""
    try:
        parsed = parse_body(forged.body, location)
    except BaseException as exc:  # parse_body must never raise: that is a finding
        return "raised", f"{type(exc).__name__}: {exc}"
    outcome = (
        MALFORMED
        if parsed.malformed
        else IGNORED
        if parsed.ignored
        else "test_event"
        if parsed.test_event
        else ANNOUNCES
    )
    announced = [(u.key, u.etag) for u in parsed.uploads]
    expected = [forged.announces] if forged.expect == ANNOUNCES else []
    if outcome != forged.expect or announced != expected:
        return outcome, f"expected {forged.expect} {expected}, got {outcome} {announced} ({parsed.malformed})"
    return outcome, None


class Queue:
    """A moto server with a bucket and a queue, and a drain-mode feed reading them round after round."""

    def __init__(self, checkpoint: str):
        import boto3
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        self.s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
        self.sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION)
        self.s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        self.url = self.sqs.create_queue(QueueName=BUCKET, Attributes={"VisibilityTimeout": "900"})["QueueUrl"]
        settings = Settings.load(
            notifications=self.url,
            source=f"s3://{BUCKET}/{PREFIX}",
            checkpoint=checkpoint,
            s3_endpoint_url=endpoint,
            max_image_bytes=20_000,
        )
        self.config = reader_config(settings, drain=True, partitions=2, log_level="ERROR")
        self.feed = NotificationFeed(self.config)

    def upload(self, reals: dict[str, bytes]) -> list[Real]:
        return [
            Real(key, self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"].strip('"'), len(body))
            for key, body in reals.items()
        ]

    def round(self, forger: Forger, forged: list[Forged], reals: dict[str, bytes]) -> str | None:
        """The real uploads' announcements and the forged bodies through the queue, the feed and the
        reads: what went wrong, or None."""
        messages = [forger.rng.choice(forger.real_bodies(real)) for real in forger.reals] + [f.body for f in forged]
        forger.rng.shuffle(messages)
        for body in messages:
            self.sqs.send_message(QueueUrl=self.url, MessageBody=body)
        before = self.feed.ledger.last_batch
        try:
            end = self.feed.latest()["batch"]
            rows = [
                row
                for part in plan_partitions(self.config, {"batch": before}, {"batch": end})
                for row in read_uploads(self.config, part)
            ]
            self.feed.commit(end)
        except Exception as exc:
            return f"the feed or a read raised {type(exc).__name__}: {exc}"
        read = Counter(path for path, _, _, content in rows if content is not None)
        wanted = Counter(f"s3://{BUCKET}/{key}" for key in reals)
        if read != wanted:
            return f"read {dict(read - wanted)} more and {dict(wanted - read)} fewer than the real uploads"
        contents = {path: content for path, _, _, content in rows if content is not None}
        if any(contents[f"s3://{BUCKET}/{key}"] != body for key, body in reals.items()):
            return "a real upload was read with other bytes"
        return None

    def close(self) -> None:
        self.server.stop()


@dataclass
class Tally:
    outcomes: Counter = field(default_factory=Counter)
    families: Counter = field(default_factory=Counter)
    findings: list[dict] = field(default_factory=list)
    parse_s: float = 0.0
    loads_s: float = 0.0
    legit_parse_s: float = 0.0  # the real bodies the mutations start from: what a queue mostly holds
    legit_loads_s: float = 0.0
    legit_bodies: int = 0
    rounds: int = 0
    queue_rounds: int = 0


def fuzz(minutes: float, first_seed: int, bodies: int, queue: Queue | None) -> Tally:
    location, tally = Location.parse(f"s3://{BUCKET}/{PREFIX}"), Tally()
    deadline = time.monotonic() + minutes * 60
    while time.monotonic() < deadline:
        seed = first_seed + tally.rounds
        reals = {f"{PREFIX}Real/r{seed}-{n}.jpg": f"real {seed} {n}".encode() for n in range(3)}
        uploaded = queue.upload(reals) if queue else [Real(k, f"{seed:032x}", len(b)) for k, b in reals.items()]
        forger = Forger(seed, BUCKET, PREFIX, uploaded)
        forged = forger.bodies(bodies)
        started = time.perf_counter()
        for f in forged:
            outcome, problem = outcome_of(f, location)
            tally.outcomes[outcome] += 1
            tally.families[f.family] += 1
            if problem:
                tally.findings.append({"seed": seed, "mutation": f.mutation, "problem": problem, "body": f.body[:2000]})
        tally.parse_s += time.perf_counter() - started
        started = time.perf_counter()
        for f in forged:  # the baseline: JSON alone, no checks
            with contextlib.suppress(ValueError, RecursionError):
                json.loads(f.body)
        tally.loads_s += time.perf_counter() - started
        legitimate = [body for real in forger.reals for body in forger.real_bodies(real)] * 20
        started = time.perf_counter()
        for body in legitimate:
            parse_body(body, location)
        tally.legit_parse_s += time.perf_counter() - started
        started = time.perf_counter()
        for body in legitimate:
            json.loads(body)
        tally.legit_loads_s += time.perf_counter() - started
        tally.legit_bodies += len(legitimate)
        if queue is not None:
            problem = queue.round(forger, forged, reals)
            tally.queue_rounds += 1
            if problem:
                tally.findings.append({"seed": seed, "mutation": "queue round", "problem": problem})
        tally.rounds += 1
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="the first round's seed (then +1 a round)")
    parser.add_argument("--bodies", type=int, default=300, help="forged bodies a round")
    parser.add_argument("--parser-only", action="store_true", help="skip the queue, the feed and the reads")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log
    logging.getLogger("fruits.notifications").setLevel(logging.ERROR)  # a warning per malformed body: the point here

    if args.parser_only:
        tally = fuzz(args.minutes, args.seed, args.bodies, None)
    else:
        with patched_env(FAKE_ACCOUNT):
            queue = Queue(tempfile.mkdtemp(prefix="fuzz-notifications-"))
            try:
                tally = fuzz(args.minutes, args.seed, args.bodies, queue)
            finally:
                queue.close()

    tried = sum(tally.outcomes.values())
    summary = {
        "machine": machine(),
        "minutes": args.minutes,
        "first_seed": args.seed,
        "rounds": tally.rounds,
        "queue_rounds": tally.queue_rounds,
        "bodies": tried,
        "outcomes": dict(tally.outcomes),
        "families": dict(tally.families),
        "findings": len(tally.findings),
        "parser_bodies_per_s": round(tried / tally.parse_s) if tally.parse_s else None,
        "parser_cost_vs_json_loads": round(tally.parse_s / tally.loads_s, 2) if tally.loads_s else None,
        "legitimate_bodies_per_s": round(tally.legit_bodies / tally.legit_parse_s) if tally.legit_parse_s else None,
        "legitimate_cost_vs_json_loads": round(tally.legit_parse_s / tally.legit_loads_s, 2)
        if tally.legit_loads_s
        else None,
    }
    if tally.findings:
        OUT.mkdir(parents=True, exist_ok=True)
        with (OUT / "forged-findings.jsonl").open("a") as fh:
            for finding in tally.findings:
                fh.write(json.dumps(finding) + "\n")
    save("fuzz_notifications", {**summary, "first_findings": tally.findings[:20]})
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"forged notifications: {tried:,} bodies in {tally.rounds} rounds ({tally.queue_rounds} through the "
            f"queue, the feed and the reads), {len(tally.findings)} findings"
        )
        print(f"outcomes: {dict(tally.outcomes)}")
        print(
            f"parser: {summary['parser_bodies_per_s']:,} forged bodies/s, {summary['parser_cost_vs_json_loads']}x "
            f"json.loads of the same bodies; {summary['legitimate_bodies_per_s']:,} legitimate bodies/s, "
            f"{summary['legitimate_cost_vs_json_loads']}x json.loads"
        )
    return 1 if tally.findings else 0


if __name__ == "__main__":
    sys.exit(main())
