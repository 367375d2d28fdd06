"""Every ``FIELDSYNC_*`` setting: its name, its default and what it does, in one list.

    Setting(name="FIELDSYNC_PORT", default="5984", meaning="the port to listen on ...")

The core's settings are the ones :func:`sync.config.from_env` reads (their
defaults come from :class:`sync.config.Config` itself, so they cannot drift)
plus the few read elsewhere (the master key, the CLI's password).  Packages
declare theirs beside the code that reads them (``SETTINGS`` in
``sms_gateway.settings`` and ``forms.routes``) and register them as ``settings``
(:mod:`sync.extensions`); :func:`every_setting` gathers them all.
``fieldsync settings`` prints the list as the README's table, and
``python -m sync.settings README.md`` writes it there, between the markers
:data:`START` and :data:`END`.  A test checks that every ``FIELDSYNC_`` name
in the code is in this list, so a new setting cannot go undocumented.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from sync.config import DEFAULT_TOKEN_URL, Config, setting_fields

START = "<!-- settings:start (made by `make readme-settings`; do not edit by hand) -->"
END = "<!-- settings:end -->"
MiB = 1024 * 1024


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    meaning: str


def shown(value: object) -> str:
    """A default as an implementer would type it: ``1``/``0``, ``none``, ``64 MiB``."""
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int) and value >= MiB and value % MiB == 0:
        return f"{value} ({value // MiB} MiB)"
    if isinstance(value, Path) and not value.is_absolute():
        return f"./{value}"
    return str(value)


# What each setting of sync.config.from_env does; its default is Config's own.
_CORE = {
    "FIELDSYNC_DATA_DIR": "where the store, the master key file and the audit journal live "
    "(`--data-dir` wins over it)",
    "FIELDSYNC_HOST": "the address `serve` listens on (`--host` wins over it)",
    "FIELDSYNC_PORT": "the port `serve` listens on (`--port` wins over it)",
    "FIELDSYNC_DB": "the name of the one database phones replicate with (`http://HOST:PORT/health`)",
    "FIELDSYNC_MAX_REQUEST_BYTES": "larger request bodies get 413 `too_large`",
    "FIELDSYNC_MAX_DOCUMENT_BYTES": "a document larger than this, as JSON (inline attachments "
    "included), gets 413 `too_large`",
    "FIELDSYNC_MAX_BULK_DOCS": "documents per `_bulk_docs` / `_bulk_get`, ids per `_revs_diff`, "
    "keys per `_all_docs`, `doc_ids` per `_changes`; more get 413 `too_large` before anything "
    "is written",
    "FIELDSYNC_SESSION_SECONDS": "a session's absolute lifetime (14 days)",
    "FIELDSYNC_SESSION_IDLE_SECONDS": "a session unused this long ends (8 hours)",
    "FIELDSYNC_MASTER_KEY_FILE": "the master key file (made by `init`, or the first `serve`, "
    "when missing and no data key exists yet)",
    "FIELDSYNC_TLS_CERT": "a PEM certificate (chain): `serve` speaks HTTPS (TLS 1.2+) with it "
    "and `FIELDSYNC_TLS_KEY`",
    "FIELDSYNC_TLS_KEY": "the PEM private key of `FIELDSYNC_TLS_CERT`",
    "FIELDSYNC_REQUIRE_ENROLMENT": "`1`: every phone that replicates (CHWs' and supervisors') "
    "sends the `X-Device-Token` of an enrolled device assigned to its user",
    "FIELDSYNC_TRUSTED_PROXIES": "reverse proxies (addresses or networks, comma-separated, e.g. "
    "`10.0.0.5,172.16.0.0/12`) whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed "
    "(per-phone login limits, `Secure` cookies behind a TLS proxy)",
    "FIELDSYNC_HEADER_TIMEOUT_SECONDS": "a request line and headers still incomplete this long "
    "after their first byte close the connection",
    "FIELDSYNC_BODY_TIMEOUT_SECONDS": "the longest silence inside a request body; a slow but "
    "moving upload (2G) is never cut, whatever its total time",
    "FIELDSYNC_KEEPALIVE_TIMEOUT_SECONDS": "an idle keep-alive connection is closed after this "
    "(long-poll `_changes` are requests, not idle)",
    "FIELDSYNC_MAX_CONNECTIONS_PER_ADDRESS": "open connections per client address (IPv6: per "
    "/64); more are closed at once. High because many phones share one carrier-NAT address; a "
    "trusted proxy's address is not capped (cap per client in the proxy)",
    "FIELDSYNC_MAX_CONNECTIONS": "`0`: as many as the open-file limit leaves room for (the soft "
    "limit is raised to the hard one; 256 files are kept for the server); a larger value is "
    "lowered to that",
    "FIELDSYNC_PUBLIC_URL": "the URL phones reach the server at, e.g. `https://sync.example.org`: "
    "enrolment QR codes carry it (never the request's `Host`), and it is accepted as our "
    "`Origin`; unset, QR codes carry the listening address unless it is loopback or a wildcard",
    "FIELDSYNC_AUDIT_ALLOW_BROKEN": "`1`: start even when the audit trail's start-up check fails "
    "(logged as an error); `0`: refuse to start",
    "FIELDSYNC_COUCHDB_URL": "documents and patient IDs in CouchDB 3 / Cloudant at this URL "
    "(e.g. `http://admin:pw@127.0.0.1:5984`) instead of the embedded store",
    "FIELDSYNC_COUCHDB_USER": "the CouchDB user, if not in the URL (wins over the URL's)",
    "FIELDSYNC_COUCHDB_PASSWORD": "the CouchDB password, if not in the URL (wins over the URL's)",
    "FIELDSYNC_COUCHDB_PREFIX": "the CouchDB databases' names start with it",
    "FIELDSYNC_CLOUDANT_APIKEY": "a Cloudant IAM API key: requests carry IAM bearer tokens "
    "(refreshed in the background) instead of Basic credentials",
    "FIELDSYNC_CLOUDANT_IAM_URL": "where IAM tokens come from",
    "FIELDSYNC_SET_SIZE_WARNING": "the supervisor console flags a worker whose document set "
    "holds more documents than this (the figure CHT warns at)",
    "FIELDSYNC_COUCHDB_MAX_IN_FLIGHT": "requests to CouchDB at once per fieldsync process",
    "FIELDSYNC_COUCHDB_TIMEOUT_SECONDS": "a CouchDB request unanswered this long is a 503",
    "FIELDSYNC_KEY_REFRESH_SECONDS": "an instance looks for a newer data-key version this often "
    "(`keys rotate` on CouchDB waits longer than this before re-sealing); every instance the same",
    "FIELDSYNC_ACCOUNTS_CACHE_SECONDS": "an active caller read this recently is not read "
    "again. With CouchDB a user disabled or a scope changed on another instance applies here "
    "within this bound (at once on the instance that made the change); on the embedded store "
    "a `fieldsync user`/`place` command waits this long before it answers, so its change "
    "holds from the next request; `0` reads on every request; at most `60`",
    "FIELDSYNC_DEVICES_CACHE_SECONDS": "a phone's device read this recently is not read "
    "again; a change that can refuse a phone (lost, stolen, reassigned, enrolled again) "
    "waits this long before it is answered (on the embedded store only a `fieldsync device` "
    "command's), so once answered it holds on every instance; `0` reads on every request; "
    "at most `5`; every instance and command the same",
    "FIELDSYNC_VERIFIED_PASSWORDS": "credentials a process has verified and remembers (about "
    "170 bytes each), the least recently used forgotten first: a phone's next sync then skips "
    "the password hash (~44 ms of CPU) and, on CouchDB, the login counters (1 read and 4 "
    "writes). With requests balanced over several processes each sees every phone: keep it "
    "above the number of phones",
    "FIELDSYNC_COUCHDB_MAX_DOCUMENT_BYTES": "CouchDB's `max_document_size` (Cloudant: "
    "`1000000`): a revision or attachment larger than this once sealed is refused alone "
    "(`too_large`)",
    "FIELDSYNC_COUCHDB_LOST_AFTER_SECONDS": "on a CouchDB cluster, a change-log position or "
    "a document version that quorum reads still do not show this long after it was written "
    "(lost with the one copy that took it) is passed over, so that the place's phones do "
    "not stop there for good; keep it well above the clock skew between instances",
    "FIELDSYNC_COUCHDB_BASE_MIN_CHANGES": "a place whose first pull sends at least this many "
    "changes gets a base: its walk kept in CouchDB (a second copy of its documents' "
    "revision trees and inline bodies, sealed), which the next phones' first pulls read in "
    "one request a few pages instead of one meta a change; `0`: no base is made",
    "FIELDSYNC_METRICS_TOKEN": "printable, no spaces: `Authorization: Bearer <token>` reads "
    "`GET /metrics`; unset, only a signed-in admin does",
    "FIELDSYNC_LOG_LEVEL": "`debug`, `info`, `warning` or `error`: lines below it are dropped "
    "(`warning` keeps refusals such as `login_failed`, drops the per-request lines)",
    "FIELDSYNC_LOG_FORMAT": "`json`: one JSON object a line on stderr; `console`: aligned text "
    "for a person at a terminal",
    "FIELDSYNC_REFUSAL_RETENTION_DAYS": "a refused record (`GET /api/v1/refusals`) not pushed "
    "again for this many days is deleted (checked daily)",
    "FIELDSYNC_REFUSALS_PER_WORKER": "refused records kept per worker, the newest; older ones "
    "are deleted and only counted",
    "FIELDSYNC_TIME_ZONE": "the programme's time zone, an IANA name such as `Africa/Nairobi`: "
    "every time on the supervisor pages is shown in it (stored times stay UTC)",
}

# Core settings read outside sync.config, with their defaults in words.
_ELSEWHERE = (
    Setting(
        "FIELDSYNC_MASTER_KEY",
        "none",
        "the master key itself (base64 of 32 bytes, e.g. from a secret store); wins over the "
        "key file, and `init` then writes none",
    ),
    Setting(
        "FIELDSYNC_PASSWORD",
        "none",
        "the password for `fieldsync user add` / `user passwd` (else asked for, or read from "
        "standard input); not read by the server",
    ),
)


def _unset() -> dict[str, str]:
    """Settings whose Config default is None but which mean something when unset."""
    return {
        "FIELDSYNC_MASTER_KEY_FILE": "`<data dir>/master.key`",
        "FIELDSYNC_CLOUDANT_IAM_URL": f"`{DEFAULT_TOKEN_URL}`",
    }


def core_settings() -> tuple[Setting, ...]:
    """The core's settings, each default read from :class:`Config`."""
    defaults = {f.name: f.default for f in fields(Config)}
    unset = _unset()
    read = [
        Setting(name, unset.get(name) or shown(defaults[attr]), _CORE[name])
        for name, attr in setting_fields().items()
    ]
    return (*read, *_ELSEWHERE)


def every_setting() -> tuple[Setting, ...]:
    """The core's settings, then the packages' (``settings``, :mod:`sync.extensions`)."""
    from sync.packages import extensions  # here: the packages import this module

    return (*core_settings(), *extensions().settings)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(settings: Iterable[Setting]) -> str:
    """The settings as a markdown table: name, default, what it does."""
    rows = ["| setting | default | what it does |", "| --- | --- | --- |"]
    rows += [f"| `{s.name}` | {_cell(s.default)} | {_cell(s.meaning)} |" for s in settings]
    return "\n".join(rows) + "\n"


def splice(text: str, table: str) -> str:
    """``text`` with everything between :data:`START` and :data:`END` replaced by ``table``."""
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"the markers {START!r} and {END!r} must both be in the file")
    return f"{head}{START}\n{table}{END}{tail}"


def main(argv: list[str]) -> int:
    """``python -m sync.settings FILE``: write the settings table into FILE, between the markers."""
    if len(argv) != 1:
        print("usage: python -m sync.settings README.md", file=sys.stderr)
        return 2
    path = Path(argv[0])
    path.write_text(splice(path.read_text(), markdown_table(every_setting())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
