"""``make bench``'s barcode part: decode the robustness corpus and report.

Generates the standard corpus (:mod:`barcode.corpus`, fixed seed), decodes
every photo exactly as a scan would (header checks, variants, zbar, check
digit; one thread, so the times are per image), and prints:

    decode rate      photos whose valid ID was the card's ID  (target >= 98%)
    wrong IDs        photos answered with a *different* valid ID (must be 0)
    median time      per photo, also the 90th percentile and the slowest

Full: 300 photos (under a minute on an idle 2-core machine); quick: 40 (about 10 s).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass

from barcode import corpus
from barcode.decode import decode_photo
from barcode.errors import DecoderUnavailable
from barcode.images import Limits
from barcode.settings import BarcodeSettings
from barcode.zbar import Zbar, load_zbar
from sync.errors import FieldsyncError

FULL, QUICK = 300, 40
SEED = 2024


@dataclass(frozen=True)
class Figures:
    images: int
    decoded: int
    decode_rate: float
    wrong_ids_accepted: int
    outcomes: dict[str, int]
    median_decode_seconds: float
    p90_decode_seconds: float
    max_decode_seconds: float
    total_seconds: float
    misses: list[str]


def run(quick: bool) -> dict[str, object]:
    """Decode the corpus; print and return the figures (as a dict, for the bench report)."""
    count = QUICK if quick else FULL
    try:
        zbar = load_zbar()
    except DecoderUnavailable as exc:
        print(f"barcode: skipped: {exc.reason}")
        return {"skipped": exc.reason}
    figures = measure(count, SEED, zbar)
    _print(figures)
    return asdict(figures)


def measure(count: int, seed: int, zbar: Zbar) -> Figures:
    settings = BarcodeSettings()
    limits = Limits(settings.max_image_bytes, settings.max_image_pixels)
    outcomes: Counter[str] = Counter()
    times: list[float] = []
    misses: list[str] = []
    started = time.perf_counter()
    for sample in corpus.samples(count, seed):
        began = time.perf_counter()
        try:
            decoded = decode_photo(
                sample.jpeg, limits, settings.scheme, zbar, settings.decode_seconds
            )
            outcome = _outcome(decoded.check.valid, decoded.check.id, sample.patient_id)
        except FieldsyncError as exc:
            outcome = exc.error_token
        times.append(time.perf_counter() - began)
        outcomes[outcome] += 1
        if outcome != "decoded":
            misses.append(f"{sample.patient_id}: {outcome} {sample.distortion}")
    times.sort()
    return Figures(
        images=count,
        decoded=outcomes["decoded"],
        decode_rate=outcomes["decoded"] / count,
        wrong_ids_accepted=outcomes["wrong_id"],
        outcomes=dict(outcomes),
        median_decode_seconds=statistics.median(times),
        p90_decode_seconds=times[int(0.9 * (len(times) - 1))],
        max_decode_seconds=times[-1],
        total_seconds=time.perf_counter() - started,
        misses=misses,
    )


def _outcome(valid: bool, found: str, expected: str) -> str:
    if not valid:
        return "invalid_check_digit"
    return "decoded" if found == expected else "wrong_id"


def _print(figures: Figures) -> None:
    print(
        f"barcode: {figures.decoded}/{figures.images} photos decoded "
        f"({figures.decode_rate:.1%}), {figures.wrong_ids_accepted} wrong IDs accepted, "
        f"median {figures.median_decode_seconds * 1000:.0f} ms per photo "
        f"(p90 {figures.p90_decode_seconds * 1000:.0f} ms, "
        f"max {figures.max_decode_seconds * 1000:.0f} ms); "
        f"{figures.total_seconds:.0f} s in all"
    )
    for miss in figures.misses:
        print(f"  missed {miss}")


if __name__ == "__main__":
    import sys

    run(quick="--quick" in sys.argv)
