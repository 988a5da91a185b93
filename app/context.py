"""What the routes share (stores, limits, caches), built once per app and handed to them as a dependency."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from app.images import local_path, map_svg, thumbnail
from app.security import CsrfTokens, RateLimiter
from app.uploads import Uploads
from fruits.answers import AnswerStore
from fruits.exceptions import one_line
from fruits.knownmap import KnownMap
from fruits.labels import LabelStore
from fruits.settings import Settings
from fruits.upload import open_destination

log = logging.getLogger("fruits.app")
KnownMapLoader = Callable[[str, str], KnownMap | None]  # (model name, version) -> its known map
THUMBNAILS_CACHED = 4096  # ~10 KB each


class KnownMaps:
    """Each model version's known map (loaded once: a version never changes) and its images' thumbnails."""

    def __init__(self, loader: KnownMapLoader, settings: Settings):
        self.loader = loader
        self.settings = settings
        self._maps: dict[tuple[str, str], KnownMap | None] = {}
        self._thumbnails: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._s3: Any = None

    def get(self, model_name: str | None, version: str | None) -> KnownMap | None:
        if not model_name or not version:
            return None
        key = (model_name, version)
        with self._lock:
            if key in self._maps:
                return self._maps[key]
        try:
            known = self.loader(model_name, version)
        except Exception as exc:  # an unknown version, the registry away: no map, and try again next time
            log.warning("no known map for %s v%s: %s", model_name, version, one_line(exc))
            return None
        with self._lock:
            self._maps[key] = known
        return known

    def thumbnail(self, model_name: str, version: str, index: int) -> bytes | None:
        key = (model_name, version, index)
        with self._lock:
            if key in self._thumbnails:
                self._thumbnails.move_to_end(key)
                return self._thumbnails[key]
        known = self.get(model_name, version)
        if known is None or not 0 <= index < len(known.paths):
            return None
        content = self._read(known.paths[index])
        small = thumbnail(content, self.settings.max_image_pixels) if content is not None else None
        if small is not None:
            with self._lock:
                self._thumbnails[key] = small
                while len(self._thumbnails) > THUMBNAILS_CACHED:
                    self._thumbnails.popitem(last=False)
        return small

    def svg(
        self,
        model_name: str | None,
        version: str | None,
        upload_xy: tuple[float, float] | None,
        neighbours: tuple[int, ...],
    ) -> str | None:
        known = self.get(model_name, version)
        if known is None:
            return None
        return map_svg(known.labels, known.xy, upload_xy, neighbours)

    def _read(self, uri: str) -> bytes | None:
        """A training image's bytes, from the URI the known map recorded (a file, or s3:// / s3a://)."""
        limit = self.settings.max_image_bytes
        try:
            path = local_path(uri)
            if path is not None:
                file = Path(path)
                return file.read_bytes() if file.stat().st_size <= limit else None
            parts = urlsplit(uri)
            if self._s3 is None:
                self._s3 = open_destination(
                    f"s3://{parts.netloc}/", endpoint_url=self.settings.s3_endpoint_url, region=self.settings.aws_region
                ).client
            found = self._s3.get_object(Bucket=parts.netloc, Key=unquote(parts.path.lstrip("/")))
            with found["Body"] as body:
                return body.read() if found["ContentLength"] <= limit else None
        except Exception as exc:  # moved, deleted, unreachable: that thumbnail is missing, the page is not
            log.warning("cannot read a known image: %s", one_line(exc))
            return None


@dataclass
class AppContext:
    settings: Settings
    answers: AnswerStore
    uploads: Uploads
    known: KnownMaps
    csrf: CsrfTokens
    upload_limiter: RateLimiter
    request_limiter: RateLimiter
    vote_limiter: RateLimiter
    labels: LabelStore
    curators: dict[str, str]  # name -> token (FRUITS_CURATORS); empty: /curate is refused
    ops: Callable[[], dict[str, Any]]  # the stream's ops numbers over the last hour (streaming.ops)
