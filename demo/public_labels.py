"""The public teaches the model new fruits, told end to end (issue 23): `python -m demo.public_labels`.

1. fit on subset/ (the champion flags fruits it never saw), start the stream and the app, stream stream/;
2. send 5 photos of each of the 8 extra_classes/ fruits through the app: "a fruit I don't know yet";
3. simulated visitors name them through the page's endpoints: 3 browsers a photo, with case and spacing
   variants and misspellings, a 4th browser voting a random wrong fruit on a quarter of them, and an attacker
   voting "Banana" alone on photos of its own;
4. a curator, logged in on /curate, merges the misspellings into the names they are nearest to;
5. `fruits refit` learns the agreed labels; the running stream swaps to it;
6. the other 5 photos of each new fruit, sent through the app, come back with their names.
Prints before/after and saves a plot (<state>/demo/labels-*/labels.png). The steps' helpers are shared with
tests/app/test_labels_learnt.py.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import logging
import random
import secrets
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from app.main import create_app
from app.serve import BackgroundServer
from demo.run import fit_on_subset, new_run_dir, owned_spark, stop_stream, wait_for_first_trigger
from demo.visitors import Visitor
from fruits.labels import name_key
from fruits.settings import Settings
from fruits.upload import land

log = logging.getLogger("fruits.demo")
LABELLED = 5  # photos of each new fruit the visitors name; the others are asked after the refit
# How the 3 visitors write a fruit's name, and the misspellings one of them makes.
SPELLINGS = (lambda name: name, lambda name: f"  {name.lower()} ", lambda name: name.upper())
MISSPELT = {"Passion Fruit": "Pasion fruit", "Pomelo Sweetie": "pomelo sweety"}
ATTACK = "Banana"
ANSWER_TIMEOUT_S = 180.0
TYPO = 0.8  # the curator merges proposed names this close in spelling (difflib ratio) and near in feature space
NEAR = 0.9  # cosine of the names' mean features


def send_photos(visitor: Visitor, photos: list[Path]) -> list[str]:
    """Send photos through the app (consented), wait for each answer; their upload ids."""
    ids = []
    for photo in photos:
        status, upload_id = visitor.send(photo.read_bytes(), consent=True)
        if status != 201:
            raise RuntimeError(f"the app refused {photo}: HTTP {status}")
        ids.append(upload_id)
    for upload_id in ids:
        if visitor.wait_for_answer(upload_id, timeout=ANSWER_TIMEOUT_S) is None:
            raise RuntimeError(f"no answer for {upload_id} within {ANSWER_TIMEOUT_S:.0f} s")
    return ids


def vote(visitor: Visitor, upload_id: str, label: str) -> None:
    sent = visitor.post(f"/api/answers/{upload_id}/vote", json={"label": label})
    if sent.status_code != 200:
        raise RuntimeError(f"vote refused: {sent.status_code} {sent.text}")


def visitors_name(
    url: str,
    labelled: dict[str, str],
    attacker_own: list[str],
    *,
    wrong_share: float = 0.0,
    names: list[str] = (),
    attacker_everywhere: bool = True,
    seed: int = 0,
) -> Counter:
    """3 visitors name each photo (spelling variants, MISSPELT), a 4th votes a wrong fruit on `wrong_share` of
    them, the attacker votes ATTACK alone on `attacker_own` (and on every photo with `attacker_everywhere`).
    Returns the votes sent by kind."""
    rng = random.Random(seed)
    people, wrong, attacker = [Visitor(url) for _ in SPELLINGS], Visitor(url), Visitor(url)
    sent: Counter = Counter()
    for upload_id, fruit in labelled.items():
        for person, spelling in zip(people, SPELLINGS, strict=True):
            vote(person, upload_id, spelling(fruit))
            sent["honest"] += 1
        if fruit in MISSPELT:
            vote(people[2], upload_id, MISSPELT[fruit])  # replaces that visitor's earlier vote
            sent["misspelt"] += 1
        if rng.random() < wrong_share:
            vote(wrong, upload_id, rng.choice([n for n in names if n != fruit]))
            sent["wrong"] += 1
        if attacker_everywhere:
            vote(attacker, upload_id, ATTACK)
            sent["attacker"] += 1
    for upload_id in attacker_own:
        vote(attacker, upload_id, ATTACK)
        sent["attacker alone"] += 1
    return sent


def curator_merges_spellings(curator: Visitor) -> list[dict[str, Any]]:
    """What a curator does on /curate: each proposed name that is a misspelling of the name nearest to it in
    feature space (close in spelling too) is merged into the better-supported one. Returns the decisions."""
    queue = curator.get("/api/curate").json()
    votes = {n["name"]: n["votes"] for n in queue["names"]}
    decisions = []
    for proposed in queue["names"]:
        name, nearest = proposed["name"], proposed["nearest"]
        if not nearest or (proposed["similarity"] or 0) < NEAR or votes[name] > votes.get(nearest, 0):
            continue
        if difflib.SequenceMatcher(None, name_key(name), name_key(nearest)).ratio() >= TYPO:
            decision = {"subject": "name", "key": name, "action": "merge", "label": nearest}
            made = curator.post("/api/curate/decisions", json=decision)
            if made.status_code != 201:
                raise RuntimeError(f"decision refused: {made.text}")
            decisions.append(made.json())
    return decisions


def ask(visitor: Visitor, photos: dict[str, list[Path]]) -> list[dict[str, Any]]:
    """Send each photo through the app; what the page's answer says about it."""
    asked = []
    for fruit, paths in photos.items():
        for upload_id in send_photos(visitor, paths):
            view = visitor.get(f"/api/answers/{upload_id}").json()
            asked.append(
                {
                    "fruit": fruit,
                    "prediction": view.get("prediction"),
                    "title": view["title"],
                    "model": view.get("model"),
                    "novel": view.get("is_novel"),
                }
            )
    return asked


def plot(before: list[dict], after: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fruits = sorted({a["fruit"] for a in after})
    share = {
        name: [
            sum(a["prediction"] == f for a in rows if a["fruit"] == f) / max(1, sum(a["fruit"] == f for a in rows))
            for f in fruits
        ]
        for name, rows in (("before", before), ("after", after))
    }
    fig, ax = plt.subplots(figsize=(9, 4))
    xs = range(len(fruits))
    ax.bar([x - 0.2 for x in xs], share["before"], 0.4, label="before the public named them")
    ax.bar([x + 0.2 for x in xs], share["after"], 0.4, label="after the refit on the public's labels")
    ax.set_xticks(list(xs), fruits, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of photos named right")
    ax.set_title("New fruits named by the public, learnt by the refit (other photos of each)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(settings: Settings, images: Path) -> dict[str, Any]:
    from fit.refit import refit
    from streaming.job import StreamingJob

    work = new_run_dir(settings, "labels")
    token = secrets.token_hex(24)
    run_settings = settings.replace(
        source=str(work / "landing"),
        output=str(work / "results"),
        errors=str(work / "errors"),
        checkpoint=str(work / "checkpoint"),
        answers=f"sqlite:///{work / 'answers.db'}",
        labels=str(work / "labels"),
        curation=str(work / "curation"),
        model_name="fruits-labels-demo",
        trigger="1s",
        model_refresh_interval="1s",
        app_uploads_per_minute=1000,
        app_votes_per_minute=1000,
        curators=f"curator:{token}",
    )
    draw = random.Random(23)
    fruits = sorted(p.name for p in (images / "extra_classes").iterdir() if p.is_dir())
    photos = {f: draw.sample(sorted((images / "extra_classes" / f).glob("*.jpg")), 10) for f in fruits}
    with contextlib.ExitStack() as stack:
        spark = owned_spark(stack, run_settings, [run_settings.output_uri])
        fitted = fit_on_subset(run_settings, images, spark, progress=False)
        job = StreamingJob(run_settings, spark=spark)
        job.start()
        stack.callback(stop_stream, job)
        wait_for_first_trigger(job)
        for image in sorted((images / "stream").glob("*/*.jpg")):  # the team's labelled uploads
            land(image.read_bytes(), Path(run_settings.source_uri) / image.parent.name / image.name)
        server = stack.enter_context(BackgroundServer(create_app(run_settings)))
        print(
            f"the app is on {server.url}/ ; the curator's queue on {server.url}/curate (user curator, token {token})",
            flush=True,
        )
        uploader = Visitor(server.url)
        before = ask(uploader, {f: photos[f][LABELLED:] for f in fruits})
        labelled = {}
        for fruit in fruits:
            labelled.update((i, fruit) for i in send_photos(uploader, photos[fruit][:LABELLED]))
        attacker_own = send_photos(uploader, sorted((images / "stream" / "Apple Red 1").glob("*.jpg"))[:4])
        known = sorted(p.name for p in (images / "subset").iterdir() if p.is_dir())
        sent = visitors_name(
            server.url, labelled, attacker_own, wrong_share=0.25, names=known + fruits, attacker_everywhere=False
        )
        curator = Visitor(server.url)
        curator.http.auth = ("curator", token)
        merges = curator_merges_spellings(curator)
        counts = curator.get("/api/curate").json()["counts"]
        summary = refit(run_settings, str(images / "test"), spark=spark, progress=False)
        after = []
        if summary["promoted"]:
            while job.resolved.version != summary["model_version"]:
                job.raise_if_failed()
                time.sleep(0.5)
            after = ask(Visitor(server.url), {f: photos[f][LABELLED:] for f in fruits})
    right = {
        name: sum(a["prediction"] == a["fruit"] for a in rows) / len(rows)
        for name, rows in (("before", before), ("after", after))
        if rows
    }
    report = {
        "fruits": fruits,
        "votes": dict(sent),
        "merges": [(m["key"], m["label"]) for m in merges],
        "labels": counts,
        "refit": {
            k: summary[k]
            for k in (
                "model_version",
                "promoted",
                "classes",
                "eval_images_accuracy",
                "app_held_out_accuracy",
                "champion_classifier_accuracy",
                "app_labels_trained",
                "app_labels_held_out",
                "app_names_waiting",
            )
        },
        "fit_test_accuracy": fitted.get("classifier_accuracy"),
        "new_fruits_named_right": right,
        "unknown_before": sum(bool(a["novel"]) for a in before) / len(before),
        "unknown_after": sum(bool(a["novel"]) for a in after) / len(after) if after else None,
        "plot": str(plot(before, after, work / "labels.png")) if after else None,
    }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--images",
        type=Path,
        metavar="DIR",
        help="subset/, stream/, test/, extra_classes/ (default $FRUITS_DATA, else ../shared/data/fruits360)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)  # one line per Python<->JVM call otherwise
    from demo.__main__ import images_root

    report = run(Settings.load(), images_root(args.images))
    r = report["refit"]
    print(
        f"\nbefore: {report['unknown_before']:.0%} of the new fruits' photos were 'a fruit I don't know yet'; "
        f"{report['new_fruits_named_right'].get('before', 0):.0%} named right"
    )
    print(f"votes sent: {report['votes']}; the curator merged {report['merges']}; labels {report['labels']}")
    print(
        f"refit v{r['model_version']}: {r['classes']} classes, promoted {r['promoted']}, test/ accuracy "
        f"{r['eval_images_accuracy']:.3f} (fit on subset/: {report['fit_test_accuracy']:.3f}), "
        f"{r['app_labels_trained']} app labels trained, {r['app_labels_held_out']} held out"
    )
    print(
        f"after: {report['new_fruits_named_right'].get('after', 0):.0%} of the other photos of the new fruits "
        f"predicted right ({report['unknown_after'] or 0:.0%} still flagged unknown); plot {report['plot']}"
    )
    print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
