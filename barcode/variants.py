"""Preparing a photo for zbar: the versions of it worth trying, cheapest first.

zbar reads a clean, roughly level photo as it is; what it cannot do is find a
barcode turned far from level, or read one that is dim, soft or tiny.  Each
variant undoes one of those, and :func:`variants` yields them lazily so a photo
that reads at once costs one zbar pass::

    plain      the photo, shrunk to at most 1600 px a side
    upscale    a small photo (under 1000 px a side) at twice the size; every
               variant below then starts from this enlargement
    denoise    a slight Gaussian blur: zbar's edge finder trips on sensor
               noise and JPEG speckle; region, clahe, rotate and threshold
               start from this one, the others from plain
    region N   each barcode-like region, turned level and cropped (below)
    clahe      local contrast equalised (uneven light, shadows)
    rotate A   the equalised photo turned by 30 and 60 degrees: zbar's
               horizontal and vertical scan lines then cover every angle
    sharpen    an unsharp mask (blur)
    card N     each card-shaped quadrilateral, perspective removed
    threshold  adaptive threshold (glare, very uneven light)
    full       the photo at its full resolution, when ``plain`` shrank it

Barcode regions are found with the gradient structure tensor: over a window,
``J = [[gx², gx·gy], [gx·gy, gy²]]``; its eigenvalue gap is large where
strong edges all share one direction (bars) and small for text, QR codes,
noise and single lines.  The dominant gradient direction
``0.5·atan2(2·Jxy, Jxx - Jyy)`` says how far to turn the region.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import cv2
import numpy as np
import numpy.typing as npt

Gray = npt.NDArray[np.uint8]
Float = npt.NDArray[np.float32]

WORK_SIDE = 1600
SMALL_SIDE = 1000
TENSOR_WINDOW = 21
MAX_REGIONS = 3
MAX_CARDS = 2
_CLAHE = cv2.createCLAHE(clipLimit=2.5, tileGridSize=(8, 8))


def variants(photo: Gray) -> Iterator[tuple[str, Gray]]:
    """The versions of ``photo`` to hand zbar, in the order to try them."""
    work = plain = shrink(photo, WORK_SIDE)
    yield "plain", plain
    if max(work.shape) < SMALL_SIDE:
        work = _gray(cv2.resize(work, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC))
        yield "upscale", work
    smooth = _gray(cv2.GaussianBlur(work, (0, 0), 1.0))
    yield "denoise", smooth
    for index, region in enumerate(barcode_regions(smooth)):
        yield f"region {index}", region
    equalised = _gray(_CLAHE.apply(smooth))
    yield "clahe", equalised
    for angle in (30, 60):
        yield f"rotate {angle}", rotate(equalised, angle)
    yield "sharpen", sharpen(work)
    for index, card in enumerate(card_quads(work)):
        yield f"card {index}", card
    yield "threshold", threshold(equalised)
    if plain.shape != photo.shape:
        yield "full", photo


def shrink(image: Gray, side: int) -> Gray:
    """``image`` scaled down so its longer side is at most ``side`` pixels."""
    scale = side / max(image.shape)
    if scale >= 1:
        return image
    return _gray(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))


def rotate(image: Gray, degrees: float) -> Gray:
    """``image`` turned counter-clockwise, on a canvas large enough to keep every corner."""
    height, width = image.shape
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w, new_h = int(height * sin + width * cos), int(height * cos + width * sin)
    matrix[0, 2] += new_w / 2 - width / 2
    matrix[1, 2] += new_h / 2 - height / 2
    return _gray(
        cv2.warpAffine(image, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR, borderValue=255)
    )


def sharpen(image: Gray) -> Gray:
    soft = cv2.GaussianBlur(image, (0, 0), 2.0)
    return _gray(cv2.addWeighted(image, 1.8, soft, -0.8, 0))


def threshold(image: Gray) -> Gray:
    return _gray(
        cv2.adaptiveThreshold(image, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, 31, 5)
    )


# -- barcode regions --------------------------------------------------------------


def barcode_regions(image: Gray) -> Iterator[Gray]:
    """Crops of the regions that look like bars, each turned so its bars stand upright."""
    gap, direction = _orientation_field(image)
    mask = _strong(gap)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    order = sorted(range(1, count), key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    minimum = 0.002 * image.size
    for label in order[:MAX_REGIONS]:
        if stats[label, cv2.CC_STAT_AREA] < minimum:
            break
        points = np.argwhere(labels == label)[:, ::-1].astype(np.float32)
        inside = labels == label
        angle = _mean_direction(direction[inside], gap[inside])
        yield _level_crop(image, points, angle)


def _orientation_field(image: Gray) -> tuple[Float, Float]:
    """Per pixel: the structure tensor's eigenvalue gap, and its gradient direction (radians)."""
    pixels = image.astype(np.float32) / 255
    gx = cv2.Sobel(pixels, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(pixels, cv2.CV_32F, 0, 1, ksize=3)
    window = (TENSOR_WINDOW, TENSOR_WINDOW)
    jxx, jyy, jxy = (cv2.blur(g, window) for g in (gx * gx, gy * gy, gx * gy))
    gap = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2)
    direction = 0.5 * np.arctan2(2 * jxy, jxx - jyy)
    return np.asarray(gap, np.float32), np.asarray(direction, np.float32)


def _strong(gap: Float) -> Gray:
    """Where the gap is high, closed into solid blobs."""
    peak = float(gap.max())
    if peak <= 0:
        return np.zeros(gap.shape, np.uint8)
    mask = (gap > 0.25 * peak).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (TENSOR_WINDOW, TENSOR_WINDOW))
    return _gray(cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel))


def _mean_direction(directions: Float, weights: Float) -> float:
    """The weighted mean of axial angles (theta and theta + pi are the same direction)."""
    doubled = 2 * directions.astype(np.float64)
    sin = float(np.sum(weights * np.sin(doubled)))
    cos = float(np.sum(weights * np.cos(doubled)))
    return 0.5 * math.atan2(sin, cos)


def _level_crop(image: Gray, points: Float, angle: float) -> Gray:
    """The region around ``points``, turned by ``angle`` so gradients run along x."""
    centre_x, centre_y = (float(v) for v in points.mean(axis=0))
    cos, sin = math.cos(angle), math.sin(angle)
    along = (points[:, 0] - centre_x) * cos + (points[:, 1] - centre_y) * sin
    across = -(points[:, 0] - centre_x) * sin + (points[:, 1] - centre_y) * cos
    width = int(np.ptp(along) * 1.3 + 2 * TENSOR_WINDOW)
    height = int(np.ptp(across) * 1.2 + TENSOR_WINDOW)
    matrix = cv2.getRotationMatrix2D((centre_x, centre_y), math.degrees(angle), 1.0)
    matrix[0, 2] += width / 2 - centre_x
    matrix[1, 2] += height / 2 - centre_y
    crop = cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)
    if width < 800:
        crop = cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    return _gray(crop)


# -- cards ------------------------------------------------------------------------


def card_quads(image: Gray) -> Iterator[Gray]:
    """Each large four-cornered outline in the photo, warped flat (perspective undone)."""
    edges = cv2.Canny(cv2.GaussianBlur(image, (5, 5), 0), 40, 120)
    edges = cv2.dilate(edges, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(edges, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    found = 0
    for contour in sorted(contours, key=cv2.contourArea, reverse=True):
        if found == MAX_CARDS or cv2.contourArea(contour) < 0.05 * image.size:
            return
        outline = cv2.approxPolyDP(contour, 0.03 * cv2.arcLength(contour, True), True)
        if len(outline) == 4 and cv2.isContourConvex(outline):
            found += 1
            yield _flatten(image, outline.reshape(4, 2).astype(np.float32))


def _flatten(image: Gray, corners: Float) -> Gray:
    """Warp the quadrilateral ``corners`` to an upright rectangle of the same size."""
    ordered = _clockwise(corners)
    top, right = np.linalg.norm(ordered[1] - ordered[0]), np.linalg.norm(ordered[2] - ordered[1])
    width, height = max(int(top), 32), max(int(right), 32)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    matrix = cv2.getPerspectiveTransform(ordered, target)
    flat = cv2.warpPerspective(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)
    return _gray(cv2.copyMakeBorder(flat, 20, 20, 20, 20, cv2.BORDER_CONSTANT, value=255))


def _clockwise(corners: Float) -> Float:
    """Corners ordered clockwise from the top-left one."""
    centre = corners.mean(axis=0)
    angles = np.arctan2(corners[:, 1] - centre[1], corners[:, 0] - centre[0])
    ordered = corners[np.argsort(angles)]
    start = int(np.argmin(ordered.sum(axis=1)))
    return np.asarray(np.roll(ordered, -start, axis=0), np.float32)


def _gray(image: object) -> Gray:
    return np.ascontiguousarray(image, dtype=np.uint8)
