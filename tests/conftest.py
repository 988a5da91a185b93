"""Shared fixtures: one Spark session, the real images in ../shared, the real weights, moto servers.

Nothing here is mocked: Spark is local[2], MLflow uses real stores, AWS APIs are moto servers
listening on 127.0.0.1 that these fixtures start and stop. Only the fixtures that read ../shared
(`data_dir`, `keras_home` and what builds on them) check it is there: pure tests run without it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow  # noqa: F401  its logger keeps the sys.stderr of its import: import before tests capture it
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FRUITS_SHARED_DIR") or ROOT.parent / "shared").resolve()
DATA = SHARED / "data" / "fruits360"
WEIGHTS_DIR = SHARED / "models" / "keras"

# Tests never see a developer's real AWS account or tracking server.
for _name in [n for n in os.environ if n.startswith(("FRUITS_", "MLFLOW_", "AWS_"))]:
    if _name != "FRUITS_SHARED_DIR":
        del os.environ[_name]
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-3",
        "AWS_REGION": "eu-west-3",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
)
os.environ.pop("KERAS_HOME", None)


@pytest.fixture(autouse=True, scope="module")
def no_tracking_uri_left_behind() -> Iterator[None]:
    """fruits.registry.connect (a fit, a stream in this process) sets MLflow's tracking URI, and
    mlflow.set_tracking_uri exports it as MLFLOW_TRACKING_URI for subprocesses: after each module the
    variable is gone again, so a later module (tests/cli reads the environment through Settings.load)
    never sees an earlier module's sqlite store, whatever order the tests run in."""
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def shared(path: Path, what: str) -> Path:
    """`path` under ../shared; else the test that needs it is skipped with one line that says how to point at it
    (an error in CI, which must never pass by skipping the tests on real data)."""
    if not path.is_dir():
        message = f"{what} are missing: {path} (set FRUITS_SHARED_DIR to the shared folder)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real Fruits-360 sample: subset/, stream/, test/, extra_classes/."""
    return shared(DATA, "the shared images")


@pytest.fixture(scope="session")
def keras_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Keras cache holding the shared ImageNet weights, as `fruits setup` makes one."""
    home = tmp_path_factory.mktemp("keras")
    (home / "models").mkdir()
    for weights in shared(WEIGHTS_DIR, "the shared MobileNetV2 weights").glob("*.h5"):
        (home / "models" / weights.name).symlink_to(weights)
    os.environ["KERAS_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory, keras_home: Path) -> Path:
    """The session's state dir: its ONNX cache is shared by every test."""
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
def settings(state_dir: Path, moto_server: str):
    """Test settings: local[2] Spark whose s3a:// points at the session's moto server."""
    from fruits.settings import Settings
    from fruits.spark import fetch_s3a_jars

    settings = Settings.load(state_dir=state_dir, spark_master="local[2]", s3_endpoint_url=moto_server)
    project_jars = ROOT / ".fruits" / "jars"  # fetched once by `make setup`; else fetched here
    settings.jars_dir.parent.mkdir(parents=True, exist_ok=True)
    if project_jars.is_dir() and not settings.jars_dir.exists():
        settings.jars_dir.symlink_to(project_jars)
    fetch_s3a_jars(settings)
    return settings


@pytest.fixture(scope="session")
def spark(settings):
    from fruits.spark import get_spark

    session = get_spark(settings, app_name="fruits-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def featurizer(settings):
    from fruits.featurize import Featurizer

    return Featurizer.load(settings.replace(engine="onnx"))


@pytest.fixture(scope="session")
def moto_server():
    """A real moto server process-thread on 127.0.0.1 (S3, SNS, SQS, IAM, CloudFormation, EMR...)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def counting_moto():
    """A moto server of its own that counts the requests it serves by operation (S3 LIST, GET per object...)."""
    from demo.emulated_aws import CountingMotoServer

    server = CountingMotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fitted(settings, spark, data_dir: Path) -> dict:
    """The fit job run once on the real subset, evaluated on test/ and the unseen extra_classes/,
    registered as fruits-pca@champion."""
    from fit.job import fit

    return fit(
        settings,
        str(data_dir / "subset"),
        str(data_dir / "test"),
        novelty_uri=str(data_dir / "extra_classes"),
        spark=spark,
        progress=False,
    )
