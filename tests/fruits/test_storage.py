"""fruits.storage: the small JSON files under the stream's checkpoint, read where pyspark is not installed.

The app (on AWS Lambda, no spark extra) reads the stream's progress mirror through this store and
streaming.monitor.read_mirrored_progress; the stream writes it with the same store.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fruits.settings import Settings
from streaming.monitor import ProgressMirror, checkpoint_store
from support import WITHOUT_SPARK

ROOT = Path(__file__).resolve().parents[2]

READ_BACK = (
    WITHOUT_SPARK
    + """
import json
from fruits.settings import Settings
from streaming.monitor import read_mirrored_progress

settings = Settings.load(env={}, checkpoint=sys.argv[1])
batches, swaps = read_mirrored_progress(settings, since=float(sys.argv[2]), until=float(sys.argv[3]))
loaded = sorted({name.split(".")[0] for name in sys.modules} & {"pyspark", "py4j"})
print(json.dumps({"batches": [b["batch"] for b in batches], "swaps": [s["to_version"] for s in swaps],
                  "loaded": loaded}))
"""
)


def test_the_progress_mirror_reads_back_where_pyspark_cannot_be_imported(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoints" / "stream"
    mirror = ProgressMirror(checkpoint_store(Settings.load(env={}, checkpoint=str(checkpoint))))
    start = 1_800_000_000.0  # a segment boundary (600 s): the records span two segments, two files
    for batch, at in enumerate((start + 10, start + 590, start + 610)):
        mirror.add({"event": "batch", "batch": batch, "committed_at": at, "files": 1})
    mirror.add({"event": "batch", "batch": 3, "committed_at": start + 620, "replayed": True})
    mirror.add({"event": "model_swap", "at": start + 605, "from_version": "1", "to_version": "2"})
    mirror.flush()
    assert sorted(p.name for p in (checkpoint / "progress").iterdir()) == [
        f"{start:.0f}.json",
        f"{start + 600:.0f}.json",
    ]

    done = subprocess.run(
        [sys.executable, "-c", READ_BACK, str(checkpoint), str(start + 5), str(start + 700)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # Batch 3 was a replay (nothing committed): left out; the swap is in the window.
    assert json.loads(done.stdout.splitlines()[-1]) == {"batches": [0, 1, 2], "swaps": ["2"], "loaded": []}
