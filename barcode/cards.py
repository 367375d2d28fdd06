"""Patient ID cards: one layout, drawn as PNG, SVG (here) and PDF (:mod:`barcode.sheet`).

A card is ID-1 size (85.6 x 54 mm, a bank card), laid out in *dots* at 300 dpi
(1011 x 638) so every bar and QR module is a whole number of pixels in the
PNG and an exact multiple of 1/300 inch in the vector formats::

    +----------------------------------------------+
    | Patient ID card                  +--------+  |
    | 10000X                  (the ID) |  QR    |  |
    | Name                             |  code  |  |
    | Jane Doe   (or a line to write)  +--------+  |
    |                                              |
    |  ||| || |||| | ||| Code 128 of the ID || ||  |
    +----------------------------------------------+

Both symbols hold exactly the check-digit ID, nothing else, so any scanner
(and OpenMRS) reads the same text.  The QR code uses error-correction level H
(30% of the symbol can be lost): cards get scratched and photographed at angles.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from xml.sax.saxutils import escape

import segno
from PIL import Image, ImageDraw, ImageFont

from barcode import code128

DPI = 300
CARD_WIDTH, CARD_HEIGHT = 1011, 638  # 85.6 x 54 mm at 300 dpi
MARGIN = 40
QR_MODULE = 10  # dots: 0.85 mm
QR_QUIET = 4  # modules, as ISO/IEC 18004 asks
BAR_MODULE_MAX = 7  # dots: 0.59 mm, wide enough for a phone camera at arm's length
BAR_HEIGHT = 170
TEXT_WIDTH_PER_SIZE = 0.62  # a generous average advance of sans-serif glyphs


@dataclass(frozen=True)
class Box:
    """A filled black rectangle, in dots from the card's top-left corner."""

    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class Label:
    """A line of text; ``baseline`` is the y of its baseline, ``size`` its em size in dots."""

    x: int
    baseline: int
    size: int
    text: str
    bold: bool = False


@dataclass(frozen=True)
class CardLayout:
    patient_id: str
    width: int
    height: int
    boxes: tuple[Box, ...]
    labels: tuple[Label, ...]


def layout(patient_id: str, name: str | None = None, title: str = "Patient ID card") -> CardLayout:
    """Where everything on ``patient_id``'s card goes; ``name`` None leaves a line to write on."""
    qr_boxes, qr_left = _qr(patient_id)
    text_width = qr_left - MARGIN
    labels = [
        Label(MARGIN, 80, 34, title),
        Label(MARGIN, 178, _fit(patient_id, 84, text_width), patient_id, bold=True),
        Label(MARGIN, 246, 30, "Name"),
    ]
    boxes = [*qr_boxes, *_code128(patient_id)]
    if name:
        labels.append(Label(MARGIN, 312, _fit(name, 52, text_width), name))
    else:
        boxes.append(Box(MARGIN, 318, text_width, 3))
    return CardLayout(patient_id, CARD_WIDTH, CARD_HEIGHT, tuple(boxes), tuple(labels))


def _fit(text: str, size: int, width: int) -> int:
    """The largest size up to ``size`` at which ``text`` fits ``width`` (never below 16)."""
    estimate = TEXT_WIDTH_PER_SIZE * len(text)
    return max(16, min(size, int(width / estimate))) if estimate else size


def _qr(text: str) -> tuple[list[Box], int]:
    """The QR code's dark modules, top right, and the x where its quiet zone begins."""
    matrix = segno.make_qr(text, error="h").matrix
    side = (len(matrix) + 2 * QR_QUIET) * QR_MODULE
    left, top = CARD_WIDTH - side, 0
    origin_x, origin_y = left + QR_QUIET * QR_MODULE, top + QR_QUIET * QR_MODULE
    boxes = []
    for row, cells in enumerate(matrix):
        column = 0
        while column < len(cells):
            if not cells[column]:
                column += 1
                continue
            end = column
            while end < len(cells) and cells[end]:
                end += 1
            x, y = origin_x + column * QR_MODULE, origin_y + row * QR_MODULE
            boxes.append(Box(x, y, (end - column) * QR_MODULE, QR_MODULE))
            column = end
    return boxes, left


def _code128(text: str) -> list[Box]:
    """The Code 128 bars, centred along the bottom, as wide as the card allows."""
    total = len(code128.modules(text))
    module = min(BAR_MODULE_MAX, CARD_WIDTH // total)
    if module < 2:
        raise ValueError(f"{text!r} is too long for a Code 128 on a card")
    left = (CARD_WIDTH - total * module) // 2
    top = CARD_HEIGHT - MARGIN - BAR_HEIGHT
    return [
        Box(left + start * module, top, width * module, BAR_HEIGHT)
        for start, width in code128.bars(text)
    ]


# -- raster -------------------------------------------------------------------------


def raster(card: CardLayout, scale: int = 1) -> Image.Image:
    """The card as an 8-bit grey image at ``scale`` x 300 dpi."""
    image = Image.new("L", (card.width * scale, card.height * scale), 255)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, image.width - 1, image.height - 1), outline=170, width=scale)
    for box in card.boxes:
        x0, y0 = box.x * scale, box.y * scale
        draw.rectangle((x0, y0, x0 + box.w * scale - 1, y0 + box.h * scale - 1), fill=0)
    for label in card.labels:
        font = ImageFont.load_default(size=label.size * scale)
        stroke = max(1, label.size * scale // 40) if label.bold else 0
        xy = (label.x * scale, label.baseline * scale)
        draw.text(
            xy, label.text, fill=0, font=font, anchor="ls", stroke_width=stroke, stroke_fill=0
        )
    return image


def render_png(card: CardLayout, scale: int = 1) -> bytes:
    buffer = io.BytesIO()
    raster(card, scale).save(buffer, format="PNG", dpi=(DPI * scale, DPI * scale), optimize=True)
    return buffer.getvalue()


# -- SVG ----------------------------------------------------------------------------


def render_svg(card: CardLayout) -> str:
    """The card as SVG, sized in millimetres, with the bars and modules as one path."""
    width_mm, height_mm = card.width * 25.4 / DPI, card.height * 25.4 / DPI
    path = "".join(f"M{b.x} {b.y}h{b.w}v{b.h}h{-b.w}z" for b in card.boxes)
    texts = "".join(_svg_text(label) for label in card.labels)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width_mm:.1f}mm" '
        f'height="{height_mm:.1f}mm" viewBox="0 0 {card.width} {card.height}" '
        'shape-rendering="crispEdges">'
        f"<title>Patient ID {escape(card.patient_id)}</title>"
        f'<rect width="{card.width}" height="{card.height}" fill="#fff" stroke="#aaa"/>'
        f'<path d="{path}" fill="#000"/>'
        f'<g font-family="Helvetica, Arial, sans-serif" fill="#000">{texts}</g>'
        "</svg>\n"
    )


def _svg_text(label: Label) -> str:
    weight = ' font-weight="bold"' if label.bold else ""
    return (
        f'<text x="{label.x}" y="{label.baseline}" font-size="{label.size}"{weight}>'
        f"{escape(label.text)}</text>"
    )
