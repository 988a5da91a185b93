"""Shared benchmark helpers: where the data is, timing, and a printed table of ratios.

Benchmarks print ratios against a baseline measured in the same run, because machines here
are shared and noisy: an absolute number from another day means little, a ratio much more.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("FRUITS_SHARED_DIR") or ROOT.parent / "shared").resolve()
DATA = SHARED / "data" / "fruits360"
OUT = ROOT / "bench" / "out"


def machine() -> str:
    cores = os.cpu_count()
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    return f"{platform.machine()} {cores} cores, {mem:.0f} GiB, Python {platform.python_version()}, {platform.system()}"


def best_of(repeats: int, fn: Callable[[], int]) -> tuple[float, list[float]]:
    """Run `fn` (returns items processed) `repeats` times; items/s of the best run, and all runs."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        items = fn()
        rates.append(items / (time.perf_counter() - start))
    return max(rates), rates


def table(title: str, rows: list[tuple[str, float, str]], baseline: float, unit: str = "images/s") -> str:
    width = max(len(r[0]) for r in rows)
    lines = [title, f"{'':{width}}  {unit:>10}  {'ratio':>7}  note"]
    for name, value, note in rows:
        lines.append(f"{name:{width}}  {value:10.1f}  {value / baseline:7.2f}  {note}")
    return "\n".join(lines)


def save(name: str, payload: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


# ----------------------------------------------------------------------------- shared by the job benchmarks
def project_settings(**overrides):
    """The project's default settings with the state dir anchored at the repo root, not the cwd.

    FRUITS_STATE_DIR (or an explicit override) still wins. Imported lazily: `--help` stays fast.
    """
    from fruits.settings import Settings

    if not os.environ.get("FRUITS_STATE_DIR"):
        overrides.setdefault("state_dir", ROOT / ".fruits")
    return Settings.load(**overrides)


def image_files(folder: Path) -> list[Path]:
    from fruits.upload import find_images

    return [image.path for image in find_images(Path(folder))]


def land(src: Path, landing: Path, name: str) -> None:
    """Land a copy of `src` in its class folder under `landing`, as an uploader would (atomically)."""
    from fruits.upload import land as land_file

    land_file(src.read_bytes(), landing / src.parent.name / name)


def scratch_state(state: Path, base) -> Path:
    """A fresh state dir sharing `base`'s caches (demo.workspace)."""
    from demo.workspace import scratch_state as scratch

    return scratch(state, base)


def table_paths(uri: str) -> list[str]:
    """The `path` column of a Delta table (empty if it does not exist), read with delta-rs alone."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(uri).to_pyarrow_table(columns=["path"]).column("path").to_pylist()
    except TableNotFoundError:
        return []


def has_model(settings) -> bool:
    """The alias exists AND the stream would accept its model (the featurizer check it applies)."""
    from fruits import registry
    from fruits.exceptions import FruitsError
    from fruits.featurize import Featurizer, check_compatible

    try:
        resolved = registry.resolve(registry.connect(settings), f"models:/{settings.model_name}@{settings.alias}")
        check_compatible(resolved.spec, Featurizer.load(settings).spec, resolved.label)
    except FruitsError:
        return False
    return True


def ensure_model(settings, *, in_process: bool = True, evaluated: bool = False) -> None:
    """Make sure the settings' registry has the model alias; else fit subset/ into that registry first.

    The fit's state dir is the one that holds the sqlite store (the project's .fruits/ for its default
    store, not a benchmark's temp state dir), so if the fit creates the experiment, its artifacts and
    raw features live as long as the registry that points at them.
    `in_process=False` fits in a subprocess, leaving no Spark session behind in this process.
    `evaluated=True` fits with test/ held out and extra_classes/ as unseen fruits, as `make demo`
    does: the model then has a novelty threshold (is_novel, the app's "a fruit I don't know yet").
    """
    if has_model(settings):
        return
    uri = settings.tracking_uri
    store_state = Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else None
    fit_settings = settings.replace(state_dir=store_state or project_settings().state_dir, mlflow_tracking_uri=uri)
    print(
        f"no usable {settings.model_name}@{settings.alias} (missing, or fitted with another featurizer): "
        "fitting on subset/ first"
    )
    if in_process:
        from fit.job import fit

        held_out = {"eval_uri": str(DATA / "test"), "novelty_uri": str(DATA / "extra_classes")} if evaluated else {}
        fit(fit_settings, str(DATA / "subset"), progress=False, **held_out)
        return
    import subprocess

    held_out = (
        ["--eval-images", str(DATA / "test"), "--novelty-images", str(DATA / "extra_classes")] if evaluated else []
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "fit",
            "--images",
            str(DATA / "subset"),
            *held_out,
            "--quiet",
            "--state-dir",
            str(fit_settings.state),
            "--tracking-uri",
            fit_settings.tracking_uri,
        ],
        cwd=ROOT,
        check=True,
    )


def python_env() -> dict[str, str]:
    """Environment for `python -m cli ...` subprocesses: the repo importable, loopback Spark."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return env


def hardlinked_images(target: Path, count: int) -> tuple[list[Path], int]:
    """`count` hardlinks of the shared images (every split) under new names, <class>/c<copy>_<split>_<name>,
    in `target` (a temp folder outside the repo: no image is copied, and none enters the repo); and how
    many distinct images they are. The same bytes several times over cost Spark and ONNX Runtime what
    new images would. Used by bench/scale.py and bench/fit.py."""
    sources = sorted(p for split in sorted(DATA.iterdir()) if split.is_dir() for p in image_files(split))
    made = []
    for i in range(count):
        src = sources[i % len(sources)]
        dest = target / src.parent.name / f"c{i // len(sources)}_{src.parent.parent.name}_{src.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(src, dest)
        made.append(dest)
    return made, len(sources)
