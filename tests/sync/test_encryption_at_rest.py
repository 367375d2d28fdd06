"""Encryption at rest (issue 2, point 4; DESIGN.md, "Encryption").

Bodies and attachments are sealed with AES-256-GCM under per-place data keys;
a unique marker written through the API must appear in no file under the data
dir, neither plain nor base64-encoded.  The associated data binds each
ciphertext to its document and revision, so swapping ciphertexts in the file
makes a read fail instead of answering with the wrong document.
"""

from __future__ import annotations

import base64
import math
import uuid
from contextlib import closing
from pathlib import Path

from sync_fixtures import Api, Client, as_user

from sync.store.schema import connect, db_path


def encodings(marker: bytes) -> list[bytes]:
    """``marker`` as it would look plain or inside base64 text at any byte alignment."""
    found = [marker]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + marker)
        found.append(encoded[math.ceil(shift * 8 / 6) : -4])
    return found


def files_containing(data_dir: Path, needle: bytes) -> list[str]:
    return [
        str(path.relative_to(data_dir))
        for path in sorted(data_dir.rglob("*"))
        if path.is_file() and any(form in path.read_bytes() for form in encodings(needle))
    ]


def markers() -> tuple[str, bytes]:
    return f"PATIENT-NAME-{uuid.uuid4().hex}", f"XRAY-BYTES-{uuid.uuid4().hex}".encode()


async def write_marked(api: Api, client: Client, field: str, data: bytes) -> None:
    att = {"content_type": "text/plain", "data": base64.b64encode(data).decode()}
    doc = {"place": "area-a1", "name": field, "_attachments": {"scan.txt": att}}
    assert (await api.call("PUT", "/health/patient-1", "alice", doc))[0] == 201
    rev = (await api.call("GET", "/health/patient-1", "alice"))[1]["_rev"]
    headers = {**as_user("alice"), "Content-Type": "application/octet-stream"}
    url = f"/health/patient-1/raw.bin?rev={rev}"
    assert (await client.put(url, data=data + b"-raw", headers=headers)).status == 201


async def test_markers_are_readable_through_the_api(api: Api, client: Client) -> None:
    field, data = markers()
    await write_marked(api, client, field, data)
    doc = (await api.call("GET", "/health/patient-1", "alice", attachments="true"))[1]
    assert doc["name"] == field
    assert base64.b64decode(doc["_attachments"]["scan.txt"]["data"]) == data
    raw = await client.get("/health/patient-1/raw.bin", headers=as_user("alice"))
    assert await raw.read() == data + b"-raw"


async def test_markers_appear_in_no_file(api: Api, client: Client, data_dir: Path) -> None:
    field, data = markers()
    await write_marked(api, client, field, data)
    await api.call("GET", "/health/_changes", "alice", include_docs="true")
    assert files_containing(data_dir, b"patient-1"), "the scan must see the (clear) doc ids"
    assert files_containing(data_dir, field.encode()) == []
    assert files_containing(data_dir, data) == []
    await client.close()  # checkpoints the WAL into the main file
    assert files_containing(data_dir, field.encode()) == []
    assert files_containing(data_dir, data) == []


async def test_local_documents_are_sealed_too(api: Api, client: Client, data_dir: Path) -> None:
    field, _ = markers()
    assert (await api.call("PUT", "/health/_local/notes", "alice", {"note": field}))[0] == 201
    assert (await api.call("GET", "/health/_local/notes", "alice"))[1]["note"] == field
    assert files_containing(data_dir, field.encode()) == []


async def test_the_scanner_finds_what_is_there(tmp_path: Path) -> None:
    field, _ = markers()
    (tmp_path / "plain").write_bytes(b"xx" + field.encode())
    for shift in range(3):
        (tmp_path / f"b64-{shift}").write_bytes(base64.b64encode(b"y" * shift + field.encode()))
    assert len(files_containing(tmp_path, field.encode())) == 4


# -- integrity -----------------------------------------------------------------------
def swap_bodies(data_dir: Path, first: tuple[str, str], second: tuple[str, str]) -> None:
    with closing(connect(db_path(data_dir))) as conn:
        select = "SELECT body FROM revs WHERE doc_id=? AND rev=?"
        one = conn.execute(select, first).fetchone()[0]
        two = conn.execute(select, second).fetchone()[0]
        update = "UPDATE revs SET body=? WHERE doc_id=? AND rev=?"
        conn.execute(update, (two, *first))
        conn.execute(update, (one, *second))


async def test_swapped_bodies_of_two_documents_fail_to_open(api: Api, data_dir: Path) -> None:
    [a, b] = await api.bulk([{"_id": "a", "place": "area-a1"}, {"_id": "b", "place": "area-a1"}])
    swap_bodies(data_dir, ("a", a["rev"]), ("b", b["rev"]))
    for doc_id in ("a", "b"):
        status, body = await api.call("GET", f"/health/{doc_id}", "alice")
        assert status == 500 and "integrity" in body["reason"]


async def test_swapped_bodies_of_two_revisions_fail_to_open(api: Api, data_dir: Path) -> None:
    status, first = await api.call("PUT", "/health/a", "alice", {"place": "area-a1", "v": 1})
    status, second = await api.call(
        "PUT", "/health/a", "alice", {"place": "area-a1", "v": 2, "_rev": first["rev"]}
    )
    swap_bodies(data_dir, ("a", first["rev"]), ("a", second["rev"]))
    for rev in (first["rev"], second["rev"]):
        status, body = await api.call("GET", "/health/a", "alice", rev=rev)
        assert status == 500 and body["error"] == "internal_server_error"


async def test_swapped_attachments_fail_to_open(api: Api, client: Client, data_dir: Path) -> None:
    atts = {
        name: {"content_type": "text/plain", "data": base64.b64encode(name.encode()).decode()}
        for name in ("one", "two")
    }
    await api.bulk([{"_id": "a", "place": "area-a1", "_attachments": atts}])
    with closing(connect(db_path(data_dir))) as conn:
        rows = conn.execute("SELECT digest, data FROM attachments ORDER BY digest").fetchall()
        for (digest, _), (_, data) in zip(rows, reversed(rows), strict=True):
            conn.execute("UPDATE attachments SET data=? WHERE digest=?", (data, digest))
    response = await client.get("/health/a/one", headers=as_user("alice"))
    assert response.status == 500
