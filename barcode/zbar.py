"""zbar, the system library that reads the symbols (Debian/Ubuntu ``libzbar0``).

Reached through pyzbar, which fails at import when the library is missing:
:func:`load_zbar` imports it lazily, so the server starts without it and scans
answer 503.  This module stays light (no OpenCV, no numpy) so that checking for
zbar at start-up does not load the image stack, which only a scan needs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from barcode.errors import DecoderUnavailable

if TYPE_CHECKING:
    from barcode.images import Gray

# One zbar pass: grey pixels in, (symbology, text) for each symbol found out.
Zbar: TypeAlias = "Callable[[Gray], list[tuple[str, str]]]"
SYMBOLOGIES = ("CODE128", "QRCODE")


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
