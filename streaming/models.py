"""Hot model swap: the running stream follows its registry alias, with no restart.

A background thread re-resolves the alias (`models:/NAME@ALIAS`) at most every
`model_refresh_interval` (one registry call; default 10 s). When the alias has moved, it checks
the new version's featurizer identity and its stages (an incompatible model is refused with an
error log line and the stream keeps the model it has), loads the model, and hands it to the micro-batch
function, which uses it from its next batch on: a batch never mixes two models, every row
records the `model_version` that produced it, and nothing is lost or written twice across a swap
(the swap changes which model projects, not what is read or committed). A model pinned by version
(`models:/NAME/VERSION`) never changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from mlflow import MlflowClient

from fruits import registry
from fruits.exceptions import FruitsError, one_line
from fruits.featurize import FeaturizerSpec, check_compatible
from streaming.batch import ActiveModel

log = logging.getLogger("fruits.stream")


class ModelWatcher:
    def __init__(
        self,
        client: MlflowClient,
        model_uri: str,
        featurizer: FeaturizerSpec,
        current: Callable[[], ActiveModel],
        load: Callable[[registry.ResolvedModel], ActiveModel],
        swap: Callable[[ActiveModel], None],
        on_swap: Callable[[str, str], None],
        on_refused: Callable[[str, str], None],
    ):
        self.client = client
        self.model_uri = model_uri
        self.featurizer = featurizer
        self.current = current
        self.load = load
        self.swap = swap
        self.on_swap = on_swap
        self.on_refused = on_refused
        self.refused: set[str] = set()
        self.follows_alias = "@" in model_uri

    def check(self) -> bool:
        """Swap in the alias's version if it moved and is compatible. True if a swap happened."""
        if not self.follows_alias:
            return False
        resolved = registry.resolve(self.client, self.model_uri)
        active = self.current().resolved
        if resolved.version == active.version or resolved.version in self.refused:
            return False
        started = time.perf_counter()
        try:
            check_compatible(resolved.spec, self.featurizer, resolved.label)
            model = self.load(resolved)  # refuses a model whose stages the stream cannot apply
        except FruitsError as exc:
            self.refused.add(resolved.version)
            self.on_refused(resolved.version, str(exc))
            log.error(
                "%s moved to version %s, refused: %s; the stream keeps version %s",
                self.model_uri,
                resolved.version,
                exc,
                active.version,
            )
            return False
        self.swap(model)
        self.on_swap(active.version, resolved.version)
        log.info(
            "%s moved: version %s -> %s, used from the next micro-batch (loaded in %.1f s)",
            self.model_uri,
            active.version,
            resolved.version,
            time.perf_counter() - started,
        )
        return True

    def run(self, interval_s: float, stop: threading.Event) -> None:
        """Check every `interval_s` until `stop` is set; a registry hiccup is logged, never fatal."""
        while not stop.wait(interval_s):
            try:
                self.check()
            except Exception as exc:
                log.warning("cannot check %s in the registry: %s", self.model_uri, one_line(exc))
