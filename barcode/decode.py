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

zbar is a system library (Debian/Ubuntu ``libzbar0``) reached through
pyzbar, which fails at import when it is missing; :func:`load_zbar` imports
it lazily so the server starts without it and scans answer 503.
"""

from __future__ import annotations

import importlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2

from barcode.checkdigit import CheckResult, SchemeLike, validate
from barcode.errors import AmbiguousScan, DecoderUnavailable, NoBarcode, UnreadableImage
from barcode.images import Gray, Limits, load_gray
from barcode.variants import variants

# One zbar pass: grey pixels in, (symbology, text) for each symbol found out.
Zbar = Callable[[Gray], list[tuple[str, str]]]
SYMBOLOGIES = ("CODE128", "QRCODE")


@dataclass(frozen=True)
class Decoded:
    """The outcome of a scan: the ID read (``check.id``), and where it was found."""

    check: CheckResult
    symbology: str
    variant: str
    attempts: int


def load_zbar() -> Zbar:
    """pyzbar's decoder restricted to our symbologies; DecoderUnavailable without libzbar0."""
    try:
        pyzbar = importlib.import_module("pyzbar.pyzbar")
    except (ImportError, OSError) as exc:
        raise DecoderUnavailable() from exc
    symbols = [pyzbar.ZBarSymbol[name] for name in SYMBOLOGIES]

    def zbar(pixels: Gray) -> list[tuple[str, str]]:
        found = pyzbar.decode(pixels, symbols=symbols)
        return [(str(s.type), bytes(s.data).decode("utf-8", "replace")) for s in found]

    return zbar


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
