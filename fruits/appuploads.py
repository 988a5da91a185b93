"""Where the public app's uploads live, and how a path says which upload it is. Pure, Spark-free.

The app writes each photo under the stream's source, in a folder of its own:

    <source root>/app/consented/<upload id>.<jpg|png>   the person agreed the photo may improve the model
    <source root>/app/private/<upload id>.<jpg|png>     answered, never trained on, deleted after the retention

- The upload id is 32 lowercase hex characters from `secrets` (128 bits): nobody can guess another
  person's id, and it never starts with '.' or '_' (names Spark's listing skips).
- Consent is part of the key, so an S3 lifecycle rule on `<prefix>app/private/` (and `fruits lake
  purge-private` locally) deletes what nobody agreed to keep, and a reader of the lake sees consent
  in the `path` column without a join.
- App uploads carry no label: the folder-is-the-label rule (fruits.source.label_from_path, and the
  upload Lambda's copy) gives None for anything under `app/`, so neither `app`, `consented` nor
  `private` can ever become a class name.
"""

from __future__ import annotations

import posixpath
import re
import secrets

from fruits.contracts import APP_FOLDER, in_app_folder, relative_to_root

CONSENTED = "consented"
PRIVATE = "private"
EXTENSIONS = ("jpg", "png")
_ID = re.compile(r"^[0-9a-f]{32}$")
# A consented upload's id from its path as the lake stores it (any scheme, any root): for readers of the
# results table that join on upload ids (the refit's Spark regexp_extract, fruits.labels with pyarrow).
CONSENTED_PATH_PATTERN = r"/" + APP_FOLDER + "/" + CONSENTED + r"/([0-9a-f]{32})\.(?:jpg|png)$"
_NAME = re.compile(r"^(?P<id>[0-9a-f]{32})\.(?:jpg|png)$")


def new_upload_id() -> str:
    """128 random bits as 32 hex characters."""
    return secrets.token_hex(16)


def is_upload_id(text: str) -> bool:
    return bool(_ID.match(text))


def upload_key(upload_id: str, consent: bool, extension: str = "jpg") -> str:
    """The upload's path relative to the source root: 'app/consented/<id>.jpg'."""
    if not is_upload_id(upload_id):
        raise ValueError(f"not an upload id: {upload_id!r}")
    if extension not in EXTENSIONS:
        raise ValueError(f"app uploads are {' or '.join(EXTENSIONS)}, not {extension!r}")
    return f"{APP_FOLDER}/{CONSENTED if consent else PRIVATE}/{upload_id}.{extension}"


def parse_upload_path(path: str, root: str) -> tuple[str, bool] | None:
    """(upload id, consent) when `path` is an app upload under `root`, else None."""
    relative = relative_to_root(path, root)
    if relative is None or not in_app_folder(relative):
        return None
    folder, name = posixpath.split(relative[len(APP_FOLDER) + 1 :])
    match = _NAME.match(name)
    if match is None or folder not in (CONSENTED, PRIVATE):
        return None
    return match["id"], folder == CONSENTED
