"""Server configuration: defaults, then environment (``FIELDSYNC_*``), then CLI flags."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sync.forwarded import Network, parse_networks

MiB = 1024 * 1024
# Where Cloudant's IAM tokens are fetched when FIELDSYNC_CLOUDANT_IAM_URL is unset.
DEFAULT_TOKEN_URL = "https://iam.cloud.ibm.com/identity/token"


# Verified credentials a process remembers by default (Config.verified_passwords).
VERIFIED_PASSWORDS = 200_000


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 5984
    db_name: str = "health"
    max_request_bytes: int = 64 * MiB
    max_document_bytes: int = 8 * MiB
    # Documents (or ids, keys) one _bulk_docs, _bulk_get, _revs_diff or _all_docs may name.
    max_bulk_docs: int = 10_000
    session_seconds: int = 14 * 24 * 3600
    # A session not used for this long ends (the absolute limit is session_seconds).
    session_idle_seconds: int = 8 * 3600
    longpoll_max_seconds: float = 60.0
    # How long a starting server waits for another (shutting down) to free the data dir.
    lock_wait_seconds: float = 10.0
    master_key_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Workers' apps must enrol their device and send X-Device-Token (device registry).
    require_enrolment: bool = True
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed.
    trusted_proxies: tuple[Network, ...] = ()
    # Slow clients (sync.serving): read deadlines and connection caps.
    header_timeout_seconds: float = 20.0
    body_timeout_seconds: float = 60.0  # longest silence inside a body, not its total time
    keepalive_timeout_seconds: float = 75.0
    max_connections_per_address: int = 200
    max_connections: int = 0  # 0: as many as the open-file limit leaves room for
    # The URL phones reach this server at (enrolment QR codes; our own origin for CSRF checks).
    public_url: str | None = None
    # Serve even when the audit trail's start-up check fails (logged as an error).
    audit_allow_broken: bool = False
    # Documents on CouchDB / Cloudant instead of the embedded store (sync.store.couchdb).
    couchdb_url: str | None = None
    couchdb_user: str | None = None
    couchdb_password: str | None = field(default=None, repr=False)
    couchdb_prefix: str = "fieldsync_"
    cloudant_apikey: str | None = field(default=None, repr=False)
    cloudant_iam_url: str | None = None
    couchdb_max_in_flight: int = 32
    couchdb_timeout_seconds: float = 30.0
    # An instance asks for a place's newest data-key version at least this often (key rotation
    # on CouchDB waits longer than this before it re-seals and deletes old versions).
    key_refresh_seconds: float = 30.0
    # With CouchDB, an instance answers a caller it read this recently without reading again:
    # a change made on another instance applies here within this bound (0: read every time).
    accounts_cache_seconds: float = 0.5
    # With CouchDB, a phone's device binding read this recently is used again; a change that
    # can refuse a phone waits this long before it is answered (every instance the same).
    devices_cache_seconds: float = 0.5
    # Credentials this process has verified, remembered so that a phone's next sync skips the
    # password hash (~44 ms of CPU) and the login counters (on CouchDB 1 read and 4 writes);
    # about 170 bytes each. With requests balanced over N processes each sees every phone.
    verified_passwords: int = VERIFIED_PASSWORDS
    # CouchDB's max_document_size (default; Cloudant: 1,000,000); bigger: refused per document.
    couchdb_max_document_bytes: int = 8_000_000
    # A reader passes over a change-log position, or an entry's version, that quorum reads
    # have not shown for this long (lost with the one cluster copy that took it).
    couchdb_lost_after_seconds: float = 600.0
    # A place whose first pull sends at least this many changes gets a base (its walk kept,
    # sync.store.couchdb.bases), which the next first pulls read instead; 0: none is made.
    couchdb_base_min_changes: int = 1_000
    # Bearer token that opens GET /metrics (sync.health); without one only admins read them.
    metrics_token: str | None = field(default=None, repr=False)
    # The server's log: lines below log_level are dropped; json (one object a line) or console.
    log_level: str = "info"
    log_format: str = "json"
    # Refused records (sync.refusals): kept this many days after the last push, and at most
    # this many distinct ones per worker (the newest; older ones are counted, not kept).
    refusal_retention_days: int = 90
    refusals_per_worker: int = 1000
    # The programme's time zone (IANA name): every time the supervisor pages show is in it.
    time_zone: str = "UTC"
    # A worker whose document set holds more than this is flagged on the supervisor console
    # (CHT warns at 10,000: phones slow down beyond it).
    set_size_warning: int = 10_000
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key_file(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"

    @property
    def https(self) -> bool:
        return self.tls_cert is not None


def _yes(value: str) -> bool:
    """A switch; anything but a clear yes or no is refused (a typo must not turn a guard off)."""
    word = value.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be one of 1/true/yes/on or 0/false/no/off")


def _seconds_up_to(most: float, zero: str, example: str) -> Callable[[str], float]:
    """A parser of a number of seconds from 0 (``zero`` says what 0 does) up to ``most``."""

    def parse(value: str) -> float:
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= most:
            raise ValueError(
                f"must be a number of seconds from 0 ({zero}) to {most:g}, e.g. {example}"
            )
        return seconds

    return parse


# How long a caller read from CouchDB may be reused.
_cache_seconds = _seconds_up_to(60.0, "read every time", "1 or 0.5")
# How long a device binding read from CouchDB may be reused (a change that can refuse a
# phone waits that long before it is answered).
_device_cache_seconds = _seconds_up_to(5.0, "read on every request", "0.5")


def _seconds(value: str) -> float:
    """A duration above zero (a zero timeout would cut every client at once)."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError("must be a number of seconds above 0, e.g. 20 or 2.5")
    return seconds


def _count(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = minimum - 1
        if number < minimum:
            raise ValueError(f"must be a whole number of at least {minimum}")
        return number

    return parse


def public_url(value: str) -> str:
    """``https://sync.example.org[:port][/prefix]``, without a trailing slash."""
    url = urlsplit(value.strip())
    bad_port = url.port == 0  # reading .port raises ValueError when it is out of range
    if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
        raise ValueError("must be an http:// or https:// URL such as https://sync.example.org")
    if bad_port:
        raise ValueError("the port must be between 1 and 65535")
    return url.geturl().rstrip("/")


@dataclass(frozen=True)
class Endpoint:
    """Where CouchDB is and how to sign in, parsed from ``FIELDSYNC_COUCHDB_URL``."""

    base: str  # scheme://host:port[/path], without credentials, no trailing slash
    user: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str, user: str | None = None, password: str | None = None) -> Endpoint:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as http://admin:pw@127.0.0.1:5984")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or a fragment")
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        from_url_user = parts.username and unquote(parts.username)
        from_url_pw = parts.password and unquote(parts.password)
        return cls(base, user or from_url_user or None, password or from_url_pw or None)

    @property
    def shown(self) -> str:
        """The address for messages: never the credentials."""
        return self.base


def couchdb_url(value: str) -> str:
    """``http(s)://[user:password@]host:port``: where the CouchDB or Cloudant server is."""
    Endpoint.parse(value)
    return value.strip()


def couchdb_prefix(value: str) -> str:
    """Database names start with a lowercase letter; CouchDB allows a-z 0-9 _ $ ( ) + - /."""
    if not re.fullmatch(r"[a-z][a-z0-9_()+-]{0,63}", value):
        raise ValueError("must start with a-z and hold only a-z 0-9 _ ( ) + - (e.g. fieldsync_)")
    return value


def metrics_token(value: str) -> str:
    """A secret for ``Authorization: Bearer ...``: printable, no spaces."""
    token = value.strip()
    if not token.isprintable() or " " in token:
        raise ValueError("must be printable text without spaces")
    return token


def time_zone(value: str) -> str:
    """An IANA time zone name such as ``Africa/Nairobi`` (``UTC`` by default)."""
    name = value.strip()
    try:
        ZoneInfo(name)
    except (ValueError, ZoneInfoNotFoundError) as exc:
        raise ValueError(
            "must be an IANA time zone name such as Africa/Nairobi, Africa/Kampala or UTC"
        ) from exc
    return name


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "console")


def _one_of(words: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        word = value.strip().lower()
        if word not in words:
            raise ValueError(f"must be one of {', '.join(words)}")
        return word

    return parse


_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "FIELDSYNC_DATA_DIR": ("data_dir", Path),
    "FIELDSYNC_HOST": ("host", str),
    "FIELDSYNC_PORT": ("port", int),
    "FIELDSYNC_DB": ("db_name", str),
    "FIELDSYNC_MAX_REQUEST_BYTES": ("max_request_bytes", int),
    "FIELDSYNC_MAX_DOCUMENT_BYTES": ("max_document_bytes", int),
    "FIELDSYNC_MASTER_KEY_FILE": ("master_key_file", Path),
    "FIELDSYNC_TLS_CERT": ("tls_cert", Path),
    "FIELDSYNC_TLS_KEY": ("tls_key", Path),
    "FIELDSYNC_REQUIRE_ENROLMENT": ("require_enrolment", _yes),
    "FIELDSYNC_TRUSTED_PROXIES": ("trusted_proxies", parse_networks),
    "FIELDSYNC_HEADER_TIMEOUT_SECONDS": ("header_timeout_seconds", _seconds),
    "FIELDSYNC_BODY_TIMEOUT_SECONDS": ("body_timeout_seconds", _seconds),
    "FIELDSYNC_KEEPALIVE_TIMEOUT_SECONDS": ("keepalive_timeout_seconds", _seconds),
    "FIELDSYNC_MAX_CONNECTIONS_PER_ADDRESS": ("max_connections_per_address", _count(1)),
    "FIELDSYNC_MAX_CONNECTIONS": ("max_connections", _count(0)),
    "FIELDSYNC_SESSION_SECONDS": ("session_seconds", _count(1)),
    "FIELDSYNC_SESSION_IDLE_SECONDS": ("session_idle_seconds", _count(1)),
    "FIELDSYNC_PUBLIC_URL": ("public_url", public_url),
    "FIELDSYNC_AUDIT_ALLOW_BROKEN": ("audit_allow_broken", _yes),
    "FIELDSYNC_MAX_BULK_DOCS": ("max_bulk_docs", _count(1)),
    "FIELDSYNC_COUCHDB_URL": ("couchdb_url", couchdb_url),
    "FIELDSYNC_COUCHDB_USER": ("couchdb_user", str),
    "FIELDSYNC_COUCHDB_PASSWORD": ("couchdb_password", str),
    "FIELDSYNC_COUCHDB_PREFIX": ("couchdb_prefix", couchdb_prefix),
    "FIELDSYNC_CLOUDANT_APIKEY": ("cloudant_apikey", str),
    "FIELDSYNC_CLOUDANT_IAM_URL": ("cloudant_iam_url", public_url),
    "FIELDSYNC_COUCHDB_MAX_IN_FLIGHT": ("couchdb_max_in_flight", _count(1)),
    "FIELDSYNC_COUCHDB_TIMEOUT_SECONDS": ("couchdb_timeout_seconds", _seconds),
    "FIELDSYNC_KEY_REFRESH_SECONDS": ("key_refresh_seconds", _seconds),
    "FIELDSYNC_ACCOUNTS_CACHE_SECONDS": ("accounts_cache_seconds", _cache_seconds),
    "FIELDSYNC_DEVICES_CACHE_SECONDS": ("devices_cache_seconds", _device_cache_seconds),
    "FIELDSYNC_VERIFIED_PASSWORDS": ("verified_passwords", _count(1)),
    "FIELDSYNC_COUCHDB_MAX_DOCUMENT_BYTES": ("couchdb_max_document_bytes", _count(4096)),
    "FIELDSYNC_COUCHDB_LOST_AFTER_SECONDS": ("couchdb_lost_after_seconds", _seconds),
    "FIELDSYNC_COUCHDB_BASE_MIN_CHANGES": ("couchdb_base_min_changes", _count(0)),
    "FIELDSYNC_METRICS_TOKEN": ("metrics_token", metrics_token),
    "FIELDSYNC_LOG_LEVEL": ("log_level", _one_of(LOG_LEVELS)),
    "FIELDSYNC_LOG_FORMAT": ("log_format", _one_of(LOG_FORMATS)),
    "FIELDSYNC_REFUSAL_RETENTION_DAYS": ("refusal_retention_days", _count(1)),
    "FIELDSYNC_REFUSALS_PER_WORKER": ("refusals_per_worker", _count(1)),
    "FIELDSYNC_TIME_ZONE": ("time_zone", time_zone),
    "FIELDSYNC_SET_SIZE_WARNING": ("set_size_warning", _count(1)),
}


def setting_fields() -> dict[str, str]:
    """Each ``FIELDSYNC_*`` variable :func:`from_env` reads, and the Config field it sets."""
    return {name: attr for name, (attr, _) in _ENV.items()}


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it and what it should be."""


def from_env(base: Config | None = None, env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ) if env is None else env
    changes: dict[str, Any] = {}
    for name, (attr, kind) in _ENV.items():
        if name in env and env[name] != "":
            try:
                changes[attr] = kind(env[name])
            except ValueError as exc:
                raise ConfigError(f"{name}={env[name]!r}: {_why(kind, exc)}") from exc
    return replace(base or Config(), **changes)


def _why(kind: Callable[[str], Any], exc: ValueError) -> str:
    return "must be a whole number" if kind is int else str(exc)
