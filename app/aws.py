"""The app on AWS Lambda behind an API Gateway HTTP API: `handler(event, context)` (infra/template.yaml, AppFunction).

mangum turns the HTTP API's events (payload format 2.0) into ASGI requests for the same FastAPI app
`fruits app` serves (app.main.create_app), and its responses back into the event's answer. The app is
built once per Lambda instance, on the first event: its settings from the function's environment
(fruits.settings), then the secrets Settings.secrets names, read from Secrets Manager, so that no
secret sits in the environment, the template or a log.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

from fruits.exceptions import FruitsError
from fruits.settings import Settings, fields_of

log = logging.getLogger("fruits.app")
MLFLOW_USER_KEYS = {"username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"}
CURATOR_TOKEN = "curator_token"  # the stack's generated CuratorSecret (infra/template.yaml)

_handler: Any = None
_lock = threading.Lock()


def with_secrets(settings: Settings, secretsmanager: Any = None) -> Settings:
    """`settings` with the values of the secrets it names (Settings.secrets): keys that are settings replace
    them (app_secret, curators); an MLflow user ("username", "password") becomes the MLflow client's
    credentials; the stack's generated `curator_token` becomes one curator named "curator" unless the secret
    names its curators itself ({"curators": "name:token,..."}). A key that is none of these is logged by name
    and left out (what it was meant for keeps no default: the app refuses what needs it)."""
    ids = [part.strip() for part in (settings.secrets or "").split(",") if part.strip()]
    if not ids:
        return settings
    if secretsmanager is None:
        import boto3

        secretsmanager = boto3.client("secretsmanager", region_name=settings.aws_region)
    values: dict[str, str] = {}
    for secret_id in ids:
        try:
            document = json.loads(secretsmanager.get_secret_value(SecretId=secret_id)["SecretString"])
        except ValueError:
            raise FruitsError(f"the secret {secret_id} is not a JSON object") from None
        if not isinstance(document, dict):
            raise FruitsError(f"the secret {secret_id} is not a JSON object")
        values.update({key: str(value) for key, value in document.items()})
    token = values.pop(CURATOR_TOKEN, None)
    if token is not None:
        values.setdefault("curators", f"curator:{token}")
    known = (fields_of(Settings) - {"secrets"}) | set(MLFLOW_USER_KEYS)
    for unknown in sorted(set(values) - known):
        log.warning("a secret of FRUITS_SECRETS holds %r, which names no setting: left out", unknown)
        del values[unknown]
    for key, variable in MLFLOW_USER_KEYS.items():
        if key in values:
            # The MLflow client reads its basic-auth user from these variables only (as the EMR nodes'
            # ~/.mlflow/credentials file would hold it): set for this process, never logged.
            os.environ[variable] = values.pop(key)
    return settings.replace(**values) if values else settings


def build_handler(settings: Settings | None = None) -> Any:
    """The app, wrapped for the Lambda runtime (mangum; the lifespan is off: an instance just stops)."""
    from mangum import Mangum

    from app.main import create_app

    return Mangum(create_app(with_secrets(settings or Settings.load())), lifespan="off")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point (Handler: app.aws.handler): one HTTP API event in, its response out."""
    global _handler
    if _handler is None:
        with _lock:
            if _handler is None:
                _handler = build_handler()
    return _handler(event, context)
