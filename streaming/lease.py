"""One stream per checkpoint: a lease file with a heartbeat, under the checkpoint.

Started twice on the same checkpoint and tables by mistake, the second stream would redo the
first one's batches; the tables would refuse its commits (fruits.sinks), but only after it had
featurized them. The lease makes the mistake plain at start: a stream whose checkpoint is held
by another one with a fresh heartbeat stops with a one-line error naming it.

A stream that died without releasing the lease (SIGKILL, a lost node) leaves it to go stale: a
restart on the same host takes it over at once when the holder's process is gone; elsewhere (a
YARN retry on another node) it waits until the heartbeat is STALE_S old, then takes it over.
Storage is any URI Spark reads (file://, s3a://, s3://) through Hadoop's FileSystem.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from pyspark.sql import SparkSession

from fruits.exceptions import FruitsError, one_line
from fruits.spark import hadoop_fs, storage_errors

log = logging.getLogger("fruits.stream")

LEASE_FILE = "_lease"
HEARTBEAT_S = 10.0
FRESH_S = 2.5 * HEARTBEAT_S  # a holder this recent is alive: refuse at once
STALE_S = 6 * HEARTBEAT_S  # a holder this silent is gone: take over


class CheckpointLease:
    def __init__(self, spark: SparkSession, checkpoint: str):
        self.spark = spark
        self.uri = f"{checkpoint.rstrip('/')}/{LEASE_FILE}"
        self.me = {"owner": str(uuid.uuid4()), "host": socket.gethostname(), "pid": os.getpid()}
        self.lost = threading.Event()  # set if another stream took the lease over (we looked dead)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ acquire / release
    def acquire(self, wait_s: float = STALE_S + HEARTBEAT_S) -> None:
        deadline = time.monotonic() + wait_s
        waiting_logged = False
        while True:
            holder = self._read()
            age = time.time() - holder["heartbeat"] if holder else None
            if holder is None or age > STALE_S or self._dead_here(holder):
                self._write()
                if self._read_owner() == self.me["owner"]:  # nobody wrote over us meanwhile
                    break
                continue
            if age < FRESH_S or time.monotonic() > deadline:
                raise FruitsError(
                    f"another stream holds checkpoint {self.uri.rsplit('/', 1)[0]} (host {holder['host']}, pid "
                    f"{holder['pid']}, heartbeat {age:.0f} s ago): stop it first; the same checkpoint and "
                    "tables cannot take two streams"
                )
            if not waiting_logged:
                log.info(
                    "checkpoint lease held by host %s pid %s (silent for %.0f s): waiting until it is stale",
                    holder["host"],
                    holder["pid"],
                    age,
                )
                waiting_logged = True
            time.sleep(2.0)
        self._thread = threading.Thread(target=self._heartbeat, name="checkpoint-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            if self._read_owner() == self.me["owner"]:
                fs, path = hadoop_fs(self.spark, self.uri)
                fs.delete(path, False)
        except Exception as exc:  # it goes stale by itself
            log.warning("could not release the checkpoint lease %s: %s", self.uri, one_line(exc))

    # ------------------------------------------------------------------ internals
    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                if self._read_owner() not in (None, self.me["owner"]):
                    log.error("another stream took over checkpoint lease %s: stopping", self.uri)
                    self.lost.set()
                    return
                self._write()
            except Exception as exc:  # a storage hiccup: the next beat tries again
                log.warning("checkpoint lease heartbeat failed: %s", one_line(exc))

    def _dead_here(self, holder: dict[str, Any]) -> bool:
        if holder.get("host") != self.me["host"] or not isinstance(holder.get("pid"), int):
            return False
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _read_owner(self) -> str | None:
        holder = self._read()
        return holder["owner"] if holder else None

    def _read(self) -> dict[str, Any] | None:
        with storage_errors(self.uri, "read"):
            fs, path = hadoop_fs(self.spark, self.uri)
            if not fs.exists(path):
                return None
            stream = fs.open(path)
            try:
                raw = bytes(self.spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
            finally:
                stream.close()
        try:
            return json.loads(raw.decode())
        except ValueError:  # a torn write: treat as stale
            return None

    def _write(self) -> None:
        with storage_errors(self.uri, "write"):
            fs, path = hadoop_fs(self.spark, self.uri)
            stream = fs.create(path, True)
            try:
                stream.write(bytearray(json.dumps({**self.me, "heartbeat": time.time()}).encode()))
            finally:
                stream.close()
