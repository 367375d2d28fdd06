"""Encryption at rest: per-place data keys wrapped by a master key.

    master key (32 bytes, outside the store: env FIELDSYNC_MASTER_KEY or a key file)
      └── wraps data key (place, version)      AES-256-GCM, AAD = "dk:" place ":" version
            └── seals bodies and attachments   AES-256-GCM, AAD binds db, doc id and rev

A sealed blob is ``nonce (12 bytes) || ciphertext+tag``.  ``key_ref`` is
``"place:version"`` and is stored beside the blob in the clear.  Rewrapping under
a new master key (:mod:`sync.datakeys.embedded_admin`), rotating data keys
(:mod:`sync.datakeys.embedded_rotation`) and crypto-shredding a place
(:mod:`sync.datakeys.embedded_shred`) are ``fieldsync keys`` commands.
The master key never touches the store; :class:`MasterKey` is the KMS-shaped
seam (wrap/unwrap) that a cloud KMS can implement.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sync.datakeys.embedded import ConnFactory, EmbeddedDataKeys
from sync.datakeys.ports import DataKeyStore
from sync.errors import FieldsyncError, StoreError

NONCE_BYTES = 12
MASTER_KEY_ENV = "FIELDSYNC_MASTER_KEY"
DEFAULT_REFRESH_SECONDS = 30.0  # as sync.config.Config.key_refresh_seconds


class KeyError_(FieldsyncError):
    status = 500
    error = "key_error"
    default_reason = "A data key is missing or the master key is wrong."


class MasterKeyMissing(KeyError_):
    """The store holds keys sealed under a master key, and that key is not here."""

    error = "master_key_missing"
    default_reason = "The master key that opens this data dir's keys is missing."


class MasterKey(Protocol):
    def wrap(self, label: bytes, key: bytes) -> bytes: ...

    def unwrap(self, label: bytes, wrapped: bytes) -> bytes: ...


@dataclass(frozen=True)
class LocalMasterKey:
    """A master key held in process memory, from the environment or a key file."""

    key: bytes

    def wrap(self, label: bytes, key: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + AESGCM(self.key).encrypt(nonce, key, label)

    def unwrap(self, label: bytes, wrapped: bytes) -> bytes:
        try:
            return AESGCM(self.key).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], label)
        except InvalidTag as exc:
            raise KeyError_("cannot unwrap a data key: wrong master key?") from exc


def load_master_key(key_file: Path, *, create: bool) -> LocalMasterKey:
    """The master key from ``FIELDSYNC_MASTER_KEY`` (base64) or ``key_file``.

    With ``create`` (``init`` and ``serve`` only) a missing key file is made (mode 0600);
    :func:`sync.store.opening.check_master_key` has refused first if keys sealed under
    another master key are there.
    """
    raw = os.environ.get(MASTER_KEY_ENV)
    if raw:
        return LocalMasterKey(_decode_key(raw, MASTER_KEY_ENV))
    return key_from_file(key_file, create=create)


def key_from_file(key_file: Path, *, create: bool) -> LocalMasterKey:
    """A master key kept in ``key_file`` (base64 of 32 bytes); made (0600) if asked and missing."""
    if key_file.exists():
        return LocalMasterKey(_decode_key(_read_key_file(key_file), str(key_file.name)))
    if not create:
        raise KeyError_(
            f"no master key at {key_file}: `fieldsync init` writes one, or set "
            f"{MASTER_KEY_ENV} or FIELDSYNC_MASTER_KEY_FILE"
        )
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(key).decode() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return LocalMasterKey(key)


def _read_key_file(key_file: Path) -> str:
    """The key file's text; a file this process may not read is a clear error, not a traceback.

    A Docker secret (``FIELDSYNC_MASTER_KEY_FILE=/run/secrets/...``) keeps its owner and
    mode from the host, so a key file readable only by root is refused here, by name.
    """
    try:
        return key_file.read_text().strip()
    except OSError as exc:
        raise KeyError_(
            f"cannot read the master key file {key_file} ({exc.strerror or exc}): it must be a "
            f"file readable by user id {os.getuid()}, which runs fieldsync; fix its mode or "
            f"owner, or point FIELDSYNC_MASTER_KEY_FILE at the right file"
        ) from exc


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyError_(f"master key in {where} is not base64") from exc
    if len(key) != 32:
        raise KeyError_(f"master key in {where} must be 32 bytes (AES-256)")
    return key


def seal(key: AESGCM, aad: bytes, plaintext: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + key.encrypt(nonce, plaintext, aad)


def unseal(key: AESGCM, aad: bytes, blob: bytes) -> bytes:
    try:
        return key.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag as exc:
        raise StoreError("stored data failed its integrity check") from exc


class KeyRing:
    """Per-place data keys: created on first use, unwrapped once, cached.

    Where the wrapped keys live is the data-key port's business
    (:mod:`sync.datakeys`): the data dir's file, or CouchDB shared by every
    instance.  A connection factory of the data dir's file is accepted too.

    The version new data is sealed with is asked for again once it is
    ``refresh_seconds`` old, so that a rotation made while instances serve
    (:mod:`sync.couchrotation`) reaches every instance within that time.
    """

    def __init__(
        self,
        master: MasterKey,
        keys: DataKeyStore | ConnFactory,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
    ) -> None:
        self._master = master
        self._keys: DataKeyStore = (
            EmbeddedDataKeys(keys) if callable(keys) else keys  # a connection factory
        )
        self._cache: dict[str, AESGCM] = {}
        self._current: dict[str, str] = {}
        self._checked: dict[str, float] = {}  # when each place's current version was read
        self._refresh = refresh_seconds
        self._lock = threading.Lock()

    def cached(self, key_ref: str) -> bool:
        return key_ref in self._cache

    def has_current(self, place: str) -> bool:
        ref = self._current.get(place)
        return ref is not None and ref in self._cache and not self._stale(place)

    def current(self, place: str) -> tuple[str, AESGCM]:
        """The key to seal new data of ``place`` with, as ``(key_ref, key)``."""
        ref = self._current.get(place)
        # On the event loop a stale version is still used (the port may not be called
        # there); Vault.warm, off the loop before every write, has refreshed it.
        if ref is None or (self._stale(place) and not _on_event_loop()):
            with self._lock:
                ref = self._load_or_create(place)
                self._current[place] = ref
                self._checked[place] = time.monotonic()
        return ref, self.by_ref(ref)

    def _stale(self, place: str) -> bool:
        checked = self._checked.get(place)
        return checked is None or time.monotonic() - checked >= self._refresh

    def by_ref(self, key_ref: str) -> AESGCM:
        key = self._cache.get(key_ref)
        if key is None:
            place, version = parse_key_ref(key_ref)
            wrapped = self._keys.wrapped(place, version)
            if wrapped is None:
                raise KeyError_(f"data key {place}:{version} is gone (shredded?)")
            key = self._unwrapped(place, version, wrapped)
        return key

    def _unwrapped(self, place: str, version: int, wrapped: bytes) -> AESGCM:
        key = AESGCM(self._master.unwrap(label(place, version), wrapped))
        self._cache[key_ref(place, version)] = key
        return key

    def _load_or_create(self, place: str) -> str:
        """The ref of the place's newest key; its first made now if it has none.

        Two instances making the first key at once both end with the one the
        port kept (the other's is never used to seal anything).
        """
        version = self._keys.latest(place)
        if version is not None:
            return key_ref(place, version)
        ours = self._master.wrap(label(place, 1), secrets.token_bytes(32))
        stored = self._keys.add(place, 1, ours, dt.datetime.now(dt.UTC).isoformat())
        self._unwrapped(place, 1, stored)
        return key_ref(place, 1)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def key_ref(place: str, version: int) -> str:
    return f"{place}:{version}"


def parse_key_ref(ref: str) -> tuple[str, int]:
    """``"area-7:2"`` -> ``("area-7", 2)`` (place ids may hold ':', versions never)."""
    place, _, version = ref.rpartition(":")
    return place, int(version)


def label(place: str, version: int) -> bytes:
    return f"dk:{place}:{version}".encode()
