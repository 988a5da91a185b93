"""Labels from the public, simulated: what reaches the training data, and what the refit then learns.

Works on features directly (the app and the stream are tested end to end in tests/app/test_labels_learnt.py):
every image is featurized once (MobileNetV2, ONNX, cached per featurizer), then for each of 3 draws of which
5 photos of each extra_classes/ fruit are labelled (the other 5 are asked after the refit), votes are
simulated and go through the same code as the app's: fruits.labels.verdicts (>= 2 clients, > 2/3 agree),
select_for_refit (a new class with >= FRUITS_LABEL_MIN_IMAGES accepted images; 1 in 5 held out by upload, but
never below that minimum),
and the refit's training path (subset/ + stream/ as the lake's labelled rows, + the accepted app labels ->
fit.pipeline.fit_model in Spark). The champion/challenger decision is the refit's (fit.refit.decide) on the
same held-out rows: test/ + the app's held-out labels.

Scenarios, each on the same draws:
- clean: 3 visitors name each photo right;
- noisy: 5 visitors, each vote wrong (a random other fruit) with probability 0.3;
- curated: the same votes, and a curator accepts the right label of every photo left disputed (the queue's job);
- attacker (1 client): clean + one client votes "Banana" on every photo, and alone on 20 photos of its own
  (stream/ "Apple Red 1" photos uploaded again);
- attackers (3 clients): the same from 3 browsers (3 cookies) at once.

    .venv/bin/python bench/labels.py [--draws 3]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from common import DATA, machine, project_settings, save

PER_FRUIT_LABELLED = 5
ATTACK, ATTACKER_OWN_CLASS, ATTACKER_OWN = "Banana", "Apple Red 1", 20
SCENARIOS = ("clean", "noisy", "curated", "attacker", "attackers")


def featurized(settings) -> dict[str, tuple[list[str], list[str], np.ndarray]]:
    """split -> (paths, labels, features), featurized once per featurizer (cached in the state dir)."""
    from fruits.featurize import Featurizer, featurize_batch

    featurizer = Featurizer.load(settings)
    cache = settings.cache_dir / f"bench-labels-{featurizer.spec.weights_sha256[:16]}.npz"
    if not cache.exists():
        engine = featurizer.make_engine()
        files = sorted(DATA.glob("*/*/*.jpg"))
        result = featurize_batch(engine, [f.read_bytes() for f in files], settings.max_image_pixels)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, path=np.array([str(f) for f in files]), features=np.stack(result.features))
    stored = np.load(cache)
    out: dict[str, tuple[list[str], list[str], list[np.ndarray]]] = {}
    for path, vector in zip(stored["path"], stored["features"], strict=True):
        p = Path(str(path))
        paths, labels, vectors = out.setdefault(p.parent.parent.name, ([], [], []))
        paths.append(str(p)), labels.append(p.parent.name), vectors.append(vector)
    return {split: (paths, labels, np.stack(vectors)) for split, (paths, labels, vectors) in out.items()}


def simulate(scenario: str, uploads: dict[str, str], own: list[str], names: list[str], rng: random.Random):
    """Votes (fruits.labels.Vote) for `uploads` (id -> truth) and the attacker's `own` uploads."""
    from fruits.labels import Vote, now

    votes, t = [], now()
    visitors = 5 if scenario == "noisy" else 3
    for upload_id, truth in uploads.items():
        for client in range(visitors):
            wrong = scenario == "noisy" and rng.random() < 0.3
            label = rng.choice([n for n in names if n != truth]) if wrong else truth
            votes.append(Vote(upload_id, label, f"visitor-{client}", t))
    attackers = {"attacker": 1, "attackers": 3}.get(scenario, 0)
    for a in range(attackers):
        for upload_id in list(uploads) + own:
            votes.append(Vote(upload_id, ATTACK, f"attacker-{a}", t))
    return votes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=3)
    args = parser.parse_args()
    settings = project_settings(spark_master="local[2]")
    from fit import pipeline
    from fit.refit import decide
    from fruits.labels import ACCEPT, DISPUTED, UPLOAD, Decision, now, select_for_refit, training_labels, verdicts
    from fruits.project import project
    from fruits.spark import get_spark

    started = time.perf_counter()
    data = featurized(settings)
    print(
        f"featurized {sum(len(v[0]) for v in data.values())} images in {time.perf_counter() - started:.0f} s; "
        f"{machine()}",
        flush=True,
    )
    spark = get_spark(settings, "bench-labels")
    base_paths = data["subset"][0] + data["stream"][0]
    base_labels = data["subset"][1] + data["stream"][1]
    base_features = np.concatenate([data["subset"][2], data["stream"][2]])
    known_classes = sorted(set(base_labels))
    extra_paths, extra_labels, extra_features = data["extra_classes"]
    test_paths, test_labels, test_features = data["test"]
    feature_of = dict(zip(extra_paths + base_paths, list(extra_features) + list(base_features), strict=True))
    own = [p for p, label in zip(data["stream"][0], data["stream"][1], strict=True) if label == ATTACKER_OWN_CLASS][
        :ATTACKER_OWN
    ]
    names = known_classes + sorted(set(extra_labels))

    def frame(paths, labels, vectors):
        return spark.createDataFrame(
            [(p, label, v.astype(float).tolist()) for p, label, v in zip(paths, labels, vectors, strict=True)],
            "path string, label string, features array<float>",
        )

    def predict(model, paths, labels, vectors) -> list[str]:
        rows = project(frame(paths, labels, vectors), model).select("path", "prediction").toPandas()
        return rows.set_index("path").loc[paths, "prediction"].tolist()

    def accuracy(predicted, truth) -> float:
        return float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))

    runs = []
    for draw in range(args.draws):
        rng = random.Random(draw)
        labelled, asked = {}, []
        for fruit in sorted(set(extra_labels)):
            paths = sorted(p for p, label in zip(extra_paths, extra_labels, strict=True) if label == fruit)
            rng.shuffle(paths)
            labelled.update((p, fruit) for p in paths[:PER_FRUIT_LABELLED])
            asked += [(p, fruit) for p in paths[PER_FRUIT_LABELLED:]]
        champion = pipeline.fit_model(
            frame(base_paths, base_labels, base_features), settings.pca_k, rows=len(base_paths)
        )
        for scenario in SCENARIOS:
            t0 = time.perf_counter()
            voting = "noisy" if scenario == "curated" else scenario
            votes = simulate(voting, labelled, own, names, random.Random(f"{draw}-{voting}"))
            consented = set(labelled) | set(own)
            rule = {"min_clients": settings.label_min_clients, "share": settings.label_agreement}
            found = verdicts(votes, [], consented, **rule)
            if scenario == "curated":
                decisions = [
                    Decision(now(), "curator", UPLOAD, upload_id, ACCEPT, labelled[upload_id])
                    for upload_id, verdict in found.items()
                    if verdict.status == DISPUTED
                ]
                found = verdicts(votes, decisions, consented, **rule)
            accepted = training_labels(found)
            chosen = select_for_refit(
                accepted,
                known_classes,
                min_images=settings.label_min_images,
                holdout_share=settings.label_holdout_share,
            )
            truth = {**labelled, **{p: ATTACKER_OWN_CLASS for p in own}}
            train = list(chosen.train.items())
            model = pipeline.fit_model(
                frame(
                    base_paths + [p for p, _ in train],
                    base_labels + [label for _, label in train],
                    np.concatenate([base_features, np.stack([feature_of[p] for p, _ in train])])
                    if train
                    else base_features,
                ),
                settings.pca_k,
                rows=len(base_paths) + len(train),
            )
            held = list(chosen.held_out.items())
            held_paths = test_paths + [p for p, _ in held]
            held_labels = test_labels + [label for _, label in held]
            held_features = np.concatenate(
                [test_features] + ([np.stack([feature_of[p] for p, _ in held])] if held else [])
            )
            challenger_held = accuracy(predict(model, held_paths, held_labels, held_features), held_labels)
            champion_held = accuracy(predict(champion, held_paths, held_labels, held_features), held_labels)
            promoted, _ = decide(challenger_held, champion_held, force=False)
            predicted = predict(
                model, [p for p, _ in asked], [f for _, f in asked], np.stack([feature_of[p] for p, _ in asked])
            )
            predicted_test = predict(model, test_paths, test_labels, test_features)
            run = {
                "draw": draw,
                "scenario": scenario,
                "votes": len(votes),
                "agreed": len(accepted),
                "wrong_agreed": sum(truth[p] != label for p, label in accepted.items()),
                "attacker_own_agreed": sum(p in accepted for p in own),
                "trained": len(chosen.train),
                "held_out": len(chosen.held_out),
                "waiting": chosen.waiting,
                "classes": len(pipeline.classes(model)),
                "new_fruit_accuracy": accuracy(predicted, [f for _, f in asked]),
                "test_accuracy": accuracy(predicted_test, test_labels),
                "challenger_held_out_accuracy": challenger_held,
                "champion_held_out_accuracy": champion_held,
                "promoted": promoted,
                "answered_banana": Counter(predicted)[ATTACK],
                "seconds": round(time.perf_counter() - t0, 1),
            }
            runs.append(run)
            print(
                f"draw {draw} {scenario:9}  agreed {run['agreed']:3} (wrong {run['wrong_agreed']:2}, attacker's own "
                f"{run['attacker_own_agreed']:2})  trained {run['trained']:3}  classes {run['classes']}  new fruits "
                f"{run['new_fruit_accuracy']:.3f}  test/ {run['test_accuracy']:.3f}  promoted {promoted}",
                flush=True,
            )

    print("\nmean over draws             agreed  wrong  attacker's own  new-fruit acc  test/ acc  promoted")
    summary = {}
    for scenario in SCENARIOS:
        mine = [r for r in runs if r["scenario"] == scenario]
        summary[scenario] = {
            key: float(np.mean([r[key] for r in mine]))
            for key in (
                "agreed",
                "wrong_agreed",
                "attacker_own_agreed",
                "new_fruit_accuracy",
                "test_accuracy",
                "promoted",
            )
        }
        s = summary[scenario]
        print(
            f"{scenario:27} {s['agreed']:6.1f} {s['wrong_agreed']:6.1f} {s['attacker_own_agreed']:15.1f} "
            f"{s['new_fruit_accuracy']:14.3f} {s['test_accuracy']:10.3f} {s['promoted']:9.2f}"
        )
    clean = summary["clean"]["new_fruit_accuracy"]
    for scenario in SCENARIOS[1:]:
        print(f"{scenario}: new-fruit accuracy {summary[scenario]['new_fruit_accuracy'] / clean:.2f}x the clean run's")
    path = save(
        "labels",
        {
            "draws": args.draws,
            "runs": runs,
            "summary": summary,
            "settings": {
                "min_clients": settings.label_min_clients,
                "share": settings.label_agreement,
                "min_images": settings.label_min_images,
                "holdout_share": settings.label_holdout_share,
            },
        },
    )
    print(f"saved {path}")
    return 0 if clean >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
