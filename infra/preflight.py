"""What `submit` checks before it adds a job that cannot work, each refusal one line saying what to do.

- the files the job runs from are in the bucket (spark_entry.py; the venv archive on Serverless);
- a fit has labelled images to fit on: at least `pca_k` images in at least two class folders
  (`<prefix><class>/<file>.jpg`); an empty prefix fails the fit, and on EMR its CANCEL_AND_WAIT
  then cancels the queued stream;
- a stream has something to watch (Spark's file source fails on a missing prefix) and a
  registered model to load (asked of the MLflow server's REST API; skippable when the server is
  reachable only from inside the VPC);
- no second stream on the same checkpoint: it would queue behind the first on EMR (one step at a
  time) or fight over the checkpoint on EMR Serverless.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Any

from fruits.contracts import is_image_name
from fruits.exceptions import FruitsError
from infra.aws import aws_errors


def split_s3_uri(uri: str) -> tuple[str, str]:
    """'s3a://bucket/images/' -> ('bucket', 'images/'); s3://, s3a:// and s3n:// alike."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("s3", "s3a", "s3n") or not parsed.netloc:
        raise FruitsError(f"{uri!r} is not an S3 URI")
    prefix = parsed.path.lstrip("/")
    return parsed.netloc, prefix if not prefix or prefix.endswith("/") else prefix + "/"


def require_objects(s3: Any, bucket: str, keys: Iterable[tuple[str, str]]) -> None:
    """Each (key, how to put it there) must exist."""
    from botocore.exceptions import ClientError

    for key, how in keys:
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise FruitsError(f"cannot check s3://{bucket}/{key}: {exc}") from None
            raise FruitsError(f"s3://{bucket}/{key} is missing: {how}") from None


def labelled_images(s3: Any, bucket: str, prefix: str, enough: int) -> tuple[int, set[str]]:
    """Images directly in class folders under the prefix, and the classes; stops listing at `enough`."""
    count, classes = 0, set()
    with aws_errors("list_objects_v2"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                parts = item["Key"][len(prefix) :].split("/")
                # <class>/<file>, with no hidden or temporary folder (the fit's own rule)
                if (
                    len(parts) == 2
                    and not parts[0].startswith((".", "_"))
                    and is_image_name(parts[1])
                    and item["Size"] > 0
                ):
                    count += 1
                    classes.add(parts[0])
            if count >= enough and len(classes) >= 2:
                break
    return count, classes


def check_fit_images(s3: Any, uri: str, pca_k: int) -> None:
    bucket, prefix = split_s3_uri(uri)
    count, classes = labelled_images(s3, bucket, prefix, pca_k)
    if count < pca_k or len(classes) < 2:
        raise FruitsError(
            f"{uri} holds {count} labelled images in {len(classes)} class folders: the fit needs at least {pca_k} "
            f"(its PCA keeps {pca_k} components) in at least 2 classes, as <class>/<file>.jpg; upload the labelled "
            "set first (`fruits upload DIR s3://BUCKET/images/`)"
        )


def check_holdout_images(s3: Any, uri: str) -> None:
    """The refit's held-out images: labelled (<class>/<file>), at least one per class of two."""
    bucket, prefix = split_s3_uri(uri)
    count, classes = labelled_images(s3, bucket, prefix, 2)
    if len(classes) < 2:
        raise FruitsError(
            f"{uri} holds {count} labelled images in {len(classes)} class folders: the refit measures champion and "
            "challenger on held-out images of the model's classes, as <class>/<file>.jpg; upload them there "
            "(`fruits upload DIR s3://BUCKET/holdout/`), never under images/ (the stream would ingest them)"
        )


def live_stream(live: Iterable[dict[str, str]]) -> dict[str, str] | None:
    """The first stream among the steps or job runs not yet finished (name, id, state), or None."""
    return next((r for r in live if r["name"] == "fruits-stream"), None)


def check_no_step_ahead(live: Iterable[dict[str, str]], where: str) -> None:
    """A cluster runs one step at a time: a refit queued behind the running stream would never start."""
    run = live_stream(live)
    if run:
        raise FruitsError(
            f"the stream is {run['state']} on {where} ({run['id']}) and the cluster runs one step at a time: a refit "
            "step would wait behind it forever; the running stream picks up a refit's model by itself, so run the "
            "refit as an EMR Serverless job run (`fruits serverless submit --job refit`) or with `fruits refit` "
            "where the lake is reachable, or `stop` the stream first"
        )


def check_stream_source(s3: Any, uri: str) -> None:
    bucket, prefix = split_s3_uri(uri)
    with aws_errors("list_objects_v2"):
        found = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0)
    if not found:
        raise FruitsError(
            f"{uri} is empty: the stream's file source needs the prefix to exist; upload the labelled set first "
            "(`fruits upload DIR s3://BUCKET/images/`), then submit --job both"
        )


def check_registered_model(
    tracking_uri: str, name: str, alias: str, credentials: tuple[str, str] | None = None, timeout: float = 10.0
) -> str:
    """The version `name@alias` resolves to, asked of the MLflow REST API (with basic auth when `credentials`,
    (username, password), are given); a one-line error if none."""
    query = urllib.parse.urlencode({"name": name, "alias": alias})
    request = urllib.request.Request(f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/registered-models/alias?{query}")
    if credentials:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    skip = "or pass --skip-model-check if the server is reachable only from inside the VPC"
    try:
        with urllib.request.urlopen(
            request, timeout=timeout
        ) as response:  # https, or http on loopback: steps.check_tracking_uri
            return str(json.load(response)["model_version"]["version"])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise FruitsError(
                f"no model {name}@{alias} in the registry at {tracking_uri}: the stream would fail at start; "
                "submit --job both (the fit registers it) or --job fit first"
            ) from None
        if exc.code in (401, 403):
            given = "were refused" if credentials else "are needed: pass --mlflow-secret ARN (the server's secret)"
            raise FruitsError(
                f"cannot check {name}@{alias} at {tracking_uri}: HTTP {exc.code}, credentials {given}"
            ) from None
        raise FruitsError(f"cannot check {name}@{alias} at {tracking_uri}: HTTP {exc.code}; {skip}") from None
    except (urllib.error.URLError, TimeoutError, OSError, ValueError, KeyError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FruitsError(f"cannot reach the MLflow server at {tracking_uri} ({reason}); {skip}") from None


def check_no_live_stream(live: Iterable[dict[str, str]], where: str) -> None:
    """`live`: the steps or job runs not yet finished, each with name, id and state."""
    run = live_stream(live)
    if run:
        raise FruitsError(
            f"a stream is already {run['state']} on {where} ({run['id']}): stop it first (`stop`, then wait for `status`); "
            "two streams on one checkpoint cannot both run"
        )
