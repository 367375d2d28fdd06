"""A scan is logged (issue 12, point 4): the result, never the image, the ID or the name."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from barcode import cards
from barcode.checkdigit import append_check_char

PATIENT = append_check_char("2A7C9")  # in area-a (alice's)


async def test_a_scan_logs_its_result_only(api: Any) -> None:
    await api.put_person(PATIENT, "area-a", "Amina Yusuf")
    image = cards.render_png(cards.layout(PATIENT, "Amina Yusuf"))
    headers = {**api.auth("alice"), "Content-Type": "image/png"}
    with capture_logs() as logs:
        response = await api.client.post("/api/v1/barcode/scan", data=image, headers=headers)
    assert response.status == 200
    [scanned] = [line for line in logs if line["event"] == "barcode_scanned"]
    assert (scanned["valid"], scanned["patient_found"]) == (True, True)
    said = repr(logs)
    assert PATIENT not in said and "Amina" not in said and "PNG" not in said
