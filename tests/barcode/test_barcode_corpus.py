"""The robustness corpus, small: the decode rate floor and zero wrong IDs (bench measures 98%)."""

from __future__ import annotations

import numpy as np

from barcode import corpus
from barcode.bench import measure
from barcode.zbar import load_zbar

COUNT = 40
SEED = 11


def test_corpus_decode_rate_and_no_wrong_ids() -> None:
    figures = measure(COUNT, SEED, load_zbar())
    assert figures.wrong_ids_accepted == 0
    assert figures.decode_rate >= 0.90, figures.misses


def test_corpus_is_reproducible() -> None:
    first = [s.jpeg for s in corpus.samples(3, seed=3)]
    assert first == [s.jpeg for s in corpus.samples(3, seed=3)]
    assert first != [s.jpeg for s in corpus.samples(3, seed=4)]


def test_corpus_covers_every_distortion() -> None:
    rng = np.random.default_rng(0)
    draws = [corpus.Distortion.draw(rng) for _ in range(400)]
    angles = [d.angle for d in draws]
    assert min(angles) < 20 and max(angles) > 340  # rotations through 360 degrees
    assert min(d.jpeg_quality for d in draws) == 30
    assert max(d.skew for d in draws) > 0.09
    assert min(d.light for d in draws) < 0.4
    assert max(d.blur for d in draws) > 1.5
    assert all(any(getattr(d, flag) for d in draws) for flag in ("low_res", "motion", "shadow"))
