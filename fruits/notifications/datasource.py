"""The Spark adapter: the feed and the reads behind Spark 4.1's Python streaming data source API.

Spark runs the reader's driver side in a Python process of its own (pyspark's streaming source
runner) and ends it with SIGTERM (`Process.destroy`) when the query stops. By default that signal
ends the process before the runner's `finally` calls `stop()`; the reader turns the first one into
SystemExit instead, so `stop()` runs and deletes the messages of the batch Spark committed last
(without that they come back at the next start and are recognised). Signals that arrive while
`stop()` runs are ignored. Only in that runner process: nowhere else is a handler installed.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Iterator
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition

from fruits.notifications.config import ReaderConfig
from fruits.notifications.feed import NotificationFeed
from fruits.notifications.reads import plan_partitions, read_uploads
from fruits.source import BINARY_FILE_SCHEMA

log = logging.getLogger("fruits.notifications")

SOURCE_NAME = "fruits-notifications"
SPARK_SOURCE_RUNNER = "pyspark.sql.streaming.python_streaming_source_runner"


class NotificationReader(DataSourceStreamReader):
    def __init__(self, config: ReaderConfig):
        self.config = config
        self._feed: NotificationFeed | None = None
        self._stopping = False

    @property
    def feed(self) -> NotificationFeed:
        if self._feed is None:
            configure_logging(self.config.log_level)
            self._feed = NotificationFeed(self.config)
            if getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", None) == SPARK_SOURCE_RUNNER:
                signal.signal(signal.SIGTERM, self._on_sigterm)
        return self._feed

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if not self._stopping:  # the first one: unwind to the runner's `finally`, which calls stop()
            self._stopping = True
            raise SystemExit(128 + signum)

    def initialOffset(self) -> dict:
        return {"batch": 0}

    def latestOffset(self) -> dict:
        return self.feed.latest()

    def partitions(self, start: dict, end: dict) -> list[InputPartition]:
        return plan_partitions(self.config, start, end)

    def read(self, partition: InputPartition) -> Iterator[tuple]:
        return read_uploads(self.config, partition)

    def commit(self, end: dict) -> None:
        self.feed.commit(int(end["batch"]))

    def stop(self) -> None:
        self._stopping = True
        if self._feed is not None:
            self._feed.close()


class NotificationSource(DataSource):
    """`spark.readStream.format("fruits-notifications").options(**ReaderConfig(...).options()).load()`"""

    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> str:
        return BINARY_FILE_SCHEMA

    def streamReader(self, schema: Any) -> DataSourceStreamReader:
        return NotificationReader(ReaderConfig.from_options(self.options))


def read_stream(spark: SparkSession, config: ReaderConfig) -> DataFrame:
    """The notification source as a streaming DataFrame with the binaryFile columns."""
    spark.dataSource.register(NotificationSource)
    return spark.readStream.format(SOURCE_NAME).options(**config.options()).load()


def configure_logging(level: str) -> None:
    """The reader's own process (Spark starts it) logs to stderr like the job, if nothing else set it up."""
    if not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s", "%H:%M:%S"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.WARNING)
    log.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
