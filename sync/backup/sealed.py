"""The archive file: a header in the clear, then the contents in sealed chunks.

    archive  = MAGIC  header-length(4, big-endian)  header(JSON)  chunk*
    chunk    = length(4, big-endian)  AES-256-GCM(key, nonce, plaintext, aad=MAGIC+header)
    nonce    = chunk number (11 bytes, big-endian)  last (1 byte: 1 on the last chunk, else 0)

The header names the backup (its archive id, when it was made, K of N) and
carries a key check (HMAC of the archive id under the key), so a restore can
tell "these shares do not open this archive" from "this archive was altered".
Every chunk holds at most ``chunk_bytes`` of plaintext, so neither writing nor
reading ever holds more than one chunk in memory, whatever the size of the store.

This is the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár, "Online
Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015):
each key seals one archive only (a new random key per backup), the chunk number
in the nonce makes a reordered, repeated or dropped chunk fail, the header as
associated data makes an edited header fail, and the last-chunk flag makes a
file cut at a chunk boundary fail.  Nothing of a chunk is handed on before its
tag is checked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sync.errors import FieldsyncError

MAGIC = b"FIELDSYNC-BACKUP\n"
FORMAT = 1
CHUNK_BYTES = 1024 * 1024
TAG_BYTES = 16
MAX_HEADER = 64 * 1024
LENGTH = struct.Struct(">I")


class ArchiveError(FieldsyncError):
    """A file that is not a fieldsync backup, or one that was cut short or altered."""

    status = 400
    error = "bad_archive"
    default_reason = "The backup archive cannot be read."


@dataclass(frozen=True)
class Header:
    """What the archive says about itself, in the clear (no secret in it)."""

    archive_id: str
    created: str
    threshold: int
    shares: int
    key_check: str
    chunk_bytes: int = CHUNK_BYTES
    cipher: str = "AES-256-GCM"
    format: int = FORMAT

    def encoded(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()


def key_check(key: bytes, archive_id: str) -> str:
    """A value that shows a key is this archive's without telling anything about it."""
    return hmac.new(
        key, b"fieldsync-backup-key\x00" + archive_id.encode(), hashlib.sha256
    ).hexdigest()


class SealingWriter:
    """Seals what is written to it into ``out``, one chunk at a time; :meth:`close` ends it."""

    def __init__(self, out: BinaryIO, key: bytes, header: Header) -> None:
        encoded = header.encoded()
        out.write(MAGIC + LENGTH.pack(len(encoded)) + encoded)
        self._out = out
        self._aead = AESGCM(key)
        self._aad = MAGIC + encoded
        self._size = header.chunk_bytes
        self._buffer = bytearray()
        self._number = 0

    def write(self, data: bytes) -> None:
        self._buffer += data
        # Keep the last (possibly full) chunk back: only close() knows it is the last.
        while len(self._buffer) > self._size:
            self._seal(bytes(self._buffer[: self._size]), last=False)
            del self._buffer[: self._size]

    def close(self) -> None:
        self._seal(bytes(self._buffer), last=True)
        self._buffer.clear()

    def _seal(self, plaintext: bytes, last: bool) -> None:
        sealed = self._aead.encrypt(_nonce(self._number, last), plaintext, self._aad)
        self._out.write(LENGTH.pack(len(sealed)) + sealed)
        self._number += 1


def read_header(source: BinaryIO) -> tuple[Header, bytes]:
    """The header at the start of ``source`` (and its bytes); ``source`` is left at the
    first chunk."""
    if source.read(len(MAGIC)) != MAGIC:
        raise ArchiveError("this file is not a fieldsync backup archive")
    length = _length(source)
    if length is None or length > MAX_HEADER:
        raise ArchiveError("the archive's header is cut short or damaged")
    raw = source.read(length)
    try:
        fields = json.loads(raw)
        header = Header(**fields)
    except (ValueError, TypeError) as exc:
        raise ArchiveError("the archive's header is damaged") from exc
    if header.format != FORMAT or header.cipher != "AES-256-GCM":
        raise ArchiveError(
            f"this archive is in format {header.format} ({header.cipher}), which this "
            "version of fieldsync does not read; restore it with the version that made it"
        )
    if not 0 < header.chunk_bytes <= 64 * CHUNK_BYTES:
        raise ArchiveError("the archive's header is damaged (chunk size)")
    return header, raw


def opened(source: BinaryIO, key: bytes, header: Header, raw: bytes) -> Iterator[bytes]:
    """The archive's plaintext, chunk by chunk, each checked before it is given out.

    ``source`` is just past the header, whose bytes are ``raw``.  Raises
    :class:`ArchiveError` on the first chunk that is altered, out of place or
    missing, and if the file ends early or goes on after its last chunk.
    """
    aead = AESGCM(key)
    aad = MAGIC + raw
    limit = header.chunk_bytes + TAG_BYTES
    sealed = _chunk(source, limit)
    if sealed is None:
        raise _cut()
    number = 0
    while True:
        following = _chunk(source, limit)
        last = following is None
        try:
            yield aead.decrypt(_nonce(number, last), sealed, aad)
        except InvalidTag as exc:
            raise ArchiveError(
                f"the archive was altered or cut short (chunk {number} does not pass its "
                "integrity check); nothing from it was kept"
            ) from exc
        if following is None:
            return
        sealed, number = following, number + 1


def _chunk(source: BinaryIO, limit: int) -> bytes | None:
    length = _length(source)
    if length is None:
        return None
    if length > limit:
        raise ArchiveError("the archive is damaged (a chunk longer than the header allows)")
    data = source.read(length)
    if len(data) != length:
        raise _cut()
    return data


def _length(source: BinaryIO) -> int | None:
    raw = source.read(LENGTH.size)
    if not raw:
        return None
    if len(raw) != LENGTH.size:
        raise _cut()
    (length,) = LENGTH.unpack(raw)
    return int(length)


def _cut() -> ArchiveError:
    return ArchiveError("the archive is cut short (the file ends early); nothing from it was kept")


def _nonce(number: int, last: bool) -> bytes:
    return number.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
