"""A real Spark standalone cluster on 127.0.0.1: one master and N workers from the installed pyspark.

Each worker starts its executors in JVMs of their own, with Python workers of their own, so
what only works when the driver and the executors share one process (an environment
variable, a module-level cache, a file the driver wrote under its own cwd) fails here as it
would on a real cluster. The workers run in an environment of their own: nothing of the
caller's (no FRUITS_*, AWS_*, MLFLOW_*, KERAS_HOME, PYTHONPATH, PYSPARK_PYTHON; PATH without
the venv), another HOME, cwd, TMPDIR and time zone. Whatever the executors need must travel
through Spark: its conf (`spark.executorEnv.*`), broadcasts, the job's arguments.

Used by tests/cluster (the jobs against this cluster and against local[*]) and bench/scale.py
(throughput per executor core, 1 then 2 workers). Each daemon is its own process group,
stopped with SIGTERM then SIGKILL on the way out, whatever happened in the block.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).resolve().parent
# The executors' world: a time zone far from UTC and from the driver's (a timestamp computed with
# the process's local zone on an executor would move by 14 h), a plain C locale, no venv on PATH.
EXECUTOR_TZ = "Pacific/Kiritimati"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READY_TIMEOUT_S = 180.0  # a JVM starts in ~3 s here; a loaded 2-core machine needs more
_MASTER_URL = re.compile(r"Starting Spark master at (spark://[\d.]+:\d+)")
_MASTER_UI = re.compile(r"MasterWebUI.* started at http://[^:\s]+:(\d+)")


@dataclass
class StandaloneCluster:
    """A running master and its workers. `master_url` is what `--spark-master` takes."""

    root: Path
    master_url: str = ""
    web_url: str = ""
    processes: list[subprocess.Popen] = field(default_factory=list)

    def state(self) -> dict:
        """The master's JSON status: workers (alive, cores, memory), running and completed applications."""
        with urllib.request.urlopen(f"{self.web_url}/json/", timeout=10) as response:
            return json.load(response)

    def alive_workers(self) -> int:
        return sum(1 for w in self.state().get("workers", []) if w.get("state") == "ALIVE")

    def processes_left(self) -> list[str]:
        """Every live process the cluster started (daemons, executor JVMs, Python workers): those of the daemons'
        process groups, and any other whose working directory is under the cluster's root. As `ps` lines."""
        groups = {p.pid for p in self.processes}
        return _processes(lambda pid, cwd: os.getpgid(pid) in groups or cwd.is_relative_to(self.root))

    def processes_of(self, app_id: str) -> list[str]:
        """The live executors of an application and their Python workers (they run in its work directories)."""
        return _processes(lambda _pid, cwd: cwd.is_relative_to(self.root) and app_id in cwd.parts)


def _processes(selected: Callable[[int, Path], bool]) -> list[str]:
    """`pid command` of the live processes `selected(pid, cwd)` picks."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):  # gone meanwhile
            if selected(int(entry.name), Path(os.readlink(entry / "cwd"))):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name} {command[:200]}")
    return found


def worker_environment(root: Path, name: str) -> dict[str, str]:
    """The environment a worker (and so its executors and their Python workers) starts with: nothing
    inherited but JAVA_HOME; its own HOME, TMPDIR, local dirs and time zone."""
    home, tmp, local = root / name / "home", root / name / "tmp", root / name / "local"
    for folder in (home, tmp, local):
        folder.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": SYSTEM_PATH,
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
        "TZ": EXECUTOR_TZ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_CONF_DIR": str(_empty_conf_dir(root)),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOCAL_DIRS": str(local),
        "SPARK_LOG_DIR": str(root / name / "logs"),
    }
    if os.environ.get("JAVA_HOME"):
        env["JAVA_HOME"] = os.environ["JAVA_HOME"]
    return env


@contextlib.contextmanager
def standalone_cluster(root: Path, workers: int = 2, cores: int = 1, memory: str = "2g") -> Iterator[StandaloneCluster]:
    """Start a master and `workers` workers of `cores` cores and `memory` each; stop them all on exit."""
    root.mkdir(parents=True, exist_ok=True)
    cluster = StandaloneCluster(root)
    try:
        master_log = root / "master.log"
        cluster.processes.append(
            _daemon(
                ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", "0", "--webui-port", "0"],
                {**worker_environment(root, "master"), "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false"},
                master_log,
            )
        )
        cluster.master_url = _wait_for(_MASTER_URL, master_log, cluster)
        cluster.web_url = f"http://127.0.0.1:{_wait_for(_MASTER_UI, master_log, cluster)}"
        for i in range(workers):
            name = f"worker-{i + 1}"
            env = worker_environment(root, name)
            cluster.processes.append(
                _daemon(
                    [
                        "org.apache.spark.deploy.worker.Worker",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        "0",
                        "--webui-port",
                        "0",
                        "--cores",
                        str(cores),
                        "--memory",
                        memory,
                        "--work-dir",
                        str(root / name / "work"),
                        cluster.master_url,
                    ],
                    env,
                    root / f"{name}.log",
                    cwd=Path(env["HOME"]),
                )
            )
        _wait_until(lambda: cluster.alive_workers() == workers, cluster, f"{workers} workers registered")
        yield cluster
    finally:
        stop(cluster)


def stop(cluster: StandaloneCluster, grace_s: float = 20.0) -> None:
    """SIGTERM to every daemon's process group (workers first: they stop their executors), then SIGKILL."""
    for process in reversed(cluster.processes):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in cluster.processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.1, deadline - time.monotonic()))
    for process in cluster.processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the group: executors and Python workers a worker left behind
        process.wait(10)


def _daemon(args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(SPARK_HOME / "bin" / "spark-class"), *args],
            env=env,
            cwd=cwd or log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _wait_for(pattern: re.Pattern, log: Path, cluster: StandaloneCluster) -> str:
    found: list[str] = []

    def logged() -> bool:
        match = pattern.search(log.read_text(errors="replace"))
        if match:
            found.append(match[1])
        return bool(match)

    _wait_until(logged, cluster, f"{pattern.pattern!r} in {log.name}")
    return found[0]


def _wait_until(predicate, cluster: StandaloneCluster, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if predicate():
                return
        dead = [p.args[1] for p in cluster.processes if p.poll() is not None]
        if dead:
            raise RuntimeError(
                f"standalone cluster: {', '.join(dead)} exited while waiting for {what} (logs in {cluster.root})"
            )
        time.sleep(0.2)
    raise RuntimeError(f"standalone cluster: timed out after {READY_TIMEOUT_S:.0f} s waiting for {what}")


def _empty_conf_dir(root: Path) -> Path:
    """SPARK_CONF_DIR with nothing in it: no spark-defaults.conf or spark-env.sh of the machine's applies."""
    conf = root / "conf"
    conf.mkdir(exist_ok=True)
    return conf
