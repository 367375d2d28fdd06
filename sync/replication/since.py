"""Since-tokens: opaque to the client, they say which places a checkpoint covers.

Grammar::

    token    := SEQ                         admin, or a client-made number (0, "now")
              | SEQ "-" SNAP                everything of the places in SNAP up to SEQ
              | SEQ "-" SNAP "-" NEW "-" B  as above, while back-filling: the places
                                            in NEW but not in SNAP are done up to B (<= SEQ)

``SNAP`` and ``NEW`` are hashes of place sets kept in ``scope_snapshots``.
When a worker's read scope grows, the next request finds places that the
token's snapshot lacks and back-fills their older documents (seq <= SEQ)
before carrying on after SEQ; a token that only held one global sequence
would skip them (DESIGN.md, "Per-worker document sets").
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from sync.errors import BadRequest

_TOKEN_RE = re.compile(r"^(\d{1,18})(?:-([0-9a-f]{16})(?:-([0-9a-f]{16})-(\d{1,18}))?)?$")


@dataclass(frozen=True, slots=True)
class Backfill:
    target: str
    done_upto: int


@dataclass(frozen=True, slots=True)
class SinceToken:
    seq: int
    snapshot: str | None = None
    backfill: Backfill | None = None

    def render(self) -> str | int:
        if self.snapshot is None:
            return self.seq
        if self.backfill is None:
            return f"{self.seq}-{self.snapshot}"
        return f"{self.seq}-{self.snapshot}-{self.backfill.target}-{self.backfill.done_upto}"


def parse(raw: object) -> SinceToken:
    """Parse ``since`` as sent by a client (number, numeric string or our token)."""
    if isinstance(raw, bool):
        raise BadRequest("since must be a sequence token")
    if isinstance(raw, int):
        if raw < 0:
            raise BadRequest("since must not be negative")
        return SinceToken(raw)
    if not isinstance(raw, str):
        raise BadRequest("since must be a sequence token")
    match = _TOKEN_RE.match(raw.strip())
    if match is None:
        raise BadRequest(f"invalid since token {raw!r}")
    seq, snap, target, done = match.groups()
    backfill = Backfill(target, int(done)) if target else None
    return SinceToken(int(seq), snap, backfill)


def is_embedded(raw: object) -> bool:
    """Whether ``raw`` is an embedded store's token other than 0 (a number, or ``SEQ-SNAP``):
    a CouchDB-backed server reads it as a checkpoint made before ``fieldsync migrate``."""
    if isinstance(raw, bool):
        return False
    if isinstance(raw, int):
        return raw > 0
    return isinstance(raw, str) and raw not in ("0", "now") and bool(_TOKEN_RE.match(raw.strip()))


def snapshot_hash(places: frozenset[str]) -> str:
    digest = hashlib.sha256("\x00".join(sorted(places)).encode()).hexdigest()
    return digest[:16]
