"""ID cards: the PNG and the SVG carry a Code 128 and a QR code of the ID; the PDF sheet."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pyzbar.pyzbar import ZBarSymbol, decode

from barcode import cards, sheet
from barcode.checkdigit import append_check_char

SVG = "{http://www.w3.org/2000/svg}"
SYMBOLS = [ZBarSymbol.CODE128, ZBarSymbol.QRCODE]


def symbols_in(image: Image.Image | np.ndarray) -> set[tuple[str, str]]:
    return {(s.type, s.data.decode()) for s in decode(image, symbols=SYMBOLS)}


@pytest.mark.parametrize(
    ("patient_id", "name"),
    [
        ("10000X", "Jane Doe"),
        ("1003EY", None),
        ("24687", "Ngozi Okafor"),  # all digits: Code 128 set C
        (append_check_char("ACDEFGHJK"), "A very long name that has to shrink to fit"),
    ],
)
def test_png_holds_a_code128_and_a_qr_code_of_the_id(patient_id: str, name: str | None) -> None:
    png = cards.render_png(cards.layout(patient_id, name))
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.size == (cards.CARD_WIDTH, cards.CARD_HEIGHT)
    assert image.info["dpi"] == pytest.approx((300, 300), abs=0.1)
    assert symbols_in(image) == {("CODE128", patient_id), ("QRCODE", patient_id)}


def test_layout_prints_the_id_and_name() -> None:
    layout = cards.layout("10000X", "Jane Doe")
    texts = [label.text for label in layout.labels]
    assert "10000X" in texts
    assert "Jane Doe" in texts
    blank = cards.layout("10000X")
    assert "Jane Doe" not in [label.text for label in blank.labels]
    assert len(blank.boxes) == len(layout.boxes) + 1  # the line to write the name on


def test_everything_stays_on_the_card() -> None:
    layout = cards.layout(append_check_char("ACDEFGHJKLM"), "Name")
    for box in layout.boxes:
        assert box.x >= 0 and box.x + box.w <= layout.width
        assert box.y >= 0 and box.y + box.h <= layout.height


def test_an_id_too_long_for_a_card_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        cards.layout("1" + "A" * 60)


def rasterise_svg(svg: str) -> np.ndarray:
    """Fill the SVG's one path (rectangles ``Mx yhWvHh-Wz``) into a grey image."""
    root = ET.fromstring(svg)
    _, _, width, height = (int(v) for v in root.attrib["viewBox"].split())
    image = np.full((height, width), 255, np.uint8)
    path = root.find(f"{SVG}path")
    assert path is not None
    for x, y, w, h in re.findall(r"M(\d+) (\d+)h(\d+)v(\d+)h-\d+z", path.attrib["d"]):
        image[int(y) : int(y) + int(h), int(x) : int(x) + int(w)] = 0
    return image


def test_svg_holds_the_same_symbols_and_text() -> None:
    svg = cards.render_svg(cards.layout("10000X", "Jane <Doe> & Sons"))
    root = ET.fromstring(svg)  # well-formed, the name escaped
    assert root.attrib["width"] == "85.6mm"
    assert root.attrib["height"] == "54.0mm"
    texts = [element.text for element in root.iter(f"{SVG}text")]
    assert "10000X" in texts
    assert "Jane <Doe> & Sons" in texts
    assert symbols_in(rasterise_svg(svg)) == {("CODE128", "10000X"), ("QRCODE", "10000X")}


# -- the PDF sheet ---------------------------------------------------------------------


def pdf_streams(pdf: bytes) -> list[bytes]:
    """The decoded content streams (reportlab writes ASCII85 over Flate)."""
    streams = []
    for raw in re.findall(rb"(?<!end)stream\r?\n(.*?)endstream", pdf, re.DOTALL):
        data = raw.strip()
        if data.endswith(b"~>"):
            data = base64.a85decode(data[:-2], ignorechars=b" \t\r\n")
        streams.append(zlib.decompress(data))
    return streams


@pytest.mark.parametrize("count", [1, 10, 23])
def test_pdf_sheet_has_every_card(count: int) -> None:
    ids = [append_check_char(f"3{n:04d}") for n in range(count)]
    pdf = sheet.render_pdf([cards.layout(i, f"Patient {n}") for n, i in enumerate(ids)])
    assert pdf.startswith(b"%PDF-1.")
    assert pdf.rstrip().endswith(b"%%EOF")
    pages = -(-count // sheet.CARDS_PER_PAGE)
    assert len(re.findall(rb"/Type /Page\b", pdf)) == pages
    content = b"".join(pdf_streams(pdf))
    for patient_id in ids:
        assert content.count(f"({patient_id}) Tj".encode()) == 1


@pytest.mark.skipif(shutil.which("gs") is None, reason="Ghostscript renders the PDF")
def test_printed_sheet_scans(tmp_path: Path) -> None:
    ids = [append_check_char(f"4{n:04d}") for n in range(10)]
    (tmp_path / "sheet.pdf").write_bytes(sheet.render_pdf([cards.layout(i) for i in ids]))
    subprocess.run(
        ["gs", "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=pnggray", "-r150",
         f"-sOutputFile={tmp_path / 'page.png'}", str(tmp_path / "sheet.pdf")],
        check=True,
    )  # fmt: skip
    found = symbols_in(Image.open(tmp_path / "page.png"))
    assert {text for kind, text in found if kind == "QRCODE"} == set(ids)
    assert {text for kind, text in found if kind == "CODE128"} == set(ids)


# -- over HTTP -----------------------------------------------------------------------------


async def test_card_route_fills_the_name_only_in_scope(api: Any) -> None:
    patient_id = append_check_char("5A5A5")
    await api.put_person(patient_id, "area-a", "Amina Yusuf")
    path = f"/api/v1/patient-ids/{patient_id}/card"
    own = await api.client.get(path, params={"format": "svg"}, headers=api.auth("alice"))
    assert own.status == 200
    assert own.content_type == "image/svg+xml"
    assert "Amina Yusuf" in await own.text()
    other = await api.client.get(path, params={"format": "svg"}, headers=api.auth("bob"))
    assert "Amina Yusuf" not in await other.text()
    png = await api.client.get(path, headers=api.auth("alice"))
    assert png.content_type == "image/png"
    assert symbols_in(Image.open(io.BytesIO(await png.read()))) == {
        ("CODE128", patient_id),
        ("QRCODE", patient_id),
    }


async def test_card_route_refusals(api: Any) -> None:
    bad = await api.client.get("/api/v1/patient-ids/10000Y/card", headers=api.auth("alice"))
    assert bad.status == 400
    fmt = await api.client.get(
        "/api/v1/patient-ids/10000X/card", params={"format": "gif"}, headers=api.auth("alice")
    )
    assert fmt.status == 400


async def test_sheet_route_prints_new_ids(api: Any) -> None:
    status, body = await api.call("POST", "/api/v1/patient-ids", "alice", {"count": 12})
    response = await api.client.post(
        "/api/v1/patient-ids/sheet", json={"ids": body["ids"]}, headers=api.auth("alice")
    )
    assert response.status == 200
    assert response.content_type == "application/pdf"
    pdf = await response.read()
    assert len(re.findall(rb"/Type /Page\b", pdf)) == 2
    status, body = await api.call("POST", "/api/v1/patient-ids/sheet", "alice", {"ids": []})
    assert status == 400
