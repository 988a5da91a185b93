"""A progress bar for long Spark actions, fed by Spark's status tracker (tasks done / tasks total)."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@contextlib.contextmanager
def spark_progress(spark: SparkSession, description: str, enabled: bool = True) -> Iterator[None]:
    """Show the tasks of the Spark jobs started inside the block as one tqdm bar on stderr."""
    if not enabled:
        yield
        return
    from tqdm import tqdm

    context = spark.sparkContext
    group = f"fruits-{uuid.uuid4().hex[:8]}"
    context.setJobGroup(group, description)
    stop = threading.Event()
    bar = tqdm(total=0, desc=description, unit="task", leave=False, disable=None)

    def totals() -> tuple[int, int]:
        tracker = context.statusTracker()
        done = total = 0
        for job_id in tracker.getJobIdsForGroup(group):
            job = tracker.getJobInfo(job_id)
            for stage_id in job.stageIds if job else ():
                stage = tracker.getStageInfo(stage_id)
                if stage:
                    done += stage.numCompletedTasks
                    total += stage.numTasks
        return done, total

    def poll() -> None:
        while not stop.wait(0.5):
            done, total = totals()
            bar.total = total
            bar.n = done
            bar.refresh()

    thread = threading.Thread(target=poll, name="spark-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()
        context.setLocalProperty("spark.jobGroup.id", None)
        context.setLocalProperty("spark.job.description", None)
