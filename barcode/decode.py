"""Reading a patient ID from a photo: zbar over OpenCV variants, until a check digit holds.

    photo bytes --images.load_gray--> grey pixels
                --variants--> plain, region 0.., clahe, rotate 30, ...
                --zbar (Code 128, QR only)--> texts
                --checkdigit.validate--> the first variant with a valid ID wins

A read whose check digit fails is kept, and only reported (``valid: false``)
when no variant gives a valid one within the time budget: a misread must
never be mistaken for another patient, and one bad read in a blurry variant
should not hide a good read in the next.  Two *different* valid IDs in one
variant (two cards in the photo) are refused rather than guessed between.

zbar itself is reached through :mod:`barcode.zbar`, which imports it lazily
so the server starts without it and scans answer 503.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import cv2

from barcode.checkdigit import CheckResult, SchemeLike, validate
from barcode.errors import AmbiguousScan, NoBarcode, UnreadableImage
from barcode.images import Gray, Limits, load_gray
from barcode.variants import variants
from barcode.zbar import Zbar


@dataclass(frozen=True)
class Decoded:
    """The outcome of a scan: the ID read (``check.id``), and where it was found."""

    check: CheckResult
    symbology: str
    variant: str
    attempts: int


def decode_photo(
    data: bytes, limits: Limits, scheme: SchemeLike, zbar: Zbar, budget_seconds: float
) -> Decoded:
    """Check and decode ``data``, then :func:`decode_pixels` (errors: barcode.errors)."""
    pixels = load_gray(data, limits)
    try:
        return decode_pixels(pixels, scheme, zbar, budget_seconds)
    except cv2.error as exc:  # the boundary of OpenCV: its failures are ours to name
        raise UnreadableImage() from exc


def decode_pixels(pixels: Gray, scheme: SchemeLike, zbar: Zbar, budget_seconds: float) -> Decoded:
    """Try each variant of ``pixels`` until one reads a valid ID, or the budget is spent."""
    deadline = time.monotonic() + budget_seconds
    invalid: Counter[tuple[str, str]] = Counter()
    first_invalid: dict[tuple[str, str], Decoded] = {}
    attempts = 0
    for name, variant in variants(pixels):
        attempts += 1
        reads = [(symbology, validate(text, scheme)) for symbology, text in zbar(variant)]
        valid = _valid_ids(reads)
        if valid:
            symbology, check = valid[0]
            return Decoded(check, symbology, name, attempts)
        for symbology, check in reads:
            key = (check.id, symbology)
            invalid[key] += 1
            first_invalid.setdefault(key, Decoded(check, symbology, name, attempts))
        if time.monotonic() > deadline:
            break
    if invalid:
        best = first_invalid[invalid.most_common(1)[0][0]]
        return Decoded(best.check, best.symbology, best.variant, attempts)
    raise NoBarcode(
        "No barcode or QR code was found in the photo. Retake it with the whole card "
        "in view, in focus and evenly lit."
    )


def _valid_ids(reads: Sequence[tuple[str, CheckResult]]) -> list[tuple[str, CheckResult]]:
    valid = [(symbology, check) for symbology, check in reads if check.valid]
    if len({check.id for _, check in valid}) > 1:
        ids = ", ".join(sorted({check.id for _, check in valid}))
        raise AmbiguousScan(f"The photo holds several patient IDs ({ids}); photograph one card.")
    return valid
