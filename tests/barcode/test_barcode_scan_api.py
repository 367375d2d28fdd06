"""POST /api/v1/barcode/scan, in-process: uploads, patient lookup by scope, refusals."""

from __future__ import annotations

import base64
import io
import struct
import sys
import zlib
from typing import Any

import numpy as np
import pytest
from aiohttp import FormData
from PIL import Image

from barcode import cards, corpus
from barcode.checkdigit import append_check_char

SCAN = "/api/v1/barcode/scan"
PATIENT = append_check_char("2A7C9")  # in area-a (alice's)
OTHER = append_check_char("2A7D0")  # in area-b (bob's)


def card_png(patient_id: str, name: str | None = None) -> bytes:
    return cards.render_png(cards.layout(patient_id, name))


def photo_jpeg(patient_id: str) -> bytes:
    """A mildly distorted phone photo of the card (turned, skewed, JPEG 60)."""
    rng = np.random.default_rng(7)
    card = np.asarray(cards.raster(cards.layout(patient_id)), dtype=np.uint8)
    distortion = corpus.Distortion(
        card_fraction=0.6, angle=200, skew=0.04, light=0.7, shadow=False, blur=0.8,
        motion=0, noise=3, low_res=False, jpeg_quality=60,
    )  # fmt: skip
    return corpus.photograph(card, distortion, rng)


def png(width: int, height: int, value: int = 255) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), value).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk claiming ``width`` x ``height``, then a scrap of IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


async def post_image(api: Any, data: bytes, content_type: str, user: str = "alice") -> Any:
    headers = {**api.auth(user), "Content-Type": content_type}
    return await api.client.post(SCAN, data=data, headers=headers)


async def post_multipart(api: Any, data: bytes, field: str = "image", user: str = "alice") -> Any:
    form = FormData()
    form.add_field("note", "front of the card")
    form.add_field(field, data, filename="card.jpg", content_type="image/jpeg")
    return await api.client.post(SCAN, data=form, headers=api.auth(user))


@pytest.fixture
async def people(api: Any) -> None:
    await api.put_person(PATIENT, "area-a", "Amina Yusuf")
    await api.put_person(OTHER, "area-b", "Grace Banda")


# -- reading ---------------------------------------------------------------------


async def test_png_body_of_an_in_scope_patient_finds_them(api: Any, people: None) -> None:
    response = await post_image(api, card_png(PATIENT, "Amina Yusuf"), "image/png")
    assert response.status == 200
    body = await response.json()
    assert body["id"] == PATIENT
    assert body["valid"] is True
    assert body["reason"] is None
    assert body["patient"] == {"id": f"person-{PATIENT}", "name": "Amina Yusuf"}


async def test_multipart_jpeg_photo_is_read(api: Any, people: None) -> None:
    response = await post_multipart(api, photo_jpeg(PATIENT))
    assert response.status == 200
    body = await response.json()
    assert (body["id"], body["valid"]) == (PATIENT, True)
    assert body["patient"]["name"] == "Amina Yusuf"


async def test_patient_outside_the_callers_scope_is_null(api: Any, people: None) -> None:
    response = await post_image(api, card_png(OTHER), "image/png", user="alice")
    body = await response.json()
    assert (body["id"], body["valid"], body["patient"]) == (OTHER, True, None)
    # ... while the patient's own CHW and the supervisor see them.
    for user in ("bob", "sam"):
        response = await post_image(api, card_png(OTHER), "image/png", user=user)
        assert (await response.json())["patient"]["name"] == "Grace Banda"


async def test_valid_id_without_a_person_is_null(api: Any) -> None:
    response = await post_image(api, card_png(append_check_char("99999")), "image/png")
    body = await response.json()
    assert body["valid"] is True
    assert body["patient"] is None


async def test_wrong_check_digit_is_reported_and_never_looked_up(api: Any) -> None:
    typo = PATIENT[:-1] + ("0" if PATIENT[-1] != "0" else "1")
    await api.put_person(typo, "area-a", "Someone Else")  # must not be returned
    response = await post_image(api, card_png(typo), "image/png")
    assert response.status == 200
    body = await response.json()
    assert body == {
        "id": typo,
        "valid": False,
        "reason": "check digit is wrong",
        "patient": None,
        "symbology": body["symbology"],
    }


async def test_bad_character_is_reported(api: Any) -> None:
    response = await post_image(api, card_png("10B3EY"), "image/png")
    body = await response.json()
    assert body["valid"] is False
    assert body["reason"] == "character 'B' at position 3 is not allowed in a luhn30 ID"


# -- refusals ------------------------------------------------------------------------


async def test_no_barcode_is_422(api: Any) -> None:
    response = await post_image(api, png(800, 600, 200), "image/png")
    assert response.status == 422
    body = await response.json()
    assert body["error"] == "no_barcode"
    assert "No barcode" in body["reason"]


async def test_bytes_that_are_not_an_image_are_415(api: Any) -> None:
    response = await post_image(api, b"GIF89a not what we take", "image/jpeg")
    assert response.status == 415
    assert (await response.json())["error"] == "not_an_image"
    response = await post_multipart(api, b"%PDF-1.4 a document")
    assert response.status == 415


async def test_unsupported_content_type_is_415(api: Any) -> None:
    response = await post_image(api, card_png(PATIENT), "text/plain")
    assert response.status == 415
    assert (await response.json())["error"] == "bad_content_type"


async def test_multipart_without_an_image_field_is_400(api: Any) -> None:
    response = await post_multipart(api, card_png(PATIENT), field="photo")
    assert response.status == 400


async def test_image_over_the_byte_limit_is_413(api: Any) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (700, 700), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    too_big = buffer.getvalue()
    assert len(too_big) > 400_000  # conftest's max_image_bytes
    for response in (
        await post_image(api, too_big, "image/png"),
        await post_multipart(api, too_big),
    ):
        assert response.status == 413
        body = await response.json()
        assert body["error"] == "image_too_large"
        assert "400000 bytes" in body["reason"]


async def test_decompression_bomb_is_refused_before_decoding(api: Any) -> None:
    bomb = png(2500, 2500, 0)  # 6.25 megapixels > conftest's 4, in a few kilobytes
    assert len(bomb) < 50_000
    response = await post_image(api, bomb, "image/png")
    assert response.status == 422
    body = await response.json()
    assert body["error"] == "image_dimensions"
    assert "2500 x 2500" in body["reason"]
    # A header claiming 10 gigapixels is refused from the header alone.
    response = await post_image(api, png_header_only(100_000, 100_000), "image/png")
    assert response.status == 422
    assert (await response.json())["error"] == "image_dimensions"


async def test_truncated_image_is_422(api: Any) -> None:
    whole = card_png(PATIENT)
    response = await post_image(api, whole[:200], "image/png")
    assert response.status == 422
    assert (await response.json())["error"] == "corrupt_image"


async def test_scan_needs_credentials(api: Any) -> None:
    response = await api.client.post(
        SCAN, data=card_png(PATIENT), headers={"Content-Type": "image/png"}
    )
    assert response.status == 401


# -- without zbar -----------------------------------------------------------------------


async def test_without_libzbar_the_server_starts_and_scans_are_503(
    aiohttp_client: Any, config: Any, app_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes `import pyzbar.pyzbar` raise ImportError, as pyzbar
    # itself does when it cannot find the shared library.
    monkeypatch.setitem(sys.modules, "pyzbar.pyzbar", None)
    client = await aiohttp_client(app_factory(config))
    assert (await client.get("/_up")).status == 200
    headers = {"Authorization": _basic("alice"), "Content-Type": "image/png"}
    response = await client.post(SCAN, data=card_png(PATIENT), headers=headers)
    assert response.status == 503
    body = await response.json()
    assert body["error"] == "decoder_unavailable"
    assert "libzbar0" in body["reason"]
    # Allocation does not need zbar.
    response = await client.post(
        "/api/v1/patient-ids", json={"count": 1}, headers={"Authorization": _basic("alice")}
    )
    assert response.status == 201


def _basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:correct horse".encode()).decode()
