"""The robustness corpus: synthetic phone photos of rendered ID cards.

Each sample is a real card (:mod:`barcode.cards`, random luhn30 ID) put through
what a CHW's camera does to it, each with a random severity drawn from the
ranges below, all at once, then saved as JPEG::

    placement     card 40-85% of the frame's width (less if it would not fit
                  once turned), anywhere in the frame but always all of it
    rotation      0-360 degrees
    perspective   each corner pushed up to 10% of the card's diagonal
    background    clutter: gradients, shapes, lines, print, stripes
    light         a gradient dimming one side to 35-100%, sometimes a shadow
    blur          Gaussian, sigma 0-1.6 px; a third also get motion blur (3-7 px)
    noise         Gaussian sensor noise, sigma 0-10 grey levels
    resolution    1280 x 960; a quarter are then shrunk to 640 x 480
    JPEG          quality 30-95

Everything is drawn from one seeded generator, so a corpus is reproducible:
``samples(count, seed)`` always yields the same images.  A sample records its
distortions so a benchmark can say which ones the misses had in common.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from barcode import cards
from barcode.checkdigit import Scheme, append_check_char

FRAME = (1280, 960)
Image = npt.NDArray[np.uint8]
Float = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Distortion:
    card_fraction: float
    angle: float
    skew: float
    light: float
    shadow: bool
    blur: float
    motion: int
    noise: float
    low_res: bool
    jpeg_quality: int

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Distortion:
        return cls(
            card_fraction=float(rng.uniform(0.40, 0.85)),
            angle=float(rng.uniform(0, 360)),
            skew=float(rng.uniform(0, 0.10)),
            light=float(rng.uniform(0.35, 1.0)),
            shadow=bool(rng.random() < 0.3),
            blur=float(rng.uniform(0, 1.6)),
            motion=int(rng.integers(3, 8)) if rng.random() < 1 / 3 else 0,
            noise=float(rng.uniform(0, 10)),
            low_res=bool(rng.random() < 0.25),
            jpeg_quality=int(rng.integers(30, 96)),
        )


@dataclass(frozen=True)
class Sample:
    patient_id: str
    jpeg: bytes
    distortion: Distortion


def random_id(rng: np.random.Generator) -> str:
    alphabet = Scheme.LUHN30.algorithm.alphabet
    length = int(rng.integers(5, 7))
    payload = "".join(alphabet[int(i)] for i in rng.integers(0, len(alphabet), length))
    return append_check_char(payload, Scheme.LUHN30)


def samples(count: int, seed: int = 5) -> Iterator[Sample]:
    """``count`` reproducible samples of the standard corpus."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        patient_id = random_id(rng)
        name = None if rng.random() < 0.5 else "Jane Doe"
        card = np.asarray(cards.raster(cards.layout(patient_id, name)), dtype=np.uint8)
        distortion = Distortion.draw(rng)
        yield Sample(patient_id, photograph(card, distortion, rng), distortion)


def photograph(card: Image, d: Distortion, rng: np.random.Generator) -> bytes:
    """``card`` (grey, 300 dpi) as a JPEG phone photo with distortions ``d``."""
    width, height = FRAME
    scene = clutter(rng, width, height).astype(np.float32)
    scale = d.card_fraction * width / card.shape[1]
    shrunk = cv2.resize(card, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    small = _paper(_u8(shrunk), rng)
    h, w = small.shape[:2]
    source = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    matrix = cv2.getPerspectiveTransform(source, _corners(w, h, d, rng, width, height))
    warped = cv2.warpPerspective(small, matrix, (width, height), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.ones((h, w), np.float32), matrix, (width, height))[..., None]
    scene += (warped.astype(np.float32) - scene) * mask
    scene *= _light(d, rng, width, height)[..., None]
    scene = _blur(scene, d, rng)
    scene += (rng.standard_normal((height, width), dtype=np.float32) * d.noise)[..., None]
    result = np.clip(scene, 0, 255).astype(np.uint8)
    if d.low_res:
        result = _u8(cv2.resize(result, (width // 2, height // 2), interpolation=cv2.INTER_AREA))
    ok, encoded = cv2.imencode(".jpg", result, [cv2.IMWRITE_JPEG_QUALITY, d.jpeg_quality])
    assert ok
    return encoded.tobytes()


def _paper(card: Image, rng: np.random.Generator) -> Image:
    """Grey card to colour: paper slightly tinted, ink not quite black."""
    paper, ink = rng.uniform(215, 255, 3), rng.uniform(0, 45, 3)
    level = np.arange(256, dtype=np.float64)[:, None] / 255
    table = (ink + (paper - ink) * level).astype(np.uint8)  # 256 x 3: grey level -> BGR
    return np.ascontiguousarray(table[card])


def _corners(
    w: int, h: int, d: Distortion, rng: np.random.Generator, frame_w: int, frame_h: int
) -> Float:
    """Where the card's corners land: rotated, jittered, shifted to stay in the frame."""
    theta = math.radians(d.angle)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    centred = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    points = centred @ rotation.T
    points += rng.uniform(-1, 1, (4, 2)) * d.skew * math.hypot(w, h)
    low, high = points.min(axis=0), points.max(axis=0)
    fit = min(1.0, 0.98 * frame_w / (high[0] - low[0]), 0.98 * frame_h / (high[1] - low[1]))
    points, low, high = points * fit, low * fit, high * fit  # the whole card stays in view
    span_x = max(0.0, frame_w - (high[0] - low[0]))
    span_y = max(0.0, frame_h - (high[1] - low[1]))
    offset = np.array([rng.uniform(0, span_x), rng.uniform(0, span_y)]) - low
    return np.asarray(points + offset, np.float32)


def _light(d: Distortion, rng: np.random.Generator, width: int, height: int) -> Float:
    """An illumination field: a linear falloff to ``d.light``, and maybe a soft shadow.

    Computed on a coarse grid and scaled up: light varies slowly.
    """
    coarse_w, coarse_h = width // 16, height // 16
    ys, xs = np.mgrid[0:coarse_h, 0:coarse_w].astype(np.float32)
    direction = rng.uniform(0, 2 * math.pi)
    ramp = xs * math.cos(direction) + ys * math.sin(direction)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    field = 1 - (1 - d.light) * ramp
    if d.shadow:
        cx, cy = rng.uniform(0, coarse_w), rng.uniform(0, coarse_h)
        radius = rng.uniform(0.15, 0.4) * coarse_w
        blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * radius**2))
        field *= 1 - rng.uniform(0.2, 0.45) * blob
    field *= rng.uniform(0.85, 1.1)  # exposure
    return _f32(cv2.resize(field, (width, height), interpolation=cv2.INTER_LINEAR))


def _blur(scene: Float, d: Distortion, rng: np.random.Generator) -> Float:
    if d.blur > 0.05:
        scene = _f32(cv2.GaussianBlur(scene, (0, 0), d.blur))
    if d.motion:
        kernel = np.zeros((d.motion, d.motion), np.float32)
        kernel[d.motion // 2, :] = 1 / d.motion
        centre = ((d.motion - 1) / 2, (d.motion - 1) / 2)
        turn = cv2.getRotationMatrix2D(centre, float(rng.uniform(0, 180)), 1.0)
        kernel = _f32(cv2.warpAffine(kernel, turn, (d.motion, d.motion)))
        kernel /= max(float(kernel.sum()), 1e-6)
        scene = _f32(cv2.filter2D(scene, -1, kernel))
    return np.asarray(scene, dtype=np.float32)


def clutter(rng: np.random.Generator, width: int, height: int) -> Image:
    """A busy table top: a gradient, shapes, lines, printed words and stripes."""
    ends = rng.uniform(40, 230, (2, 1, 3)).astype(np.float32)
    image = _u8(cv2.resize(ends, (width, height), interpolation=cv2.INTER_LINEAR))
    for _ in range(int(rng.integers(25, 50))):
        _shape(image, rng, width, height)
    texture = rng.standard_normal((height // 4, width // 4), dtype=np.float32) * 12
    texture = _f32(cv2.resize(texture, (width, height), interpolation=cv2.INTER_CUBIC))
    return _u8(cv2.add(image, cv2.merge([texture] * 3), dtype=cv2.CV_8U))


def _shape(image: Image, rng: np.random.Generator, width: int, height: int) -> None:
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
    kind = int(rng.integers(0, 5))
    if kind == 0:
        size = rng.integers(20, 250, 2)
        cv2.rectangle(image, (x, y), (x + int(size[0]), y + int(size[1])), colour, -1)
    elif kind == 1:
        cv2.circle(image, (x, y), int(rng.integers(10, 120)), colour, -1)
    elif kind == 2:
        end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.line(image, (x, y), end, colour, int(rng.integers(1, 8)))
    elif kind == 3:
        words = "".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(3, 12))))
        cv2.putText(
            image,
            words,
            (x, y),
            cv2.FONT_HERSHEY_SIMPLEX,
            float(rng.uniform(0.5, 2.5)),
            colour,
            int(rng.integers(1, 4)),
        )
    else:
        _stripes(image, rng, x, y, colour)


def _stripes(
    image: Image, rng: np.random.Generator, x: int, y: int, colour: tuple[int, ...]
) -> None:
    """Barcode-like stripes (a ruler, a woven cloth): decoys for the scanner."""
    height = int(rng.integers(30, 120))
    for _ in range(int(rng.integers(8, 30))):
        cv2.rectangle(image, (x, y), (x + int(rng.integers(1, 6)), y + height), colour, -1)
        x += int(rng.integers(3, 12))


def _u8(array: object) -> Image:
    return np.ascontiguousarray(array, dtype=np.uint8)


def _f32(array: object) -> Float:
    return np.ascontiguousarray(array, dtype=np.float32)
