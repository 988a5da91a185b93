"""Make the offline pieces available (idempotent; `make` runs it on every set-up).

--weights-from DIR  if no Keras cache has the MobileNetV2 ImageNet weights file and DIR does,
                    link it into a project-local Keras cache (.fruits/keras/models), so
                    weights="imagenet" resolves offline exactly as a warm cache would. On a
                    normal machine nothing is needed: Keras downloads the file on first use.
--s3a-jars          fetch hadoop-aws 3.3.1 + the AWS SDK bundle (needed for s3a:// outside EMR)
                    from the sagemaker-pyspark source package into .fruits/jars (git-ignored).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from fruits.errors import FruitsError
from fruits.featurizer import WEIGHTS_FILE
from fruits.settings import Settings
from fruits.spark import S3A_JARS

log = logging.getLogger(__name__)
JARS_PACKAGE = "sagemaker-pyspark==1.4.5"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights-from", metavar="DIR", help="folder holding " + WEIGHTS_FILE)
    parser.add_argument("--s3a-jars", action="store_true", help="fetch the jars s3a:// needs into the state dir")
    parser.add_argument("--state-dir", type=Path, help="state directory (default .fruits, env FRUITS_STATE_DIR)")


def run(args: argparse.Namespace) -> int:
    settings = Settings.load(state_dir=args.state_dir)
    if args.weights_from:
        print(link_weights(settings, Path(args.weights_from)))
    if args.s3a_jars:
        print(fetch_s3a_jars(settings))
    return 0


def keras_caches(settings: Settings) -> list[Path]:
    homes = [Path(os.environ["KERAS_HOME"])] if os.environ.get("KERAS_HOME") else []
    homes += [Path("~/.keras").expanduser(), settings.state / "keras"]
    return [home / "models" / WEIGHTS_FILE for home in homes]


def link_weights(settings: Settings, source_dir: Path) -> str:
    for cached in keras_caches(settings):
        if cached.is_file():
            return f"weights: Keras cache has {cached}"
    source = source_dir / WEIGHTS_FILE
    if not source.is_file():
        return f"weights: not in any Keras cache and not in {source_dir}; Keras will download them on first use"
    target = settings.state / "keras" / "models" / WEIGHTS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():
        target.unlink()
    target.symlink_to(source.resolve())
    return f"weights: linked {source} into the project-local Keras cache {target.parent}"


def fetch_s3a_jars(settings: Settings) -> str:
    targets = [settings.jars_dir / name for name in S3A_JARS]
    if all(t.is_file() for t in targets):
        return f"s3a jars: present in {settings.jars_dir}"
    settings.jars_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", JARS_PACKAGE, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob("*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise FruitsError(f"could not download {JARS_PACKAGE} for the s3a jars: {done.stderr.strip()[-300:]}")
        with tarfile.open(archives[0]) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if name in S3A_JARS:
                    data = tar.extractfile(member)
                    (settings.jars_dir / name).write_bytes(data.read())
    missing = [t.name for t in targets if not t.is_file()]
    if missing:
        raise FruitsError(f"{JARS_PACKAGE} did not contain {', '.join(missing)}")
    return f"s3a jars: fetched {', '.join(S3A_JARS)} into {settings.jars_dir}"
