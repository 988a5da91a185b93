"""Scratch state directories for demos, benchmarks and tests: fresh stores, shared caches.

A scratch state dir gets its own MLflow store, lake, checkpoints and progress log, but links the
caches of `base` (the ONNX export, the Keras weights, the s3a jars): nothing is exported or
downloaded twice, and the one-off ONNX export (~4 s) never lands inside a measurement.
"""

from __future__ import annotations

from pathlib import Path

from fruits.settings import Settings


def scratch_state(state: Path, base: Settings) -> Path:
    """Create `state` with symlinks to `base`'s caches (those that exist); returns `state`."""
    state.mkdir(parents=True, exist_ok=True)
    base.cache_dir.mkdir(parents=True, exist_ok=True)  # so an export made later is shared too
    for name, shared in (("cache", base.cache_dir), ("keras", base.state / "keras"), ("jars", base.jars_dir)):
        if shared.is_dir() and not (state / name).exists():
            (state / name).symlink_to(shared.resolve())
    return state


def app_workspace(base: Settings, work: Path, **changes: object) -> Settings:
    """A stream and the app on one work folder (landing, tables, checkpoint, sqlite answers), a 1 s trigger,
    `base`'s registry and caches; `changes` on top."""
    return base.replace(
        state_dir=scratch_state(work / "state", base),
        mlflow_tracking_uri=base.tracking_uri,
        source=str(work / "landing"),
        output=str(work / "results"),
        errors=str(work / "errors"),
        checkpoint=str(work / "checkpoint"),
        answers=f"sqlite:///{work / 'answers.db'}",
        trigger="1s",
        **changes,
    )
