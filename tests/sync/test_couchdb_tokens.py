"""Since-tokens on the CouchDB backend: a cursor per place, short whatever the scope.

A supervisor reads a hundred places.  A token holding every place's position
would grow with the scope and ride on every row of ``_changes`` (and PouchDB
puts it in the URL).  With a scope that wide, a token names the start of the
request (kept in CouchDB) and carries only the places that moved.  Paging with
any row's token must still bring every document exactly where a full vector would.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from shared_org import PLACES, seed
from sync_fixtures import Api, until_served

from sync.app import create_app
from sync.config import Config
from sync.errors import BadRequest
from sync.replication import vector

Client = TestClient[Any, Any]
AREAS = [(f"area-x{n}", "district-b") for n in range(80)]  # sam reads district-b


@pytest.fixture
async def wide(
    aiohttp_client: Callable[..., Awaitable[Client]],
    tmp_path: Path,
    couchdb_url: str,
    couch_prefix: str,
) -> Api:
    seed(tmp_path / "data", PLACES + AREAS)
    config = Config(
        data_dir=tmp_path / "data",
        require_enrolment=False,
        couchdb_url=couchdb_url,
        couchdb_prefix=couch_prefix,
    )
    return await until_served(Api(await aiohttp_client(create_app(config))))


async def _page(api: Api, since: str, limit: int) -> dict[str, Any]:
    status, page = await api.call("GET", "/health/_changes", "sam", since=since, limit=limit)
    assert status == 200, page
    return dict(page)


async def test_a_wide_scope_pages_through_every_place_with_short_tokens(wide: Api) -> None:
    docs = [{"_id": f"d{n:03d}", "place": AREAS[n % 60][0]} for n in range(120)]
    await wide.bulk(docs)
    seen: list[str] = []
    since, longest = "0", 0
    for _ in range(100):
        page = await _page(wide, since, 7)
        if not page["results"]:
            break
        seen += [row["id"] for row in page["results"]]
        longest = max([longest, *(len(str(row["seq"])) for row in page["results"])])
        since = str(page["results"][-1]["seq"])  # PouchDB resumes from the last row's seq
    assert sorted(seen) == sorted(d["_id"] for d in docs)
    assert len(seen) == len(set(seen))
    assert since.startswith("v2-") and longest < 400
    await wide.bulk([{"_id": "late", "place": "area-x59"}])
    assert [row["id"] for row in (await _page(wide, since, 100))["results"]] == ["late"]


async def test_a_token_naming_a_start_the_server_never_kept_counts_from_zero(wide: Api) -> None:
    await wide.bulk([{"_id": "d1", "place": "area-x1"}])
    forged = vector.VectorToken({}, "0" * 32).render()
    assert [row["id"] for row in (await _page(wide, forged, 100))["results"]] == ["d1"]


@pytest.mark.parametrize(
    "raw",
    ["v2-zz", "v2-" + "0" * 31 + "-eJyLjgUAARUAuQ", "v1-notbase64!", "c1-1", "v3-x", 5],
)
def test_a_malformed_token_is_a_clear_400(raw: object) -> None:
    with pytest.raises(BadRequest, match="since"):
        vector.parse(raw, admin=False)


# -- an admin's tokens: CouchDB's own, after a count of the rows up to there ------------
async def _admin_page(api: Api, **query: Any) -> dict[str, Any]:
    status, page = await api.call("GET", "/health/_changes", "admin", **query)
    assert status == 200, page
    return dict(page)


async def test_an_admins_token_counts_the_rows_as_couchdbs_own_do(wide: Api) -> None:
    """PouchDB's suite checks that, after one document, the checkpoint starts with "1-"."""
    await wide.bulk([{"_id": "first", "place": "area-x1"}])
    page = await _admin_page(wide, since="0")
    assert [row["id"] for row in page["results"]] == ["first"]
    assert str(page["last_seq"]).startswith("1-c2-")
    await wide.bulk([{"_id": f"n{n}", "place": "area-x2"} for n in range(3)])
    later = await _admin_page(wide, since=page["last_seq"])
    assert sorted(row["id"] for row in later["results"]) == ["n0", "n1", "n2"]
    assert [str(row["seq"]).split("-")[0] for row in later["results"]] == ["2", "3", "4"]
    assert str(later["last_seq"]).startswith("4-c2-")
    status, info = await wide.call("GET", "/health", "admin")
    assert status == 200 and str(info["update_seq"]).startswith("4-c2-"), info
    nothing = await _admin_page(wide, since=info["update_seq"])
    assert nothing["results"] == [] and str(nothing["last_seq"]).startswith("4-c2-")


async def test_an_admins_token_of_the_earlier_form_still_resumes(wide: Api) -> None:
    await wide.bulk([{"_id": "a", "place": "area-x1"}])
    page = await _admin_page(wide, since="0")
    earlier = "c1-" + str(page["last_seq"]).split("-c2-", 1)[1]
    await wide.bulk([{"_id": "b", "place": "area-x1"}])
    assert [row["id"] for row in (await _admin_page(wide, since=earlier))["results"]] == ["b"]


@pytest.mark.parametrize("raw", ["1-c2-", "x-c2-5", "1-c3-5", "-c2-5", "1234567890123456-c2-5"])
def test_a_malformed_admin_token_is_a_clear_400(raw: str) -> None:
    with pytest.raises(BadRequest, match="since"):
        vector.parse(raw, admin=True)


def test_an_admins_token_is_not_a_workers(raw: str = "1-c2-5") -> None:
    assert vector.parse(raw, admin=True) == vector.GlobalToken("5", 1)
    with pytest.raises(BadRequest, match="since"):
        vector.parse(raw, admin=False)


def test_tokens_packed_before_and_now_read_the_same_and_stored_starts_keep_their_names() -> None:
    """Row tokens are packed with a small zlib window (cheap per row); tokens a phone holds
    from before (zlib's default window) still resume, and the name a stored start is kept
    under (``v2-`` tokens) is still the hash of the earlier packing."""
    positions = {f"5b0c2a7e-1f3d-4c55-9d2e-{n:012d}": (1000 + n, n % 3) for n in range(24)}
    earlier = (
        base64.urlsafe_b64encode(
            zlib.compress(orjson.dumps([[p, d, o] for p, (d, o) in sorted(positions.items())]), 9)
        )
        .decode()
        .rstrip("=")
    )
    now = vector.pack(positions)
    assert now != earlier  # the window in the stream's header differs
    for packed in (earlier, now):
        assert vector.parse("v1-" + packed, admin=False) == vector.VectorToken(positions)
    assert len(now) <= len(earlier) + 4
    assert vector.base_key(positions) == hashlib.sha256(earlier.encode()).hexdigest()[:32]
