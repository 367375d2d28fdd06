"""The backup archive (issue 12, point 7): sealed, self-sufficient, and refused when altered.

The sealed stream is tested on small chunks (every cut and every flipped byte);
the archive of a real data dir, written after the app stored a marker document,
must hold neither the marker nor any key in the clear, and a restore must leave
nothing behind when it refuses.
"""

from __future__ import annotations

import base64
import io
import secrets
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from sync_fixtures import Api, running

from sync.backup import archive, sealed, shares
from sync.backup.archive import TargetInUse
from sync.backup.sealed import ArchiveError, Header
from sync.backup.shares import ShareError
from sync.backup.snapshot import copy_store
from sync.config import Config
from sync.keys import KeyError_, LocalMasterKey, load_master_key
from sync.store.schema import connect, db_path

MARKER = "Zanele-Okonkwo-7f3a9c-unique-marker"
Lines = list[str]


def sealed_bytes(plaintext: bytes, key: bytes, chunk_bytes: int = 64) -> tuple[Header, bytes]:
    header = Header("00112233445566AA", "2026-01-01T00:00:00+00:00", 3, 4, "", chunk_bytes)
    header = Header(**{**header.__dict__, "key_check": sealed.key_check(key, header.archive_id)})
    out = io.BytesIO()
    writer = sealed.SealingWriter(out, key, header)
    for start in range(0, len(plaintext), 50):  # writes that do not line up with chunks
        writer.write(plaintext[start : start + 50])
    writer.close()
    return header, out.getvalue()


def opened(raw: bytes, key: bytes) -> bytes:
    source = io.BytesIO(raw)
    header, raw_header = sealed.read_header(source)
    return b"".join(sealed.opened(source, key, header, raw_header))


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 128, 1000])
def test_the_sealed_stream_gives_back_what_went_in(size: int) -> None:
    key, plaintext = secrets.token_bytes(32), secrets.token_bytes(size)
    _, raw = sealed_bytes(plaintext, key)
    assert opened(raw, key) == plaintext
    assert plaintext[:16] not in raw or size < 16


def test_every_cut_of_the_archive_is_refused() -> None:
    key = secrets.token_bytes(32)
    _, raw = sealed_bytes(secrets.token_bytes(300), key)
    for end in range(len(raw)):
        with pytest.raises(ArchiveError):
            opened(raw[:end], key)


def test_every_flipped_byte_is_refused() -> None:
    key = secrets.token_bytes(32)
    _, raw = sealed_bytes(secrets.token_bytes(200), key)
    for where in range(len(raw)):
        altered = bytearray(raw)
        altered[where] ^= 0x01
        with pytest.raises(ArchiveError):
            opened(bytes(altered), key)


def test_reordered_repeated_or_appended_chunks_are_refused() -> None:
    key = secrets.token_bytes(32)
    header, raw = sealed_bytes(secrets.token_bytes(64 * 3 + 10), key)
    start = len(sealed.MAGIC) + 4 + len(header.encoded())
    size = 4 + 64 + sealed.TAG_BYTES
    chunks = [raw[start + i * size : start + (i + 1) * size] for i in range(3)]
    last = raw[start + 3 * size :]
    for body in (
        chunks[1] + chunks[0] + chunks[2] + last,  # swapped
        chunks[0] + chunks[0] + chunks[1] + chunks[2] + last,  # repeated
        chunks[0] + chunks[1] + last,  # one dropped
        chunks[0] + chunks[1] + chunks[2] + last + chunks[0],  # something after the last
    ):
        with pytest.raises(ArchiveError):
            opened(raw[:start] + body, key)


def test_the_wrong_key_opens_nothing() -> None:
    _, raw = sealed_bytes(b"x" * 100, secrets.token_bytes(32))
    with pytest.raises(ArchiveError, match="altered or cut short"):
        opened(raw, secrets.token_bytes(32))


def test_a_file_that_is_not_an_archive_is_named_as_such() -> None:
    with pytest.raises(ArchiveError, match="not a fieldsync backup archive"):
        sealed.read_header(io.BytesIO(b"SQLite format 3\x00" + bytes(100)))


# -- a real data dir -------------------------------------------------------------------
@pytest.fixture
async def stored(config: Config) -> Config:
    """The app has stored a document whose body holds the marker, and stopped."""
    async with running(config) as client:
        doc = {"_id": "patient-1", "place": "area-a1", "name": MARKER, "note": MARKER * 20}
        assert (await Api(client).call("PUT", "/health/patient-1", "alice", doc))[0] == 201
    return config


def backed_up(config: Config, out: Path, k: int = 3, n: int = 4) -> archive.Written:
    master = load_master_key(config.key_file, create=False)
    return archive.write(config.data_dir, master, out, k, n, lambda _line: None)


def test_the_archive_holds_no_document_text_and_no_key_in_the_clear(
    stored: Config, tmp_path: Path
) -> None:
    out = tmp_path / "backup.fsb"
    written = backed_up(stored, out)
    raw = out.read_bytes()
    master = load_master_key(stored.key_file, create=False).key
    assert MARKER.encode() not in raw and MARKER.encode() not in raw.lower()
    for secret in (master, base64.b64encode(master), master.hex().encode()):
        assert secret not in raw
    with closing(sqlite3.connect(db_path(stored.data_dir))) as conn:
        wrapped = [bytes(w) for (w,) in conn.execute("SELECT wrapped FROM data_keys")]
    assert wrapped and not any(w in raw for w in wrapped)
    for share in written.shares:
        assert share.y not in raw and share.text().encode() not in raw
    assert b"users" not in raw and b"CREATE TABLE" not in raw  # not even the schema
    assert not list(stored.data_dir.glob(".backup-*")), "the snapshot was left behind"


def test_a_copy_its_master_key_does_not_open_is_never_written(
    stored: Config, tmp_path: Path
) -> None:
    """As if ``keys rewrap`` ran between reading the master key and copying the store."""
    out = tmp_path / "backup.fsb"
    other = LocalMasterKey(secrets.token_bytes(32))
    with pytest.raises(
        KeyError_, match="does not open 2 key\\(s\\) of the copy \\(first: \\(shared\\) v1\\)"
    ):
        archive.write(stored.data_dir, other, out, 3, 4, lambda _line: None)
    assert not out.exists() and not list(tmp_path.glob(".backup.fsb*"))
    assert not list(stored.data_dir.glob(".backup-*"))


def test_a_backup_never_overwrites_a_file(stored: Config, tmp_path: Path) -> None:
    out = tmp_path / "backup.fsb"
    out.write_bytes(b"an older backup")
    with pytest.raises(Exception, match="never overwrites a file"):
        backed_up(stored, out)
    assert out.read_bytes() == b"an older backup"


def test_a_restore_gives_back_the_store_and_its_master_key(stored: Config, tmp_path: Path) -> None:
    out, target = tmp_path / "backup.fsb", tmp_path / "restored"
    written = backed_up(stored, out)
    archive.restore(out, written.shares[1:], target, lambda _line: None)
    assert (target / "master.key").read_text() == stored.key_file.read_text()
    assert (target / "master.key").stat().st_mode & 0o777 == 0o600
    with closing(sqlite3.connect(db_path(target))) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT id FROM docs").fetchall() == [("patient-1",)]
        (action,) = conn.execute("SELECT action FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    assert action == "restore"


Refusal = Callable[[Path, archive.Written, Path], None]


def cut(out: Path, _: archive.Written, __: Path) -> None:
    out.write_bytes(out.read_bytes()[:-100])


def flipped(out: Path, _: archive.Written, __: Path) -> None:
    raw = bytearray(out.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    out.write_bytes(bytes(raw))


def header_edited(out: Path, _: archive.Written, __: Path) -> None:
    raw = out.read_bytes()
    assert b'"created": "2' in raw
    out.write_bytes(raw.replace(b'"created": "2', b'"created": "1', 1))


@pytest.mark.parametrize(
    ("spoil", "refusal"),
    [
        (cut, "cut short"),
        (flipped, "altered or cut short"),
        (header_edited, "altered or cut short"),
    ],
)
def test_a_spoilt_archive_is_refused_and_leaves_nothing(
    stored: Config, tmp_path: Path, spoil: Refusal, refusal: str
) -> None:
    out, target = tmp_path / "backup.fsb", tmp_path / "restored"
    written = backed_up(stored, out)
    spoil(out, written, target)
    with pytest.raises(ArchiveError, match=refusal):
        archive.restore(out, written.shares[:3], target, lambda _line: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.fsb", "data"]


def test_too_few_or_foreign_shares_write_nothing(stored: Config, tmp_path: Path) -> None:
    out, target = tmp_path / "backup.fsb", tmp_path / "restored"
    written = backed_up(stored, out)
    other = backed_up(stored, tmp_path / "other.fsb")
    with pytest.raises(ShareError, match="2 share\\(s\\) given, but this backup needs 3 of its 4"):
        archive.restore(out, written.shares[:2], target, lambda _line: None)
    with pytest.raises(ShareError, match=f"belongs to backup {other.header.archive_id}"):
        archive.restore(out, [*written.shares[:2], other.shares[2]], target, lambda _line: None)
    forged = shares.Share(written.header.archive_id, 3, 4, 4, secrets.token_bytes(32))
    with pytest.raises(ShareError, match="do not open this archive"):
        archive.restore(out, [*written.shares[:2], forged], target, lambda _line: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.fsb", "data", "other.fsb"]


def test_a_restore_never_writes_over_a_store_or_into_a_full_folder(
    stored: Config, tmp_path: Path
) -> None:
    out = tmp_path / "backup.fsb"
    written = backed_up(stored, out)
    before = db_path(stored.data_dir).read_bytes()
    with pytest.raises(TargetInUse, match="already holds a fieldsync store"):
        archive.restore(out, written.shares[:3], stored.data_dir, lambda _line: None)
    assert db_path(stored.data_dir).read_bytes() == before
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    with pytest.raises(TargetInUse, match="is not an empty folder"):
        archive.restore(out, written.shares[:3], full, lambda _line: None)
    assert [p.name for p in full.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    archive.restore(out, written.shares[:3], empty, lambda _line: None)
    assert db_path(empty).is_file()


def test_the_copy_is_of_one_moment_though_writes_land_between_its_steps(
    stored: Config, tmp_path: Path
) -> None:
    """Each progress step lets another connection write; the copy never starts over and
    holds none of those writes (without the held read transaction it would restart)."""
    store = db_path(stored.data_dir)
    with closing(connect(store, create=False)) as conn:
        conn.execute("CREATE TABLE filler(x BLOB)")
        conn.executemany("INSERT INTO filler VALUES(randomblob(4000))", [()] * 3000)
    steps: list[tuple[int, int]] = []
    with closing(connect(store, create=False)) as writer:

        def progress(done: int, total: int) -> None:
            steps.append((done, total))
            if len(steps) <= 3:
                key = f"during-{len(steps)}"
                writer.execute("INSERT INTO meta(key, value) VALUES(?, 'x')", (key,))

        snapshot = copy_store(store, tmp_path / "copy.sqlite3", progress)
    assert len(steps) > 2, "the copy should take several steps"
    assert [d for d, _ in steps] == sorted(d for d, _ in steps), "the copy started over"
    assert steps[-1][0] == steps[-1][1] == snapshot.pages
    with closing(sqlite3.connect(snapshot.path)) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("SELECT count(*) FROM filler").fetchone() == (3000,)
        assert copy.execute("SELECT key FROM meta WHERE key LIKE 'during-%'").fetchall() == []
    with closing(sqlite3.connect(store)) as live:
        (during,) = live.execute("SELECT count(*) FROM meta WHERE key LIKE 'during-%'").fetchone()
    assert during == 3
