"""A printable PDF sheet of ID cards: A4, 2 x 5 cards a page, with cut lines.

Each card is the same :class:`barcode.cards.CardLayout` the PNG and SVG are
drawn from, drawn here in dots (1/300 inch) scaled to PDF points (1/72 inch),
so the bars keep their exact widths on paper.  Text uses the PDF base fonts
(Helvetica), which cover Latin-1: names in other scripts would need a TTF
font registered with reportlab.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from reportlab.lib.pagesizes import A4  # type: ignore[import-untyped]
from reportlab.lib.units import mm  # type: ignore[import-untyped]
from reportlab.pdfgen.canvas import Canvas  # type: ignore[import-untyped]

from barcode.cards import DPI, CardLayout

COLUMNS, ROWS = 2, 5
CARDS_PER_PAGE = COLUMNS * ROWS
LEFT, TOP = 15 * mm, 6 * mm
COLUMN_STEP, ROW_STEP = (85.6 + 8.8) * mm, (54 + 3.75) * mm
POINTS_PER_DOT = 72 / DPI


def render_pdf(cards: Sequence[CardLayout], title: str = "Patient ID cards") -> bytes:
    """The cards on as many A4 pages as they need (at least one)."""
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=A4, invariant=1, pageCompression=1)
    canvas.setTitle(title)
    canvas.setCreator("fieldsync")
    for index, card in enumerate(cards):
        if index and index % CARDS_PER_PAGE == 0:
            canvas.showPage()
        slot = index % CARDS_PER_PAGE
        column, row = slot % COLUMNS, slot // COLUMNS
        _draw_card(canvas, card, LEFT + column * COLUMN_STEP, A4[1] - TOP - row * ROW_STEP)
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()


def _draw_card(canvas: Canvas, card: CardLayout, left: float, top: float) -> None:
    """Draw ``card`` with its top-left corner at (left, top) in points."""
    canvas.saveState()
    canvas.translate(left, top)
    canvas.scale(POINTS_PER_DOT, -POINTS_PER_DOT)  # dots, y downwards, as in the layout
    canvas.setStrokeGray(0.67)
    canvas.setLineWidth(1)
    canvas.rect(0, 0, card.width, card.height, stroke=1, fill=0)
    canvas.setFillGray(0)
    path = canvas.beginPath()
    for box in card.boxes:
        path.rect(box.x, box.y, box.w, box.h)
    canvas.drawPath(path, stroke=0, fill=1)
    for label in card.labels:
        canvas.saveState()
        canvas.translate(label.x, label.baseline)
        canvas.scale(1, -1)  # text upright again
        canvas.setFont("Helvetica-Bold" if label.bold else "Helvetica", label.size)
        canvas.drawString(0, 0, label.text)
        canvas.restoreState()
    canvas.restoreState()
