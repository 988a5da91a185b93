"""Labels from the public: votes, the community's agreement, the curator's decisions. Spark-free.

Two append-only Delta tables, storage by URI like the lake (`Settings.labels_uri`, `curation_uri`):

- the vote log: one row per vote (upload id, label, a pseudonymous client id, time, the model
  version that answered). A client's later vote on an upload replaces its earlier one when the
  rule reads the log (nothing is updated in place: the log is the history).
- the curator's decisions: who, when, what. The latest decision on a subject (an upload, or a
  name) wins, so every decision is reversed by a later one ("reopen" hands it back to the votes).

The agreement rule (`verdicts`) is pure: iNaturalist's "research grade" — at least `min_clients`
distinct clients name the same fruit, and they are more than `share` of the clients who voted on
that upload — on consented uploads only; a curator's accept or reject overrides it. One client
can therefore never carry a label alone, whatever it sends.

The tables are read and written with delta-rs (`fruits.lake`), imported when a table is first touched:
the app's Lambda package cannot hold delta-rs beside pyarrow within Lambda's 250 MB (134 MB for its
library alone), so there `LabelStore.available` is False and the app says votes are not collected.

Names are normalised before they are stored (`canonical_name`): case, spaces, accents, and a
typo-tolerant match (difflib's ratio) against the known names (the model's classes and names a
curator accepted), so "passion fruit", "Passion  Fruit" and "Pasion fruit" are one fruit once the
model knows it. New names are NOT matched against each other (the first spelling would win):
spelling variants of a new fruit are the curator's to merge.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from fruits.appuploads import CONSENTED_PATH_PATTERN
from fruits.exceptions import FruitsError
from fruits.settings import Settings

log = logging.getLogger(__name__)

# Curator actions. On an upload: ACCEPT (with a label), REJECT, REOPEN. On a name: ACCEPT (a known name
# from now on), REJECT (its votes never count), MERGE / RENAME (its votes count as `target`), REOPEN.
ACCEPT, REJECT, MERGE, RENAME, REOPEN = "accept", "reject", "merge", "rename", "reopen"
UPLOAD_ACTIONS = (ACCEPT, REJECT, REOPEN)
NAME_ACTIONS = (ACCEPT, REJECT, MERGE, RENAME, REOPEN)
UPLOAD, NAME = "upload", "name"
# Verdict statuses
AGREED, ACCEPTED, REJECTED, DISPUTED = "agreed", "accepted", "rejected", "disputed"

MAX_NAME_CHARS = 40
TYPO_CUTOFF = 0.85  # difflib ratio: "pasion fruit" ~ "passion fruit" 0.96, "plum" ~ "plum 2" 0.8 (two fruits)
_NAME_CHARS = re.compile(r"^[a-z0-9' -]+$")

VOTES = pa.schema(
    [
        ("upload_id", pa.string()),
        ("label", pa.string()),
        ("client", pa.string()),
        ("voted_at", pa.timestamp("us", tz="UTC")),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("consent", pa.bool_()),
    ]
)
DECISIONS = pa.schema(
    [
        ("decided_at", pa.timestamp("us", tz="UTC")),
        ("curator", pa.string()),
        ("subject", pa.string()),
        ("key", pa.string()),
        ("action", pa.string()),
        ("label", pa.string()),
    ]
)


# ----------------------------------------------------------------------------- names
def name_key(text: str) -> str:
    """What two spellings of one name share: no accents, lower case, single spaces ('Pêche  plate' -> 'peche plate')."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return " ".join(plain.casefold().replace("_", " ").split())


def canonical_name(text: str, known: Iterable[str]) -> str:
    """The known name `text` means (exactly, or within a typo), else `text` as a new name ('passion fruit' ->
    'Passion Fruit'). Raises FruitsError for what cannot be a fruit's name."""
    key = name_key(text)
    if not key or len(key) > MAX_NAME_CHARS or not _NAME_CHARS.match(key) or not re.search(r"[a-z]", key):
        raise FruitsError(f"a fruit's name is 1 to {MAX_NAME_CHARS} letters, digits, spaces, ' or -")
    by_key = {name_key(name): name for name in known}
    if key in by_key:
        return by_key[key]
    close = difflib.get_close_matches(key, list(by_key), n=1, cutoff=TYPO_CUTOFF)
    if close:
        return by_key[close[0]]
    return " ".join(word[:1].upper() + word[1:] for word in key.split(" "))


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Vote:
    upload_id: str
    label: str
    client: str  # pseudonymous: an HMAC of the browser's random cookie (never an address)
    voted_at: datetime
    model_name: str | None = None
    model_version: str | None = None
    consent: bool = True


@dataclass(frozen=True)
class Decision:
    decided_at: datetime
    curator: str
    subject: str  # UPLOAD or NAME
    key: str  # the upload id, or the name
    action: str
    label: str | None = None  # UPLOAD ACCEPT: the label; NAME MERGE/RENAME: the target name


def now() -> datetime:
    return datetime.now(UTC)


def decision(curator: str, subject: str, key: str, action: str, label: str | None = None) -> Decision:
    """A checked decision: the action fits the subject, and a label is there where the action needs one."""
    if subject not in (UPLOAD, NAME):
        raise FruitsError(f"a decision is about an {UPLOAD} or a {NAME}, not {subject!r}")
    allowed = UPLOAD_ACTIONS if subject == UPLOAD else NAME_ACTIONS
    if action not in allowed:
        raise FruitsError(f"on a {subject}: {', '.join(allowed)}; not {action!r}")
    needs_label = (subject, action) in ((UPLOAD, ACCEPT), (NAME, MERGE), (NAME, RENAME))
    if needs_label != bool(label):
        raise FruitsError(f"{subject} {action} {'needs' if needs_label else 'takes no'} label")
    if not curator.strip():
        raise FruitsError("a decision says who made it")
    return Decision(now(), curator.strip(), subject, key, action, label or None)


# ----------------------------------------------------------------------------- the rule (pure)
@dataclass(frozen=True)
class Verdict:
    upload_id: str
    status: str  # AGREED / ACCEPTED: `label` trains; REJECTED; DISPUTED (votes, no agreement yet)
    label: str | None
    tally: tuple[tuple[str, int], ...]  # (label, clients), most first: each client's latest vote, names resolved

    @property
    def trains(self) -> bool:
        return self.status in (AGREED, ACCEPTED)


def latest_votes(votes: Iterable[Vote]) -> dict[tuple[str, str], Vote]:
    """Each client's latest vote per upload: a later vote replaces the earlier one."""
    latest: dict[tuple[str, str], Vote] = {}
    for vote in sorted(votes, key=lambda v: v.voted_at):
        latest[(vote.upload_id, vote.client)] = vote
    return latest


def latest_decisions(decisions: Iterable[Decision]) -> dict[tuple[str, str], Decision]:
    """The decision in force per subject: the latest (a REOPEN hands the subject back to the votes)."""
    latest: dict[tuple[str, str], Decision] = {}
    for one in sorted(decisions, key=lambda d: d.decided_at):
        latest[(one.subject, one.key)] = one
    return {key: one for key, one in latest.items() if one.action != REOPEN}


def name_resolver(decisions: Mapping[tuple[str, str], Decision]):
    """name -> the name its votes count as (merges and renames followed; None for a rejected name)."""

    def resolve(name: str) -> str | None:
        seen = set()
        while (NAME, name) in decisions and name not in seen:
            seen.add(name)
            one = decisions[(NAME, name)]
            if one.action == REJECT:
                return None
            if one.action not in (MERGE, RENAME):
                return name
            name = one.label
        return name

    return resolve


def accepted_names(decisions: Iterable[Decision]) -> set[str]:
    """Names a curator accepted (or merged/renamed into): known names from now on, for the typo match."""
    in_force = latest_decisions(decisions)
    return {
        d.key if d.action == ACCEPT else d.label
        for (subject, _), d in in_force.items()
        if subject == NAME and d.action in (ACCEPT, MERGE, RENAME)
    }


def verdicts(
    votes: Iterable[Vote],
    decisions: Iterable[Decision],
    consented: Collection[str],
    *,
    min_clients: int = 2,
    share: float = 2 / 3,
) -> dict[str, Verdict]:
    """Per upload: whether a label trains, and why. Only `consented` uploads can ever train."""
    in_force = latest_decisions(decisions)
    resolve = name_resolver(in_force)
    tallies: dict[str, Counter] = {}
    for (upload_id, _), vote in latest_votes(votes).items():
        label = resolve(vote.label)
        counter = tallies.setdefault(upload_id, Counter())  # a vote for a rejected name still counts as voted
        if label is not None:
            counter[label] += 1
    subjects = set(tallies) | {key for subject, key in in_force if subject == UPLOAD}
    result = {}
    for upload_id in subjects:
        tally = tallies.get(upload_id, Counter())
        ranked = tuple(sorted(tally.items(), key=lambda item: (-item[1], item[0])))
        ruling = in_force.get((UPLOAD, upload_id))
        if upload_id not in consented:
            status, label = REJECTED, None
        elif ruling is not None and ruling.action == ACCEPT:
            status, label = ACCEPTED, resolve(ruling.label) or ruling.label
        elif ruling is not None:
            status, label = REJECTED, None
        elif ranked and ranked[0][1] >= min_clients and ranked[0][1] > share * sum(tally.values()):
            status, label = AGREED, ranked[0][0]
        else:
            status, label = DISPUTED, None
        result[upload_id] = Verdict(upload_id, status, label, ranked)
    return result


def training_labels(found: Mapping[str, Verdict]) -> dict[str, str]:
    """upload id -> label, for the uploads whose label trains."""
    return {upload_id: v.label for upload_id, v in found.items() if v.trains and v.label}


@dataclass(frozen=True)
class Selection:
    """What the refit takes from the accepted app labels: upload id -> label, to train on and to evaluate on
    (split by upload: no photo is in both), and the new names still short of images (name -> accepted images)."""

    train: dict[str, str]
    held_out: dict[str, str]
    waiting: dict[str, int]


def select_for_refit(
    labels: Mapping[str, str],
    known_classes: Collection[str],
    *,
    min_images: int,
    holdout_share: float,
    order: Mapping[str, str] | None = None,
) -> Selection:
    """A new class enters once it has `min_images` accepted images. Of each class's accepted images,
    floor(n * holdout_share) are held out for the evaluation: the first by `order` (upload id -> key; the refit
    passes a hash of the photo's features, so the choice is stable from one refit to the next, not chosen by
    whoever voted, and the same photo uploaded twice falls on the same side), else by a hash of the upload id.
    The held-out ones are what the champion/challenger gate sees of a new fruit."""
    by_label: dict[str, list[str]] = {}
    for upload_id, label in labels.items():
        by_label.setdefault(label, []).append(upload_id)
    train, held_out, waiting = {}, {}, {}
    for label, ids in by_label.items():
        if label not in known_classes and len(ids) < min_images:
            waiting[label] = len(ids)
            continue
        ids.sort(key=lambda i: (order or {}).get(i) or hashlib.sha256(i.encode()).hexdigest())
        held = int(len(ids) * holdout_share)
        held_out.update((i, label) for i in ids[:held])
        train.update((i, label) for i in ids[held:])
    return Selection(train, held_out, waiting)


# ----------------------------------------------------------------------------- the curator's queue
@dataclass(frozen=True)
class ProposedName:
    """A name the model does not know yet, the uploads voted under it, and the proposed name nearest to it in
    feature space (the mean MobileNetV2 features of its uploads): two spellings of one fruit come out near."""

    name: str
    uploads: tuple[str, ...]
    votes: int
    nearest: str | None = None
    similarity: float | None = None  # cosine of the two names' mean features


def proposed_names(
    found: Mapping[str, Verdict], known: Collection[str], features: Mapping[str, np.ndarray]
) -> list[ProposedName]:
    """New names in the votes, in an order where each is followed by the nearest one not listed yet."""
    uploads: dict[str, list[str]] = {}
    votes: Counter = Counter()
    for upload_id, verdict in found.items():
        for label, clients in verdict.tally:
            if label not in known:
                uploads.setdefault(label, []).append(upload_id)
                votes[label] += clients
    centroids = {}
    for name, ids in uploads.items():
        vectors = [features[i] for i in ids if i in features]
        if vectors:
            mean = np.mean(vectors, axis=0)
            centroids[name] = mean / (np.linalg.norm(mean) or 1.0)
    similarity = {(a, b): float(centroids[a] @ centroids[b]) for a in centroids for b in centroids if a != b}
    nearest = {
        a: max((b for b in centroids if b != a), key=lambda b: similarity[(a, b)], default=None) for a in centroids
    }
    ordered: list[str] = []
    remaining = sorted(uploads, key=lambda name: (-votes[name], name))
    while remaining:
        last = ordered[-1] if ordered else None
        near = [b for b in remaining if last in centroids and b in centroids]
        pick = max(near, key=lambda b: similarity[(last, b)]) if near else remaining[0]
        ordered.append(pick)
        remaining.remove(pick)
    return [
        ProposedName(
            name,
            tuple(sorted(uploads[name])),
            votes[name],
            nearest.get(name),
            similarity.get((name, nearest[name])) if nearest.get(name) else None,
        )
        for name in ordered
    ]


def upload_features(settings: Settings, upload_ids: Collection[str]) -> dict[str, np.ndarray]:
    """The 1280 features the stream stored for these consented uploads (results table, read with delta-rs)."""
    from fruits import lake

    table = lake.open_table(settings, settings.output_uri)
    if table is None or not upload_ids:
        return {}
    wanted = "(" + "|".join(sorted(i for i in upload_ids if re.fullmatch(r"[0-9a-f]{32}", i))) + ")"
    pattern = CONSENTED_PATH_PATTERN.replace("([0-9a-f]{32})", wanted)
    rows = (
        table.to_pyarrow_dataset()
        .to_table(columns=["path", "features"], filter=pc.match_substring_regex(ds.field("path"), pattern))
        .to_pylist()
    )
    return {
        re.search(CONSENTED_PATH_PATTERN, row["path"])[1]: np.asarray(row["features"], dtype=np.float32)
        for row in rows
        if row["features"] is not None
    }


# ----------------------------------------------------------------------------- the tables
def delta_installed() -> bool:
    try:
        return importlib.util.find_spec("deltalake") is not None
    except ImportError:  # an import hook that refuses it
        return False


class LabelStore:
    """The vote log and the curator's decisions, as Delta tables at the settings' URIs."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.available = delta_installed()  # see the module doc

    @property
    def _lake(self):
        from fruits import lake  # delta-rs: only where the tables are used (see the module doc)

        return lake

    def add_votes(self, votes: Iterable[Vote]) -> int:
        return self._append(self.settings.labels_uri, VOTES, [asdict(v) for v in votes])

    def add_decisions(self, decisions: Iterable[Decision]) -> int:
        return self._append(self.settings.curation_uri, DECISIONS, [asdict(d) for d in decisions])

    def votes(self) -> list[Vote]:
        return [Vote(**row) for row in self._lake.read_table(self.settings, self.settings.labels_uri).to_pylist()]

    def decisions(self) -> list[Decision]:
        return [Decision(**row) for row in self._lake.read_table(self.settings, self.settings.curation_uri).to_pylist()]

    def verdicts(self, votes: list[Vote] | None = None, decisions: list[Decision] | None = None) -> dict[str, Verdict]:
        """The rule on the stored tables (or on `votes` and `decisions` already read from them). Consent is
        what each vote recorded from the stream's answer; the refit checks it again on the upload's path."""
        votes = self.votes() if votes is None else votes
        decisions = self.decisions() if decisions is None else decisions
        return verdicts(
            votes,
            decisions,
            {v.upload_id for v in votes if v.consent},
            min_clients=self.settings.label_min_clients,
            share=self.settings.label_agreement,
        )

    def _append(self, uri: str, schema: pa.Schema, rows: list[dict]) -> int:
        if rows:
            from deltalake import write_deltalake

            lake = self._lake
            write_deltalake(
                lake.table_uri(uri),
                pa.Table.from_pylist(rows, schema=schema),
                mode="append",
                storage_options=lake.storage_options(self.settings, uri) or None,
                configuration=lake.TABLE_CONFIGURATION,
            )
        return len(rows)
