"""The ops numbers (streaming.ops.stream_stats) on hand-made progress records, and the progress mirror
under the checkpoint (streaming.monitor.ProgressMirror) on a local folder and on moto S3."""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
import pytest

from fruits.settings import Settings
from streaming.monitor import (
    MIRROR_RETENTION_S,
    MIRROR_SEGMENT_S,
    BatchMetrics,
    Monitor,
    ProgressMirror,
    read_mirrored_progress,
    read_progress,
)
from streaming.ops import ops_window, stream_stats

T0 = 1_800_000_000.0  # a segment boundary (divisible by 600)


def batch(n: int, at: float, files: int, latencies_ms: list[int], version: str = "1", **extra) -> dict:
    record = {
        "event": "batch",
        "batch": n,
        "files": files,
        "rows": files - extra.pop("errors", 0),
        "seconds": 2.0,
        "committed_at": at,
        "model_version": version,
        "replayed": False,
        "latencies_ms": latencies_ms,
        "answers": 0,
        "answer_latencies_ms": [],
        "error_reasons": {},
    }
    record["errors"] = files - record["rows"]
    record.update(extra)
    return record


def test_stream_stats_of_a_window() -> None:
    batches = [
        batch(
            0,
            T0 + 10,
            4,
            [1000, 2000, 3000, 4000],
            predictions={"Kaki": 3, "Lemon": 1},
            mean_confidence=0.8,
            novel_fraction=0.25,
        ),
        batch(
            1,
            T0 + 20,
            6,
            [500] * 6,
            errors=2,
            error_reasons={"not_an_image": 1, "too_large": 1},
            answers=3,
            answer_latencies_ms=[900, 1100, 1300],
            predictions={"Lemon": 4},
            mean_confidence=0.6,
            novel_fraction=0.0,
        ),
        batch(
            2,
            T0 + 40,
            10,
            [100] * 10,
            version="2",
            errors=3,
            error_reasons={"not_an_image": 3},
            predictions={"Lemon": 5, "Pear": 2},
            mean_confidence=0.9,
            novel_fraction=None,
        ),
        {
            "event": "batch",
            "batch": 2,
            "replayed": True,
            "files": 0,
            "rows": 0,
            "errors": 0,
            "seconds": 0.0,
            "committed_at": T0 + 41,
            "model_version": "2",
        },
        batch(3, T0 + 5000, 99, [1] * 99, version="2"),  # after the window
    ]
    swaps = [
        {"event": "model_swap", "from_version": "1", "to_version": "2", "at": T0 + 30},
        {"event": "model_swap", "from_version": "2", "to_version": "3", "at": T0 + 4000},
    ]
    kept, kept_swaps = [b for b in batches if not b.get("replayed")], swaps  # what read_progress returns
    stats = stream_stats(kept, kept_swaps, since=T0, until=T0 + 100)
    assert stats == {
        "window_start": T0,
        "window_end": T0 + 100,
        "batches": 3,
        "files": 20,
        "rows": 15,
        "errors": 5,
        "files_per_s": 0.2,  # 20 files in 100 s
        "busy_files_per_s": 3.3,  # 20 files in 3 x 2 s
        # 20 latencies: ten 0.1 s, six 0.5 s, then 1, 2, 3, 4 s.
        "latency_p50_s": 0.3,
        "latency_p95_s": 3.05,
        "latency_max_s": 4.0,
        "answers": 3,
        "answer_latency_p50_s": 1.1,
        "answer_latency_p95_s": 1.28,
        "error_reasons": {"not_an_image": 4, "too_large": 1},
        "class_mix": {"Lemon": 10, "Kaki": 3, "Pear": 2},
        "novel_fraction": 0.125,  # 1 of the 8 rows whose batches had a novelty threshold
        "mean_confidence": 0.7933,  # (0.8 x 4 + 0.6 x 4 + 0.9 x 7) / 15 rows
        "model_version": "2",
        "model_versions": ["1", "2"],
        "model_swaps": [{"from_version": "1", "to_version": "2", "at": T0 + 30}],
    }
    # Without a window: from the first batch's start to the last commit.
    everything = stream_stats(kept, kept_swaps)
    assert (everything["window_start"], everything["window_end"], everything["files"]) == (T0 + 8, T0 + 5000, 119)
    assert len(everything["model_swaps"]) == 2


def test_stream_stats_of_nothing_is_nulls_not_errors() -> None:
    stats = stream_stats([], [], since=T0, until=T0 + 60)
    assert (
        stats["batches"],
        stats["files"],
        stats["files_per_s"],
        stats["latency_p95_s"],
        stats["model_version"],
        stats["class_mix"],
        stats["novel_fraction"],
    ) == (0, 0, None, None, None, {}, None)


def monitor_records(progress_log: Path, mirror: ProgressMirror, at: float, n: int) -> None:
    monitor = Monitor(progress_log, mirror)
    monitor.record(
        BatchMetrics(
            n,
            3,
            2,
            1,
            1.5,
            at,
            "1",
            latencies=(0.25, 0.5, 1.0),
            error_reasons={"empty": 1},
            answers=1,
            answer_latencies=(0.75,),
        )
    )


def local_settings(tmp_path: Path) -> Settings:
    return Settings.load(env={}, state_dir=tmp_path, checkpoint=str(tmp_path / "checkpoint"))


def test_the_mirror_holds_what_the_local_lines_hold_and_survives_a_restart(tmp_path: Path) -> None:
    settings = local_settings(tmp_path)
    first = ProgressMirror.under_checkpoint(settings)
    monitor_records(settings.progress_log, first, T0 + 10, 0)
    first.add({"event": "model_swap", "from_version": "1", "to_version": "2", "at": T0 + 20})
    monitor_records(settings.progress_log, first, T0 + MIRROR_SEGMENT_S + 5, 1)  # the next segment
    first.flush()
    assert sorted(p.name for p in (tmp_path / "checkpoint" / "progress").iterdir()) == [
        f"{int(T0)}.json",
        f"{int(T0) + MIRROR_SEGMENT_S}.json",
    ]

    second = ProgressMirror.under_checkpoint(settings)  # the stream restarted within the same segment
    monitor_records(settings.progress_log, second, T0 + MIRROR_SEGMENT_S + 50, 2)
    second.flush()

    mirrored = read_mirrored_progress(settings, since=T0, until=T0 + 2 * MIRROR_SEGMENT_S)
    assert [b["batch"] for b in mirrored[0]] == [0, 1, 2] and len(mirrored[1]) == 1
    local_batches, _ = read_progress(settings.progress_log)
    assert json.dumps(mirrored[0]) == json.dumps(local_batches) and mirrored[1][0]["to_version"] == "2"
    assert mirrored[0][0]["latencies_ms"] == [250, 500, 1000] and mirrored[0][0]["answer_latencies_ms"] == [750]
    window = read_mirrored_progress(settings, since=T0 + MIRROR_SEGMENT_S, until=T0 + 2 * MIRROR_SEGMENT_S)
    assert [b["batch"] for b in window[0]] == [1, 2] and window[1] == []

    stats = ops_window(settings, seconds=MIRROR_SEGMENT_S * 2, now=T0 + MIRROR_SEGMENT_S + 60)
    assert (stats["batches"], stats["files"], stats["answers"], stats["error_reasons"]) == (3, 9, 3, {"empty": 3})


def test_old_segments_are_pruned(tmp_path: Path) -> None:
    settings = local_settings(tmp_path)
    mirror = ProgressMirror.under_checkpoint(settings)
    monitor_records(settings.progress_log, mirror, T0 - MIRROR_RETENTION_S - MIRROR_SEGMENT_S, 0)
    mirror.flush()
    monitor_records(settings.progress_log, mirror, T0 - MIRROR_RETENTION_S + 1, 1)  # just inside the retention
    monitor_records(settings.progress_log, mirror, T0, 2)
    mirror.flush()
    names = sorted(p.name for p in (tmp_path / "checkpoint" / "progress").iterdir())
    assert names == [f"{int(T0 - MIRROR_RETENTION_S)}.json", f"{int(T0)}.json"]


def test_the_mirror_on_s3(moto_server: str, tmp_path: Path) -> None:
    bucket = f"ops-{time.monotonic_ns()}"
    boto3.client("s3", endpoint_url=moto_server, region_name="eu-west-3").create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"}
    )
    settings = Settings.load(
        env={}, state_dir=tmp_path, checkpoint=f"s3a://{bucket}/checkpoints/stream", s3_endpoint_url=moto_server
    )
    mirror = ProgressMirror.under_checkpoint(settings)
    now = time.time()
    monitor_records(settings.progress_log, mirror, now - 30, 0)
    mirror.flush()
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=moto_server, region_name="eu-west-3").list_objects_v2(Bucket=bucket)[
            "Contents"
        ]
    ]
    assert keys == [f"checkpoints/stream/progress/{int((now - 30) // MIRROR_SEGMENT_S * MIRROR_SEGMENT_S)}.json"]
    assert ops_window(settings, seconds=3600)["files"] == 3


@pytest.mark.parametrize("checkpoint", ["hdfs://namenode/checkpoint"])
def test_a_checkpoint_the_mirror_cannot_use_means_no_mirror(tmp_path: Path, checkpoint: str) -> None:
    assert ProgressMirror.under_checkpoint(Settings.load(env={}, state_dir=tmp_path, checkpoint=checkpoint)) is None
