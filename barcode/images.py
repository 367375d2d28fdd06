"""Accepting an uploaded photo: what it is, how big, and its pixels (greyscale).

The checks run cheapest first, and the pixels are decoded only once the
header has said how many there will be, so a small file that would
decompress to gigabytes (a "decompression bomb") costs nothing::

    bytes > max_image_bytes          -> ImageTooLarge   413
    magic is not JPEG or PNG         -> NotAnImage      415
    header unreadable                -> NotAnImage      415
    width x height > max_pixels      -> ImageDimensions 422
    a side < MIN_SIDE or > MAX_SIDE  -> ImageDimensions 422
    long side > MAX_ASPECT x short   -> ImageDimensions 422
    pixels fail to decode            -> CorruptImage    422

The header is read with Pillow, which parses only the header on open; its
own bomb guard (a warning, then an error, at 89 and 179 megapixels) is
replaced by ours, which is stricter and configurable.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from barcode.errors import CorruptImage, ImageDimensions, ImageTooLarge, NotAnImage

Gray = npt.NDArray[np.uint8]

MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}
MEDIA_TYPES = {"image/jpeg": "JPEG", "image/jpg": "JPEG", "image/png": "PNG"}

# No barcode fits in fewer pixels across (a QR code has 21 modules a side).
MIN_SIDE = 16
# OpenCV's geometric transforms take at most 32767 pixels a side; a 200 MP phone is 16320.
MAX_SIDE = 20_000
# A card photo is about 1.6 : 1, a strip cropped around one barcode 10 : 1; a 1 x 100000
# image shrinks to nothing in the variants (and held nothing readable anyway).
MAX_ASPECT = 20


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_pixels: int


def sniff(data: bytes) -> str | None:
    """``"JPEG"`` or ``"PNG"`` from the first bytes, else None."""
    for magic, kind in MAGIC.items():
        if data.startswith(magic):
            return kind
    return None


def header_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    kind = sniff(data)
    if kind is None:
        raise NotAnImage("The upload is not a JPEG or PNG image.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[kind]) as image:
                return image.size
    except Image.DecompressionBombError as exc:
        raise ImageDimensions("The image decompresses to too many pixels.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise NotAnImage(f"The upload starts like a {kind} but its header is unreadable.") from exc


def check_dimensions(width: int, height: int, limits: Limits) -> None:
    """Refuse sizes no photo of a card has, before any pixel is decoded (ImageDimensions)."""
    size = f"The image is {width} x {height} pixels"
    if width * height > limits.max_pixels:
        raise ImageDimensions(
            f"{size}; at most {limits.max_pixels} pixels are decoded. Send a smaller photo."
        )
    if min(width, height) < MIN_SIDE:
        raise ImageDimensions(f"{size}; each side must be at least {MIN_SIDE} pixels.")
    if max(width, height) > MAX_SIDE:
        raise ImageDimensions(f"{size}; each side must be at most {MAX_SIDE} pixels.")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageDimensions(
            f"{size}; one side may be at most {MAX_ASPECT} times the other. "
            "Photograph the whole card."
        )


def load_gray(data: bytes, limits: Limits) -> Gray:
    """The photo's pixels as 8-bit greyscale, after every check in the module docstring."""
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"The image is larger than the limit of {limits.max_bytes} bytes.")
    width, height = header_size(data)
    check_dimensions(width, height, limits)
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    except cv2.error as exc:
        raise CorruptImage() from exc
    if pixels is None or sorted(pixels.shape[:2]) != sorted((width, height)):
        raise CorruptImage()
    return np.asarray(pixels, dtype=np.uint8)
