"""How one Spark container's memory is split between the JVM heap, its overhead and PySpark's workers.

Left to itself Spark gives the executor JVM all but a 10 % overhead (at least 384 MiB), and
PySpark's workers (ONNX Runtime or TensorFlow, 64-image Arrow batches) live in that overhead:
the container manager kills them under load. Setting `spark.executor.pyspark.memory` gives them
their own share of the container; the settings below always add up to exactly `total_mb`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemorySplit:
    heap_mb: int
    overhead_mb: int
    pyspark_mb: int = 0

    @property
    def total_mb(self) -> int:
        return self.heap_mb + self.overhead_mb + self.pyspark_mb


def executor_split(total_mb: int) -> MemorySplit:
    """A quarter to the Python workers, an eighth (at least 1 GiB) to the JVM's overhead, the rest to its heap."""
    pyspark_mb = total_mb // 4
    overhead_mb = max(1024, total_mb // 8)
    return MemorySplit(total_mb - pyspark_mb - overhead_mb, overhead_mb, pyspark_mb)


def driver_split(total_mb: int) -> MemorySplit:
    """The driver runs no featurizer (the fit's ONNX export, the stream's commits): a quarter (>= 1 GiB) of overhead."""
    overhead_mb = max(1024, total_mb // 4)
    return MemorySplit(total_mb - overhead_mb, overhead_mb)


def executor_conf(cores: int, split: MemorySplit) -> dict[str, str]:
    return {
        "spark.executor.cores": str(cores),
        "spark.executor.memory": f"{split.heap_mb}m",
        "spark.executor.memoryOverhead": f"{split.overhead_mb}m",
        "spark.executor.pyspark.memory": f"{split.pyspark_mb}m",
    }


def driver_conf(cores: int, split: MemorySplit) -> dict[str, str]:
    return {
        "spark.driver.cores": str(cores),
        "spark.driver.memory": f"{split.heap_mb}m",
        "spark.driver.memoryOverhead": f"{split.overhead_mb}m",
    }


# ============================================================================ EMR on EC2 nodes
# yarn.nodemanager.resource.memory-mb by instance type: the EMR release guide's "Task
# configuration" table (7.x/6.x; emr-spark-8.x is assumed the same until checked on a node with
# `yarn node -list -showDetails`). Only types read from that table are here; for any other type
# the executors must be sized with --conf (docs/emr.md, "Sizing the executors").
YARN_NODE_MEMORY_MB = {"m5.xlarge": 12288}
# The client-mode application master (Spark's ExecutorLauncher) needs a container on a core node
# too: spark.yarn.am.memory + its overhead, rounded up. Every executor leaves that much free, so
# the AM fits on whichever core node YARN picks.
AM_MEMORY_MB = 512
AM_OVERHEAD_MB = 384
AM_ROOM_MB = 1024
# The driver runs in client mode on the primary (16 GiB on an m5.xlarge): its JVM heap.
DRIVER_MEMORY_MB = 6144
# The settings a person must give with --conf when the instance type's YARN memory is unknown.
EXECUTOR_MEMORY_KEYS = ("spark.executor.memory", "spark.executor.pyspark.memory")


def emr_executor_split(instance_type: str) -> MemorySplit | None:
    """One executor per node, filling the node's YARN memory but for room for the AM; None if unknown."""
    node_mb = YARN_NODE_MEMORY_MB.get(instance_type)
    return None if node_mb is None else executor_split(node_mb - AM_ROOM_MB)
