"""The decoder, below HTTP: image checks, the variant loop's rules, and the variants."""

from __future__ import annotations

import io
import itertools

import cv2
import numpy as np
import pytest
from PIL import Image

from barcode import cards, code128
from barcode.checkdigit import Scheme
from barcode.decode import decode_pixels
from barcode.errors import (
    AmbiguousScan,
    CorruptImage,
    ImageDimensions,
    ImageTooLarge,
    NoBarcode,
    NotAnImage,
)
from barcode.images import Gray, Limits, header_size, load_gray, sniff
from barcode.variants import barcode_regions, rotate, variants
from barcode.zbar import load_zbar

LIMITS = Limits(max_bytes=1_000_000, max_pixels=2_000_000)
BLANK = np.full((300, 400), 255, np.uint8)


def encoded(image: Gray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


# -- images -------------------------------------------------------------------------------


def test_sniff() -> None:
    assert sniff(encoded(BLANK, ".png")) == "PNG"
    assert sniff(encoded(BLANK, ".jpg")) == "JPEG"
    assert sniff(encoded(BLANK, ".bmp")) is None
    assert sniff(b"") is None


def test_header_size_reads_no_pixels() -> None:
    assert header_size(encoded(BLANK, ".jpg")) == (400, 300)
    assert header_size(encoded(BLANK, ".png")[:45]) == (400, 300)  # up to the first IDAT


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x00" * 1_000_001, ImageTooLarge),
        (b"hello", NotAnImage),
        (encoded(BLANK, ".bmp"), NotAnImage),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, NotAnImage),
        (encoded(np.zeros((1500, 1500), np.uint8), ".png"), ImageDimensions),
        (encoded(BLANK, ".png")[:120], CorruptImage),
    ],
)
def test_refusals(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        load_gray(data, LIMITS)


def test_colour_photo_becomes_grey() -> None:
    colour = np.zeros((30, 40, 3), np.uint8)
    colour[..., 2] = 255  # red
    gray = load_gray(encoded(colour, ".png"), LIMITS)
    assert gray.shape == (30, 40)
    assert gray.dtype == np.uint8


def test_pillows_own_bomb_warning_does_not_escape() -> None:
    buffer = io.BytesIO()
    Image.new("1", (10_000, 9_000)).save(buffer, format="PNG")  # 90 MP: Pillow would warn
    with pytest.raises(ImageDimensions):
        load_gray(buffer.getvalue(), LIMITS)


# -- the variant loop ----------------------------------------------------------------------


class FakeZbar:
    """Answers from a script, one entry per variant; records how often it was asked."""

    def __init__(self, script: list[list[tuple[str, str]]]) -> None:
        self.script = script
        self.calls = 0

    def __call__(self, pixels: Gray) -> list[tuple[str, str]]:
        self.calls += 1
        return self.script[self.calls - 1] if self.calls <= len(self.script) else []


def test_first_valid_read_wins() -> None:
    zbar = FakeZbar([[], [("QRCODE", "10000X")]])
    decoded = decode_pixels(BLANK, Scheme.LUHN30, zbar, 5.0)
    assert (decoded.check.id, decoded.check.valid, decoded.symbology) == ("10000X", True, "QRCODE")
    assert decoded.variant == "upscale"  # BLANK is small: the second variant enlarges it
    assert zbar.calls == 2


def test_an_invalid_read_does_not_stop_the_search() -> None:
    zbar = FakeZbar([[("CODE128", "10000Y")], [("CODE128", "10000X")]])
    decoded = decode_pixels(BLANK, Scheme.LUHN30, zbar, 5.0)
    assert decoded.check.valid
    assert decoded.check.id == "10000X"


def test_only_invalid_reads_are_reported_as_invalid() -> None:
    zbar = FakeZbar([[("CODE128", "10000Y")], [("CODE128", "1OOOOX")], [("CODE128", "10000Y")]])
    decoded = decode_pixels(BLANK, Scheme.LUHN30, zbar, 5.0)
    assert (decoded.check.id, decoded.check.valid) == ("10000Y", False)
    assert decoded.check.reason == "check digit is wrong"
    assert zbar.calls == len(list(variants(BLANK)))  # every variant was tried


def test_two_different_valid_ids_are_refused() -> None:
    zbar = FakeZbar([[("QRCODE", "10000X"), ("CODE128", "10001V")]])
    with pytest.raises(AmbiguousScan, match="10000X, 10001V"):
        decode_pixels(BLANK, Scheme.LUHN30, zbar, 5.0)


def test_the_same_id_in_both_symbols_is_fine() -> None:
    zbar = FakeZbar([[("QRCODE", "10000X"), ("CODE128", "10000X")]])
    assert decode_pixels(BLANK, Scheme.LUHN30, zbar, 5.0).check.id == "10000X"


def test_nothing_found_is_no_barcode() -> None:
    with pytest.raises(NoBarcode):
        decode_pixels(BLANK, Scheme.LUHN30, FakeZbar([]), 5.0)


def test_the_time_budget_stops_the_search() -> None:
    zbar = FakeZbar([])
    with pytest.raises(NoBarcode):
        decode_pixels(BLANK, Scheme.LUHN30, zbar, 0.0)
    assert zbar.calls == 1


# -- the variants, with zbar ----------------------------------------------------------------


def barcode_only(text: str, module: int = 3) -> Gray:
    row = np.array([0 if bar else 255 for bar in code128.modules(text)], np.uint8)
    strip = np.tile(np.repeat(row, module), (60, 1))
    return np.ascontiguousarray(cv2.copyMakeBorder(strip, 250, 250, 150, 150, 0, value=255))


def test_zbar_alone_misses_a_short_barcode_turned_45_degrees() -> None:
    zbar = load_zbar()
    assert zbar(rotate(barcode_only("10000X"), 45)) == []


@pytest.mark.parametrize("angle", [35, 45, 110, 160, 225, 300])
def test_a_region_turns_the_barcode_level(angle: float) -> None:
    zbar = load_zbar()
    turned = rotate(barcode_only("10000X"), angle)
    reads = list(itertools.chain.from_iterable(zbar(region) for region in barcode_regions(turned)))
    assert ("CODE128", "10000X") in reads


def test_rotate_keeps_every_corner() -> None:
    image = np.zeros((100, 200), np.uint8)
    turned = rotate(image, 30)
    assert turned.shape[1] >= 200 * np.cos(np.radians(30)) + 100 * np.sin(np.radians(30)) - 1
    assert int((turned == 0).sum()) >= 0.98 * image.size


def test_a_card_photographed_upside_down_and_skewed_reads() -> None:
    card = np.asarray(cards.raster(cards.layout("10000X")), np.uint8)
    h, w = card.shape
    source = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    target = np.array([[900, 700], [150, 620], [220, 120], [860, 200]], np.float32)
    photo = cv2.warpPerspective(
        card, cv2.getPerspectiveTransform(source, target), (1000, 800), borderValue=90
    )
    decoded = decode_pixels(np.ascontiguousarray(photo), Scheme.LUHN30, load_zbar(), 5.0)
    assert (decoded.check.id, decoded.check.valid) == ("10000X", True)
