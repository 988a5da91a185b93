"""Small JSON files under the stream's checkpoint, local or on S3, with no Spark: the notification source's state
(fruits.notifications.checkpoint) and the progress mirror (streaming.monitor), which the app reads where pyspark
is not installed (AWS Lambda)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any
from urllib.parse import urlsplit

from fruits.exceptions import FruitsError


class CheckpointStore:
    """Small JSON files under the stream's checkpoint, on local disk or S3 (pyarrow.fs).

    Writes are atomic: locally a temp file fsynced and renamed into place; on S3 one PUT.
    """

    def __init__(self, root: str, region: str, endpoint: str | None = None):
        self.root = root.rstrip("/")
        match = re.match(r"^(s3a?)://(.+)$", self.root)
        if match:
            from pyarrow import fs

            options: dict[str, Any] = {"region": region}
            if endpoint:
                options["endpoint_override"] = endpoint
                options["scheme"] = urlsplit(endpoint).scheme or "https"
            self._s3 = fs.S3FileSystem(**options)
            self._base = match[2]
        elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", self.root) and not self.root.startswith("file:"):
            raise FruitsError(
                f"the stream keeps its state under the checkpoint (the notification source's, the "
                f"progress mirror) local or s3://, not {self.root!r}"
            )
        else:
            self._s3 = None
            self._base = re.sub(r"^file:/*", "/", self.root)

    def _path(self, relative: str) -> str:
        return f"{self._base}/{relative}"

    def read(self, relative: str) -> bytes | None:
        path = self._path(relative)
        try:
            if self._s3 is None:
                with open(path, "rb") as fh:
                    return fh.read()
            with self._s3.open_input_stream(path) as stream:
                return stream.read()
        except FileNotFoundError:
            return None

    def read_json(self, relative: str) -> Any:
        """The file's JSON; None if there is no such file. ValueError if it is not JSON."""
        data = self.read(relative)
        if data is None:
            return None
        try:
            return json.loads(data)
        except RecursionError:
            raise ValueError("nested too deep") from None

    def write_json(self, relative: str, document: Any) -> None:
        data = json.dumps(document, separators=(",", ":")).encode()
        path = self._path(relative)
        if self._s3 is not None:
            with self._s3.open_output_stream(path) as stream:  # one PUT: atomic
                stream.write(data)
            return
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=folder)  # hidden: never read as a list
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, path)
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash of the machine
        finally:
            os.close(directory)

    def names(self, relative: str) -> list[str]:
        """File names in a folder (one LIST on S3); [] if it does not exist."""
        path = self._path(relative)
        if self._s3 is None:
            return sorted(os.listdir(path)) if os.path.isdir(path) else []
        from pyarrow import fs

        infos = self._s3.get_file_info(fs.FileSelector(path, allow_not_found=True))
        return sorted(info.base_name for info in infos if info.type == fs.FileType.File)

    def delete(self, relative: str) -> None:
        try:
            if self._s3 is None:
                os.unlink(self._path(relative))
            else:
                self._s3.delete_file(self._path(relative))
        except FileNotFoundError:
            pass
