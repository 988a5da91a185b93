"""The stream's ops numbers over a window of time: ONE computation for `fruits report` and the app's /ops.

    stream_stats(batches: list[dict], swaps: list[dict], since: float | None = None,
                 until: float | None = None) -> dict

`batches`, `swaps`: progress records (streaming.monitor), as `read_progress(path)` returns them from
the stream's local JSON lines, or `read_mirrored_progress(settings, since)` from the copy under the
checkpoint (what a reader away from the stream's driver uses: the app while the stream runs on
EMR). `since`/`until` (epoch seconds) bound the window; `ops_window(settings, seconds)` is both
steps for "the last hour". Keys of the result (null where the window holds nothing to measure):

  window_start, window_end   epoch seconds: since (else the first batch's start), until (else the last commit)
  batches, files, rows, errors    micro-batches that committed input; files read; results rows; error rows
  files_per_s                files / the window's length (uploads per second, idle time included)
  busy_files_per_s           files / the seconds the batches took (what the stream sustains while working)
  latency_p50_s, latency_p95_s, latency_max_s   upload -> commit, every file (exact, from per-file latencies)
  answers                    app uploads answered or rejected in the answers store (streaming.answers)
  answer_latency_p50_s, answer_latency_p95_s    upload -> answer written, app uploads only
  error_reasons              {reason: error rows}, most frequent first
  class_mix                  {predicted class: results rows}, most frequent first
  novel_fraction             share of results rows flagged is_novel (rows of a model with a threshold)
  mean_confidence            mean confidence of the predictions
  model_version              the version the latest batch used; model_versions: every version, in order of use
  model_swaps                [{"from_version", "to_version", "at"}] in the window

Batches written before these numbers existed (no per-file latencies, no error reasons) count in
the totals and leave the percentiles and reasons to the batches that have them.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np

from fruits.settings import Settings
from streaming.monitor import read_mirrored_progress, select


def stream_stats(
    batches: list[dict], swaps: list[dict], since: float | None = None, until: float | None = None
) -> dict[str, Any]:
    """The ops numbers of the batches and swaps within [since, until] (see the module docstring for the keys)."""
    batches, swaps = select([*batches, *swaps], since, until)
    batches.sort(key=lambda b: b["committed_at"])
    start = since if since is not None else (batches[0]["committed_at"] - batches[0]["seconds"] if batches else None)
    end = until if until is not None else (batches[-1]["committed_at"] if batches else None)
    files = sum(b["files"] for b in batches)
    busy = sum(b["seconds"] for b in batches)
    predictions: Counter = Counter()
    judged = novel = confidence = predicted = 0.0
    for b in batches:
        if b.get("predictions"):
            predictions.update(b["predictions"])
            confidence += b["mean_confidence"] * b["rows"]
            predicted += b["rows"]
            if b.get("novel_fraction") is not None:
                judged += b["rows"]
                novel += b["novel_fraction"] * b["rows"]
    versions = [b["model_version"] for b in batches]
    return {
        "window_start": start,
        "window_end": end,
        "batches": len(batches),
        "files": files,
        "rows": sum(b["rows"] for b in batches),
        "errors": sum(b["errors"] for b in batches),
        "files_per_s": round(files / (end - start), 3) if batches and end > start else None,
        "busy_files_per_s": round(files / busy, 1) if busy else None,
        **percentiles_ms([b.get("latencies_ms") or [] for b in batches], "latency", with_max=True),
        "answers": sum(b.get("answers", 0) for b in batches),
        **percentiles_ms([b.get("answer_latencies_ms") or [] for b in batches], "answer_latency"),
        "error_reasons": most_frequent_first(sum((Counter(b.get("error_reasons") or {}) for b in batches), Counter())),
        "class_mix": most_frequent_first(predictions),
        "novel_fraction": round(novel / judged, 4) if judged else None,
        "mean_confidence": round(confidence / predicted, 4) if predicted else None,
        "model_version": versions[-1] if versions else None,
        "model_versions": [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v],
        "model_swaps": [
            {"from_version": s["from_version"], "to_version": s["to_version"], "at": s["at"]} for s in swaps
        ],
    }


def ops_window(settings: Settings, seconds: float = 3600.0, now: float | None = None) -> dict[str, Any]:
    """The ops numbers of the last `seconds`, from the progress the stream mirrors under its checkpoint."""
    now = time.time() if now is None else now
    batches, swaps = read_mirrored_progress(settings, now - seconds, now)
    return stream_stats(batches, swaps, since=now - seconds, until=now)


def percentiles_ms(per_batch: list[list[int]], name: str, with_max: bool = False) -> dict[str, float | None]:
    values = np.fromiter((v for batch in per_batch for v in batch), dtype=float) / 1000.0
    out = {
        f"{name}_p50_s": round(float(np.percentile(values, 50)), 3) if len(values) else None,
        f"{name}_p95_s": round(float(np.percentile(values, 95)), 3) if len(values) else None,
    }
    if with_max:
        out[f"{name}_max_s"] = round(float(values.max()), 3) if len(values) else None
    return out


def most_frequent_first(counts: Counter) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
