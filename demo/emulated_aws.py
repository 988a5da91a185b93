"""Emulated AWS on 127.0.0.1 for the demo: moto (S3, SNS, SQS), a real `mlflow server`, the Lambda's trigger.

moto cannot run a Lambda (that needs Docker), so S3's ObjectCreated events are delivered to an
SQS queue and `EventPollers` call lambda/handler.py `handler(event, None)` for each, exactly as
the Lambda runtime would; a second consumer counts the SNS notifications the handler publishes.
Everything started here is stopped by the context manager, also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import boto3
from moto.server import ThreadedMotoServer

from fruits.exceptions import FruitsError, one_line
from fruits.source import IMAGE_EXTENSIONS

log = logging.getLogger("fruits.demo")

IMAGES_PREFIX = "images/"
LAMBDA_HANDLER = Path(__file__).resolve().parents[1] / "lambda" / "handler.py"
LAMBDA_NOTE = (
    "moto cannot run Lambdas: a local poller receives the S3 events from SQS and calls "
    "lambda/handler.py handler(event, None), as the Lambda runtime would"
)
SERVER_READY_TIMEOUT_S = 180.0  # ~5-10 s idle; a loaded 2-core machine needs more


@dataclass
class EmulatedAws:
    """The emulated account: moto (S3, SNS, SQS) and an mlflow server, on 127.0.0.1."""

    run_dir: Path
    region: str
    endpoint: str  # moto
    bucket: str
    topic_arn: str
    events_queue_url: str  # S3 ObjectCreated -> here: what triggers the Lambda
    notifications_queue_url: str  # subscribed to the topic: what the Lambda announces (the demo counts them)
    stream_queue_url: str  # subscribed to the topic too: what the stream consumes (with a dead-letter queue)
    mlflow: MlflowServer | None = None  # None: the AWS side alone (tests, benchmarks)


@contextlib.contextmanager
def emulated_aws(run_dir: Path, region: str) -> Iterator[EmulatedAws]:
    """Start moto and the mlflow server, wire S3 -> SQS and SNS -> SQS; stop all of it on the way out.

    The environment holds fake credentials and the moto endpoint meanwhile, so nothing here
    can reach a real AWS account; the Lambda handler finds its topic through TOPIC_ARN.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    suffix = uuid.uuid4().hex[:8]  # moto state is per process: unique names never collide
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            patched_env(
                {
                    "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_SESSION_TOKEN": None,
                    "AWS_PROFILE": None,
                    "AWS_REGION": region,
                    "AWS_DEFAULT_REGION": region,
                }
            )
        )
        endpoint = start_moto(stack)
        bucket = f"fruits-demo-{suffix}"
        create_bucket(endpoint, region, bucket)
        mlflow = MlflowServer(
            run_dir, artifacts_destination=f"s3://{bucket}/mlflow/", s3_endpoint=endpoint, region=region
        )
        stack.callback(mlflow.stop)
        mlflow.start()  # boots while the wiring and Spark start; wait_ready() before the fit
        world = stack.enter_context(wired_bucket(run_dir, region, endpoint, bucket, suffix))
        world.mlflow = mlflow
        log.info(
            "emulated AWS on %s: bucket %s, topic %s, mlflow server %s", endpoint, bucket, world.topic_arn, mlflow.url
        )
        yield world


@contextlib.contextmanager
def wired_bucket(
    run_dir: Path, region: str, endpoint: str, bucket: str, suffix: str, stream_visibility_s: int = 30
) -> Iterator[EmulatedAws]:
    """The event path on an existing bucket of a moto server (wire_notifications), with the environment
    the Lambda handler reads (its topic, the images prefix, the moto endpoint) set for the block."""
    topic_arn, events_url, notifications_url, stream_url = wire_notifications(
        endpoint, region, bucket, suffix, stream_visibility_s
    )
    with patched_env({"AWS_ENDPOINT_URL": endpoint, "TOPIC_ARN": topic_arn, "IMAGES_PREFIX": IMAGES_PREFIX}):
        yield EmulatedAws(run_dir, region, endpoint, bucket, topic_arn, events_url, notifications_url, stream_url)


@contextlib.contextmanager
def patched_env(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (None: unset) environment variables for the block, then restore them exactly."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        _set_env(values)
        yield
    finally:
        _set_env(saved)


def _set_env(values: Mapping[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


class CountingMotoServer(ThreadedMotoServer):
    """A moto server on 127.0.0.1 that counts the requests it serves: ('s3', 'LIST'), ('sqs', 'ReceiveMessage')...

    What benchmarks and tests need to say how many S3 LIST requests something made, whoever made
    them (boto3 in Python, or S3A in Spark's JVM). `counts()` is a snapshot.
    """

    def __init__(self) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self._counts: Counter[tuple[str, str]] = Counter()
        self._object_gets: Counter[str] = Counter()  # "/bucket/key" -> GET requests
        self._lock = threading.Lock()

    def _server_entry(self) -> None:
        from moto.moto_server import threaded_moto_server as threaded
        from werkzeug.serving import make_server

        app = threaded.DomainDispatcherApplication(threaded.create_backend_app)

        def counting(environ: dict[str, Any], start_response: Any) -> Any:
            kind = request_kind(environ)
            with self._lock:
                self._counts[kind] += 1
                if kind == ("s3", "GET"):
                    self._object_gets[environ.get("PATH_INFO", "")] += 1
            return app(environ, start_response)

        self._server = make_server(
            self._ip_address, self._port, counting, True, request_handler=threaded.MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def endpoint(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def counts(self) -> Counter[tuple[str, str]]:
        with self._lock:
            return Counter(self._counts)

    def object_gets(self) -> Counter[str]:
        with self._lock:
            return Counter(self._object_gets)


def request_kind(environ: Mapping[str, Any]) -> tuple[str, str]:
    """(service, operation) of a request to moto, from its signature's scope and its shape.

    S3 (path-style): a GET on the bucket alone is a LIST (ListObjects v1/v2); other operations are
    named by method, with the object key or not (HEAD, GET, PUT...). Other services: the JSON
    protocol's X-Amz-Target, else the query's Action.
    """
    match = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
    service = match[1] if match else "unsigned"
    method = environ.get("REQUEST_METHOD", "")
    if service == "s3":
        parts = [p for p in environ.get("PATH_INFO", "").split("/") if p]
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        subresources = set(query) - {
            "list-type",
            "prefix",
            "delimiter",
            "max-keys",
            "continuation-token",
            "start-after",
            "marker",
            "encoding-type",
            "fetch-owner",
        }
        if method == "GET" and len(parts) == 1 and not subresources:
            return service, "LIST"
        return service, method if len(parts) > 1 else f"{method} bucket"
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return service, target.rsplit(".", 1)[-1]
    return service, parse_qs(environ.get("QUERY_STRING", "")).get("Action", [method])[0]


def start_moto(stack: contextlib.ExitStack) -> str:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    stack.callback(server.stop)
    host, port = server.get_host_and_port()
    return f"http://{host}:{port}"


def aws_client(service: str, endpoint: str, region: str) -> Any:
    return boto3.session.Session().client(service, endpoint_url=endpoint, region_name=region)


def create_bucket(endpoint: str, region: str, bucket: str) -> None:
    s3 = aws_client("s3", endpoint, region)
    location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=bucket, **location)


def wire_notifications(
    endpoint: str, region: str, bucket: str, suffix: str, stream_visibility_s: int = 30
) -> tuple[str, str, str, str]:
    """S3 ObjectCreated on images/ -> SQS (the Lambda trigger, polled locally), and SNS -> two SQS queues:
    a subscriber the demo counts with, and the stream's queue (with a dead-letter queue, as in infra/).

    One rule per image suffix, as in infra/template.yaml: S3 allows one prefix and one suffix
    per rule. moto does not enforce queue policies, so none are set.
    Returns (topic ARN, events queue URL, subscriber queue URL, stream queue URL).
    """
    sqs, sns, s3 = (aws_client(s, endpoint, region) for s in ("sqs", "sns", "s3"))

    def queue(name: str, visibility_s: int = 5, **attributes: str) -> tuple[str, str]:
        # A short visibility timeout: a failed handler call is retried within seconds.
        url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility_s), **attributes})[
            "QueueUrl"
        ]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return url, arn

    events_url, events_arn = queue(f"fruits-s3-events-{suffix}")
    notifications_url, notifications_arn = queue(f"fruits-uploaded-subscriber-{suffix}")
    _, dead_letters_arn = queue(f"fruits-uploaded-stream-dlq-{suffix}")
    redrive = json.dumps({"deadLetterTargetArn": dead_letters_arn, "maxReceiveCount": 5})
    stream_url, stream_arn = queue(f"fruits-uploaded-stream-{suffix}", stream_visibility_s, RedrivePolicy=redrive)
    topic_arn = sns.create_topic(Name=f"fruits-image-uploaded-{suffix}")["TopicArn"]
    for arn in (notifications_arn, stream_arn):
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    rules = [
        {
            "Id": f"fruits-images-{ext}",
            "QueueArn": events_arn,
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {
                "Key": {
                    "FilterRules": [{"Name": "prefix", "Value": IMAGES_PREFIX}, {"Name": "suffix", "Value": f".{ext}"}]
                }
            },
        }
        for ext in IMAGE_EXTENSIONS
    ]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": rules})
    return topic_arn, events_url, notifications_url, stream_url


class MlflowServer:
    """A real `mlflow server` subprocess: sqlite in the run dir, artifacts proxied to the emulated bucket."""

    def __init__(self, run_dir: Path, *, artifacts_destination: str, s3_endpoint: str, region: str):
        self.run_dir = run_dir
        self.artifacts_destination = artifacts_destination
        self.s3_endpoint = s3_endpoint
        self.region = region
        self.log_path = run_dir / "mlflow-server.log"
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._started_at = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        self._started_at = time.monotonic()
        env = dict(
            os.environ,
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",  # else ~10 processes and 2.4 GB for features we do not use
            MLFLOW_S3_ENDPOINT_URL=self.s3_endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION=self.region,
        )
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.run_dir / 'mlflow.db'}",
            "--artifacts-destination",
            self.artifacts_destination,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        with open(self.log_path, "ab") as out:
            # Its own process group: Ctrl-C in the terminal does not kill it half-way, and stop()
            # ends the server and its uvicorn worker together.
            self.process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        log.info("mlflow server starting on %s (log %s)", self.url, self.log_path)

    def wait_ready(self, timeout: float = SERVER_READY_TIMEOUT_S) -> None:
        """Until GET /health answers; a clear one-line error if it exits or never answers."""
        assert self.process is not None, "start() first"
        t0 = time.monotonic()
        while True:
            code = self.process.poll()
            if code is not None:
                raise FruitsError(
                    f"mlflow server exited with code {code} before it was ready: "
                    f"{self._last_log_line()} (log: {self.log_path})"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        log.info(
                            "mlflow server ready at %s, %.1f s after its start",
                            self.url,
                            time.monotonic() - self._started_at,
                        )
                        return
            except OSError:
                pass
            if time.monotonic() - t0 > timeout:
                raise FruitsError(
                    f"mlflow server did not answer {self.url}/health within {timeout:.0f} s (log: {self.log_path})"
                )
            time.sleep(0.5)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the whole process group; then SIGKILL whatever is left (a hung leader, a lingering worker)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("mlflow server did not stop within %.0f s: killing it", timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout)
        log.info("mlflow server stopped")

    def _last_log_line(self) -> str:
        try:
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "no log"
        return lines[-1][:300] if lines else "empty log"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load_lambda_handler() -> Any:
    """lambda/handler.py from the source checkout (`lambda` is a keyword: it cannot be imported as a package)."""
    path = LAMBDA_HANDLER
    if not path.is_file():
        raise FruitsError(f"{path} not found: --aws-emulated runs from a source checkout (pip install -e .)")
    spec = importlib.util.spec_from_file_location("fruits_demo_upload_lambda", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not log.isEnabledFor(logging.DEBUG):  # two INFO lines per upload would bury the demo's own (-vv shows them)
        module.log.setLevel(logging.WARNING)
    return module


@dataclass
class _Counts:
    s3_events: int = 0
    lambda_invocations: int = 0
    lambda_failures: int = 0
    published: int = 0
    skipped: int = 0
    received: int = 0
    unique: int = 0
    duplicates: int = 0
    keys: set[str] = field(default_factory=set)


class EventPollers:
    """Two threads standing in for what AWS runs: the Lambda trigger, and a subscriber of the topic.

    - lambda: S3 events from the events queue -> handler(event, None); the message is deleted
      only after the handler succeeded (else SQS redelivers it, like a Lambda retry).
    - subscriber: SNS envelopes from the subscribed queue, counted once per dedup_key
      (delivery is at-least-once end to end).
    """

    def __init__(self, world: EmulatedAws):
        self.world = world
        self.handler = load_lambda_handler()
        self._sqs = aws_client("sqs", world.endpoint, world.region)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counts = _Counts()
        self._threads = [
            threading.Thread(
                target=self._loop, args=(world.events_queue_url, self._invoke), name="demo-lambda", daemon=True
            ),
            threading.Thread(
                target=self._loop,
                args=(world.notifications_queue_url, self._count),
                name="demo-subscriber",
                daemon=True,
            ),
        ]

    def __enter__(self) -> EventPollers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.handler.sns_client.cache_clear()  # its client points at this run's moto

    def _loop(self, queue_url: str, consume: Any) -> None:
        while not self._stop.is_set():
            try:
                messages = self._sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                    "Messages", []
                )
            except Exception as exc:
                log.warning("cannot poll %s: %s", queue_url.rsplit("/", 1)[-1], one_line(exc))
                self._stop.wait(1.0)
                continue
            for message in messages:
                try:
                    if consume(message):
                        self._sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                except Exception as exc:  # never let the thread die: the summary would undercount silently
                    log.warning("cannot delete a message from %s: %s", queue_url.rsplit("/", 1)[-1], one_line(exc))

    def _invoke(self, message: dict[str, Any]) -> bool:
        try:
            result = self.handler.handler(json.loads(message["Body"]), None)
        except Exception as exc:
            with self._lock:
                self._counts.lambda_failures += 1
            log.warning("Lambda handler failed (SQS redelivers the event): %s", one_line(exc))
            return False
        with self._lock:
            c = self._counts
            c.lambda_invocations += 1
            c.published += result["published"]
            c.skipped += result["skipped"]
            c.s3_events += result["published"] + result["skipped"] + result["malformed"]
        return True

    def _count(self, message: dict[str, Any]) -> bool:
        try:
            key = json.loads(json.loads(message["Body"])["Message"])["dedup_key"]
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("unexpected message on the topic: %s", one_line(exc))
            return True
        with self._lock:
            c = self._counts
            c.received += 1
            if key in c.keys:
                c.duplicates += 1
            else:
                c.keys.add(key)
                c.unique += 1
        return True

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in dataclasses.asdict(self._counts).items() if k != "keys"}

    def wait_for(self, expected: int, timeout: float) -> bool:
        """Until `expected` distinct notifications arrived (S3 events are usually seconds behind the upload)."""
        deadline = time.monotonic() + timeout
        while self.counts()["unique"] < expected:
            if time.monotonic() > deadline:
                log.warning("only %d of %d notifications after %.0f s", self.counts()["unique"], expected, timeout)
                return False
            time.sleep(0.2)
        log.info("%d notifications for %d uploads", self.counts()["unique"], expected)
        return True
