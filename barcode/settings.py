"""The barcode package's settings, read from ``Config.extra["barcode"]``.

    {"barcode": {"scheme": "luhn30", "first_payload": "10000",
                 "min_payload_length": 5, "max_image_bytes": 10485760,
                 "max_image_pixels": 50000000, "max_batch": 1000,
                 "decode_workers": 4, "decode_seconds": 4.0}}

Every key is optional; unknown keys are refused so a typo is not silently
ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from barcode.checkdigit import Scheme
from barcode.ids import IdFormat

MiB = 1024 * 1024


@dataclass(frozen=True)
class BarcodeSettings:
    scheme: Scheme = Scheme.LUHN30
    first_payload: str = "10000"
    min_payload_length: int = 5
    # A phone photo is 1-5 MB; a scan is refused above this many bytes (413).
    max_image_bytes: int = 10 * MiB
    # ... and above this many pixels once decompressed (422): a 48 MP phone is 48e6.
    max_image_pixels: int = 50_000_000
    # Most IDs one request may allocate or reserve, and cards on one sheet.
    max_batch: int = 1000
    decode_workers: int = max(1, min(4, os.cpu_count() or 1))
    # Time spent trying preprocessing variants on one photo before giving up.
    decode_seconds: float = 4.0

    @property
    def id_format(self) -> IdFormat:
        return IdFormat(self.scheme, self.first_payload, self.min_payload_length)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> BarcodeSettings:
        known = {field.name for field in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown barcode settings: {', '.join(sorted(unknown))}")
        changes = dict(values)
        if "scheme" in changes:
            changes["scheme"] = Scheme(changes["scheme"])
        settings = replace(cls(), **changes)
        settings.id_format  # noqa: B018 - refuses a first_payload outside the alphabet
        return settings
