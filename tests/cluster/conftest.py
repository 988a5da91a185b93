"""A Spark standalone cluster shared by the module: one master and two workers of 1 core each, on 127.0.0.1.

Its executors run in JVMs and Python workers of their own, started by workers whose environment
holds nothing of the tests' (demo.standalone): no FRUITS_*, AWS_*, MLFLOW_*, KERAS_HOME or
PYTHONPATH, another HOME, cwd, TMPDIR and time zone. After the module, not one of its processes
may be left, whether the tests passed or not.
"""

from __future__ import annotations

import pytest

from demo.standalone import standalone_cluster

WORKERS = 2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with standalone_cluster(tmp_path_factory.mktemp("standalone"), workers=WORKERS, cores=1, memory="2g") as running:
        yield running
    left = running.processes_left()
    assert not left, "processes of the standalone cluster outlived it:\n" + "\n".join(left)
