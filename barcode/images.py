"""Accepting an uploaded photo: what it is, how big, and its pixels (greyscale).

The checks run cheapest first, and the pixels are decoded only once the
header has said how many there will be, so a small file that would
decompress to gigabytes (a "decompression bomb") costs nothing::

    bytes > max_image_bytes          -> ImageTooLarge   413
    magic is not JPEG or PNG         -> NotAnImage      415
    header unreadable                -> NotAnImage      415
    width x height > max_pixels      -> ImageDimensions 422
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


def load_gray(data: bytes, limits: Limits) -> Gray:
    """The photo's pixels as 8-bit greyscale, after every check in the module docstring."""
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"The image is larger than the limit of {limits.max_bytes} bytes.")
    width, height = header_size(data)
    if width < 1 or height < 1 or width * height > limits.max_pixels:
        raise ImageDimensions(
            f"The image is {width} x {height} pixels; at most {limits.max_pixels} pixels "
            "are decoded. Send a smaller photo."
        )
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if pixels is None or sorted(pixels.shape[:2]) != sorted((width, height)):
        raise CorruptImage()
    return np.asarray(pixels, dtype=np.uint8)
