"""Since-tokens of a log store (CouchDB): a position in each place's change log.

Grammar::

    token   := "v1-" PACKED             a worker's token: for each place that has
                                        progress, the entries read whole (done)
                                        and the ids already sent of the next (offset)
             | "v2-" KEY "-" PACKED     the same for a scope of many places: KEY names
                                        a vector the store keeps (where the request
                                        started), PACKED holds only the places that
                                        moved since; tokens stay short, whatever the scope
    PACKED  := BASE64URL( zlib( JSON [[place, done, offset], ...] ) )
             | COUNT "-c2-" COUCH_SEQ   an admin's token: CouchDB's own since value
                                        for the whole database, after COUNT, the
                                        rows the feed has given up to there (as
                                        CouchDB's own tokens start with a number
                                        that grows with the changes: PouchDB's
                                        suite reads it).  "c1-" COUCH_SEQ, the
                                        earlier form, is still read (COUNT 0)

A place absent from a token starts at 0, so a worker whose read scope grew
gets the older documents of the new places with nothing to remember; places
that left the scope are dropped from the next token.  The client may forge a
token, but only for the places it may read anyway: positions are read from
the caller's scope, never from the token's list of places.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from sync.errors import BadRequest
from sync.store.base import Position

_MAX_TOKEN = 64 * 1024
_COUNTED = re.compile(r"([0-9]{1,15})-c2-(.+)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class VectorToken:
    positions: Mapping[str, Position]  # with a base: only the places that moved from it
    base: str | None = None

    def render(self) -> str:
        if self.base is None:
            return "v1-" + pack(self.positions)
        return f"v2-{self.base}-{pack(self.positions, keep_zero=True)}"


# Every row of a worker's ``_changes`` carries a token, so packing one must be cheap.
# ``zlib.compress`` sets up a 32 kB window and its hash tables for each call (18-70
# microseconds measured, up to 0.7 CPU s over a 10,000-document pull); a token's JSON is a
# few hundred bytes, so a 4 kB window and small tables give the same bytes of output
# (the stream's header names its window; any zlib reader takes it) in a twentieth
# of the time.
_WINDOW_BITS = 12
_MEM_LEVEL = 2


def pack(positions: Mapping[str, Position], *, keep_zero: bool = False) -> str:
    squeeze = zlib.compressobj(9, zlib.DEFLATED, _WINDOW_BITS, _MEM_LEVEL)
    return _text(squeeze.compress(_json(positions, keep_zero)) + squeeze.flush())


def base_key(positions: Mapping[str, Position]) -> str:
    """The name a stored vector is kept under: a hash of what it holds.

    Hashed over the first tokens' packing (zlib's default window), so the vectors
    stored before tokens were packed smaller keep their names; once per request.
    """
    named = _text(zlib.compress(_json(positions, False), 9))
    return hashlib.sha256(named.encode()).hexdigest()[:32]


def _json(positions: Mapping[str, Position], keep_zero: bool) -> bytes:
    items = [[p, d, o] for p, (d, o) in sorted(positions.items()) if keep_zero or (d, o) != (0, 0)]
    return orjson.dumps(items)


def _text(packed: bytes) -> str:
    return base64.urlsafe_b64encode(packed).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class GlobalToken:
    seq: str | None  # None: from the start
    count: int = 0  # rows of the whole feed up to here: for reading, never for resuming

    def render(self) -> str:
        return "0" if self.seq is None else f"{self.count}-c2-{self.seq}"


LogToken = VectorToken | GlobalToken


def parse(raw: object, *, admin: bool) -> LogToken:
    """``since`` as a client sent it: 0, or a token this server made for this kind of caller."""
    if raw in (0, "0"):
        return GlobalToken(None) if admin else VectorToken({})
    if not isinstance(raw, str) or len(raw) > _MAX_TOKEN:
        raise BadRequest("since must be a sequence token from this server")
    if admin and (counted := _COUNTED.fullmatch(raw)):
        return GlobalToken(counted[2], int(counted[1]))
    if raw.startswith("c1-") and admin:
        return GlobalToken(raw[3:])
    if raw.startswith("v1-") and not admin:
        return VectorToken(_positions(raw[3:]))
    if raw.startswith("v2-") and not admin and re.fullmatch(r"v2-[0-9a-f]{32}-.+", raw):
        return VectorToken(_positions(raw[36:]), raw[3:35])
    raise BadRequest(f"invalid since token {raw[:80]!r} for this database")


def _positions(text: str) -> dict[str, Position]:
    try:
        packed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        items = orjson.loads(zlib.decompressobj().decompress(packed, _MAX_TOKEN * 16))
    except (binascii.Error, ValueError, zlib.error) as exc:
        raise BadRequest("invalid since token") from exc
    positions: dict[str, Position] = {}
    if not isinstance(items, list):
        raise BadRequest("invalid since token")
    for item in items:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and isinstance(item[0], str)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in item[1:])
        ):
            raise BadRequest("invalid since token")
        positions[item[0]] = (item[1], item[2])
    return positions
