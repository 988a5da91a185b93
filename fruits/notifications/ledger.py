"""The de-duplication ledger: which uploads are pending, planned into batch k, or committed, and
which messages wait for which batch. Pure state, no I/O: the feed persists what `plan` returns
before anyone learns its offset.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fruits.notifications.messages import Upload


@dataclass
class Held:
    """A received message not deleted yet: its latest receipt handle and the uploads it announced."""

    receipt: str
    identities: set[str]


class Ledger:
    """Which uploads are pending, planned into batch k, or committed; which messages wait for which batch.

    Only checked Uploads (fruits.notifications.messages) enter it.
    """

    def __init__(self) -> None:
        self.pending: dict[str, Upload] = {}  # insertion-ordered: oldest first
        self.known: dict[str, int] = {}  # identity -> batch (planned or committed, within retention)
        self.batches: dict[int, tuple[float, list[str]]] = {}  # batch -> (created, identities)
        self.held: dict[str, Held] = {}  # message id -> Held
        self.last_batch = 0
        self.committed = 0

    # ---------------------------------------------------------------- uploads
    def seen(self, identity: str) -> bool:
        return identity in self.pending or identity in self.known

    def offer(self, upload: Upload) -> bool:
        """Add an upload unless it is already pending, planned or committed; True if it was new."""
        if self.seen(upload.identity):
            return False
        self.pending[upload.identity] = upload
        return True

    def plan(self, limit: int | None, now: float) -> tuple[int, list[Upload]] | None:
        """The next batch: the oldest `limit` pending uploads (all with None), or None if none are pending."""
        if not self.pending:
            return None
        taken = list(self.pending.values())[:limit] if limit is not None else list(self.pending.values())
        batch = self.last_batch + 1
        for upload in taken:
            del self.pending[upload.identity]
        self.remember(batch, now, [u.identity for u in taken])
        return batch, taken

    def remember(self, batch: int, created: float, identities: list[str]) -> None:
        """A batch planned earlier (now, or before a restart: read back from the checkpoint)."""
        for identity in identities:
            self.known[identity] = batch
            self.pending.pop(identity, None)
        self.batches[batch] = (created, identities)
        self.last_batch = max(self.last_batch, batch)

    # ---------------------------------------------------------------- messages
    def hold(self, message_id: str, receipt: str, identities: Iterable[str]) -> None:
        """Keep a message until its uploads are committed. A redelivery brings a new receipt handle:
        only the latest one deletes the message."""
        held = self.held.get(message_id)
        if held is None:
            self.held[message_id] = Held(receipt, set(identities))
        else:
            held.receipt = receipt
            held.identities.update(identities)

    def waiting_batch(self, held: Held) -> int | None:
        """The batch whose commit releases the message; None while one of its uploads is still pending."""
        if any(identity in self.pending for identity in held.identities):
            return None
        return max((self.known.get(identity, 0) for identity in held.identities), default=0)

    def awaiting(self, batch: int) -> dict[str, Held]:
        """The messages that batch `batch`'s commit releases (persisted with its list)."""
        return {mid: held for mid, held in self.held.items() if self.waiting_batch(held) == batch}

    def releasable(self) -> list[tuple[str, str]]:
        """(message id, receipt) of every held message whose uploads are all committed; forgotten here."""
        done = []
        for message_id, held in list(self.held.items()):
            batch = self.waiting_batch(held)
            if batch is not None and batch <= self.committed:
                done.append((message_id, held.receipt))
                del self.held[message_id]
        return done

    def waiting_for_commit(self) -> bool:
        return self.last_batch > self.committed

    # ---------------------------------------------------------------- commits and retention
    def commit(self, batch: int) -> None:
        self.committed = max(self.committed, batch)

    def expire(self, cutoff: float) -> list[int]:
        """Forget committed batches created before `cutoff` (the retention); returns them."""
        old = [b for b, (created, _) in self.batches.items() if b <= self.committed and created < cutoff]
        for batch in old:
            for identity in self.batches.pop(batch)[1]:
                if self.known.get(identity) == batch:
                    del self.known[identity]
        return old
