"""The enrolment code as a QR code, inline SVG (no image request, no JavaScript)."""

from __future__ import annotations

import segno


def svg(payload: str, title: str = "Enrolment QR code") -> str:
    """An ``<svg>`` element for HTML; medium error correction survives a scuffed screen."""
    code = segno.make(payload, error="m")
    return str(code.svg_inline(scale=5, border=4, title=title, svgclass="qr"))
