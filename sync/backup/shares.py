"""The archive key split among custodians: Shamir's secret sharing, K of N.

A share is one line of text a custodian can keep on paper, type back, or scan
from its QR code::

    FSB1-<ARCHIVE ID>-<K>OF<N>-<X>-<Y>-<CHECK>
    FSB1-3F9A0C21D4E5B6A7-3OF4-2-MZXW6YTBOI...(52 letters)-1C0FFEE5

    ARCHIVE ID   16 hex digits, the backup the share belongs to (in the archive's header)
    K OF N       how many shares open the backup, and how many were made
    X            the share's number, 1..N (its x-coordinate)
    Y            32 bytes in base32 (RFC 4648, no padding): the two 16-byte halves
    CHECK        8 hex digits: the start of SHA-256 over everything before it

Upper and lower case are the same, and spaces and line breaks are ignored, so a
share read aloud or retyped with a space in it still parses; any other slip
(a wrong letter, a swapped pair, a lost character) fails the check, and the
custodian is told which share to look at again.

The key is 32 bytes, and pycryptodome's Shamir (GF(2^128)) shares 16-byte
secrets: each half is split on its own random polynomial at the same
x-coordinates, and a share holds both halves' y-values.  Fewer than K shares say
nothing about either half (each half's sharing is perfectly hiding, and the two
use independent randomness), and any K give both.
https://pycryptodome.readthedocs.io/en/latest/src/protocol/ss.html
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from Crypto.Protocol.SecretSharing import Shamir

from sync.errors import FieldsyncError

KEY_BYTES = 32
HALF = KEY_BYTES // 2
MAX_SHARES = 255  # x-coordinates are one byte: 1..255
PREFIX = "FSB1"
SHAPE = re.compile(
    r"^FSB1-(?P<id>[0-9A-F]{16})-(?P<k>\d{1,3})OF(?P<n>\d{1,3})-(?P<x>\d{1,3})"
    r"-(?P<y>[A-Z2-7]{52})-(?P<check>[0-9A-F]{8})$"
)


class ShareError(FieldsyncError):
    """A share that cannot be used: mistyped, from another backup, or too few of them."""

    status = 400
    error = "bad_share"
    default_reason = "A backup share is not valid."


@dataclass(frozen=True)
class Share:
    """One custodian's share of one backup's key."""

    archive_id: str  # 16 upper-case hex digits
    threshold: int
    shares: int
    x: int
    y: bytes  # 32 bytes: the y-values of the two halves

    def text(self) -> str:
        """The share as one line of text, its check included."""
        y = base64.b32encode(self.y).decode().rstrip("=")
        body = f"{PREFIX}-{self.archive_id}-{self.threshold}OF{self.shares}-{self.x}-{y}"
        return f"{body}-{_check(body)}"

    def label(self) -> str:
        return (
            f"share {self.x} of {self.shares} (any {self.threshold} open backup {self.archive_id})"
        )


def check_counts(threshold: int, shares: int) -> None:
    """Refuse a K of N that Shamir's scheme, or the point of splitting a key, does not allow."""
    if shares < 2:
        raise ShareError(f"--shares {shares} cannot be split among custodians; give 2 or more")
    if shares > MAX_SHARES:
        raise ShareError(f"--shares {shares} is too many: at most {MAX_SHARES} shares")
    if threshold < 2:
        raise ShareError(
            f"--threshold {threshold} would let one person open the backup alone; give 2 or more"
        )
    if threshold > shares:
        raise ShareError(
            f"--threshold {threshold} is more than the {shares} shares made: no one could "
            f"ever open the backup; give a threshold of at most {shares}"
        )


def split(key: bytes, archive_id: str, threshold: int, shares: int) -> list[Share]:
    """``shares`` shares of the 32-byte ``key``, any ``threshold`` of which give it back."""
    check_counts(threshold, shares)
    if len(key) != KEY_BYTES:
        raise ValueError("the archive key must be 32 bytes")
    low = Shamir.split(threshold, shares, key[:HALF])
    high = Shamir.split(threshold, shares, key[HALF:])
    return [
        Share(archive_id, threshold, shares, x, y_low + y_high)
        for (x, y_low), (x_high, y_high) in zip(low, high, strict=True)
        if x == x_high
    ]


def combine(given: Sequence[Share]) -> bytes:
    """The key from shares already checked by :func:`consistent` (K or more, one backup)."""
    low = Shamir.combine([(s.x, s.y[:HALF]) for s in given])
    high = Shamir.combine([(s.x, s.y[HALF:]) for s in given])
    return low + high


def parse(text: str, where: str = "a share") -> Share:
    """A share from its text (case and spaces do not matter); ``where`` names it in errors."""
    line = "".join(text.split()).upper()
    found = SHAPE.match(line)
    if found is None:
        raise ShareError(
            f"{where} is not a fieldsync backup share: one looks like "
            f"{PREFIX}-<16 hex digits>-3OF4-2-<52 letters and digits>-<8 hex digits>"
        )
    body = line[: -len(found["check"]) - 1]
    if _check(body) != found["check"]:
        raise ShareError(
            f"{where} has a typing mistake (its check digits do not match); copy it again "
            "from the paper or scan its QR code"
        )
    threshold, count, x = int(found["k"]), int(found["n"]), int(found["x"])
    if not 2 <= threshold <= count <= MAX_SHARES or not 1 <= x <= count:
        raise ShareError(f"{where} names share {x} of {threshold} of {count}, which cannot be")
    y = _b32(found["y"], where)
    return Share(found["id"], threshold, count, x, y)


def consistent(given: Iterable[Share], archive_id: str) -> list[Share]:
    """Refuse shares that cannot open this archive together; the usable ones, in order.

    Every share must belong to this archive and agree on K and N; none may be
    given twice; and there must be at least K of them.
    """
    shares = list(given)
    for share in shares:
        if share.archive_id != archive_id:
            raise ShareError(
                f"share {share.x} belongs to backup {share.archive_id}, not to this archive "
                f"(backup {archive_id}); use the shares printed with this backup"
            )
    if not shares:
        raise ShareError("no shares given: type them on standard input, one a line, or --share")
    first = shares[0]
    if any((s.threshold, s.shares) != (first.threshold, first.shares) for s in shares):
        raise ShareError("the shares disagree on how many open the backup: one was altered")
    by_x: dict[int, Share] = {}
    for share in shares:
        if share.x in by_x:
            if by_x[share.x] != share:
                raise ShareError(f"two different texts for share {share.x}: one was altered")
            raise ShareError(
                f"share {share.x} was given twice; give {first.threshold} different shares"
            )
        by_x[share.x] = share
    if len(by_x) < first.threshold:
        raise ShareError(
            f"{len(by_x)} share(s) given, but this backup needs {first.threshold} of its "
            f"{first.shares}: ask {first.threshold - len(by_x)} more custodian(s) for theirs; "
            "nothing was written"
        )
    return [by_x[x] for x in sorted(by_x)]


def _check(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:8].upper()


def _b32(text: str, where: str) -> bytes:
    try:
        value = base64.b32decode(text + "====")
    except (binascii.Error, ValueError) as exc:
        raise ShareError(f"{where} has letters that are not base32") from exc
    if len(value) != KEY_BYTES:
        raise ShareError(f"{where} does not hold a 32-byte share")
    return value
