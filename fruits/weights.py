"""The MobileNetV2 ImageNet weights: where they are, their identity, and the offline Keras cache.

`--weights imagenet` (the default) means Keras' own cache file, downloaded the usual way when
missing; a path or an s3:// URI names the .h5 directly. The sha256 of the file is part of the
featurizer's identity (fruits.featurize.FeaturizerSpec), stored with every registered model.

Machines without internet get the file into a Keras cache with `link_into_keras_cache` (what
`fruits setup --weights-from DIR` runs), so weights="imagenet" resolves exactly as a warm cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fruits.exceptions import FruitsError
from fruits.settings import Settings

WEIGHTS_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
KERAS_DEFAULT_HOME = Path("~/.keras")


def resolve(settings: Settings) -> Path:
    """The local path of the weights `settings.weights` names (downloading them if needed)."""
    source = settings.weights
    if source == "imagenet":
        home = settings.keras_cache or KERAS_DEFAULT_HOME.expanduser()
        cached = home / "models" / WEIGHTS_FILE
        return cached if cached.is_file() else _keras_download(home)
    if source.startswith(("s3://", "s3a://")):
        return _download_s3(source, settings.cache_dir / "weights", settings.s3_endpoint_url, settings.aws_region)
    path = Path(source.removeprefix("file://")).expanduser()
    if not path.is_file():
        raise FruitsError(f"weights file not found: {source}")
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def link_into_keras_cache(settings: Settings, source_dir: Path) -> str:
    """Make weights="imagenet" resolve offline: link DIR's weights file into the project-local Keras cache.

    Nothing to do when a Keras cache already has the file. Returns what was done, for people.
    """
    caches = [
        home for home in (settings.keras_cache, KERAS_DEFAULT_HOME.expanduser(), settings.state / "keras") if home
    ]
    for home in caches:
        if (home / "models" / WEIGHTS_FILE).is_file():
            return f"weights: Keras cache has {home / 'models' / WEIGHTS_FILE}"
    source = source_dir / WEIGHTS_FILE
    if not source.is_file():
        return f"weights: not in any Keras cache and not in {source_dir}; Keras will download them on first use"
    target = settings.state / "keras" / "models" / WEIGHTS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():
        target.unlink()
    target.symlink_to(source.resolve())
    return f"weights: linked {source} into the project-local Keras cache {target.parent}"


def _keras_download(home: Path) -> Path:
    import keras
    from keras.src.applications import mobilenet_v2

    try:
        fetched = keras.utils.get_file(
            WEIGHTS_FILE, mobilenet_v2.BASE_WEIGHT_PATH + WEIGHTS_FILE, cache_subdir="models", cache_dir=str(home)
        )
    except Exception as exc:  # no network, proxy, disk full: all the user can act on
        raise FruitsError(
            f"ImageNet weights are not in the Keras cache ({home / 'models'}) and could not be downloaded "
            f"({type(exc).__name__}); run `make setup` or pass --weights PATH"
        ) from None
    return Path(fetched)


def _download_s3(uri: str, target_dir: Path, endpoint_url: str | None, region: str) -> Path:
    """Once per file name: a node downloads the weights at its first job, then reuses them."""
    import boto3

    bucket, _, key = uri.split("://", 1)[1].partition("/")
    target = target_dir / Path(key).name
    if not target.is_file():
        target_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        # The region matters in a private subnet: its S3 gateway endpoint serves only that region.
        client = boto3.client("s3", region_name=region, endpoint_url=endpoint_url)
        try:
            client.download_file(bucket, key, str(partial))
        except Exception as exc:
            raise FruitsError(f"cannot download weights {uri}: {exc}") from None
        partial.replace(target)
    return target
