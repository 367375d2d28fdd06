"""Every upload to the scan endpoint is answered 200 or 4xx, never 5xx (issue 9, point 9).

The refusals of image sizes no card photo has are table-checked; then hypothesis
sends images of every format Pillow writes, at extreme aspect ratios, truncated,
with bytes flipped, as random bytes, under wrong content types, raw and multipart.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp import FormData, web
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from served import Served, fuzz_settings, served

from barcode.checkdigit import Scheme
from barcode.decode import decode_photo
from barcode.errors import ImageDimensions, UnreadableImage
from barcode.images import MAX_ASPECT, MAX_SIDE, MIN_SIDE, Limits, check_dimensions
from sync.config import Config

SCAN = "/api/v1/barcode/scan"
LIMITS = Limits(max_bytes=400_000, max_pixels=4_000_000)  # conftest's barcode settings
FORMATS = ["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"]
CONTENT_TYPES = [
    "image/png",
    "image/jpeg",
    "image/jpg",
    "image/gif",
    "image/webp",
    "image/png; charset=utf-8",
    "text/plain",
    "application/octet-stream",
    "application/json",
    "",
]


TYPES = st.one_of(st.sampled_from(["image/png", "image/jpeg"]), st.sampled_from(CONTENT_TYPES))


def alice() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(b"alice:correct horse").decode()}


def encode(pixels: Any, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


# -- sizes ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("width", "height"),
    [
        (1, 100_000),
        (100_000, 1),
        (2, 40_000),
        (MIN_SIDE - 1, 200),
        (200, MIN_SIDE - 1),
        (MIN_SIDE, MIN_SIDE * MAX_ASPECT + 1),
        (MAX_SIDE + 1, MAX_SIDE // MAX_ASPECT + 1),
    ],
)
def test_sizes_no_card_photo_has_are_refused(width: int, height: int) -> None:
    limits = Limits(max_bytes=1 << 30, max_pixels=1 << 40)
    with pytest.raises(ImageDimensions, match=f"{width} x {height} pixels"):
        check_dimensions(width, height, limits)


@pytest.mark.parametrize(
    ("width", "height"),
    [(MIN_SIDE, MIN_SIDE), (MIN_SIDE, MIN_SIDE * MAX_ASPECT), (4000, 3000), (MAX_SIDE, 1000)],
)
def test_photo_sizes_pass(width: int, height: int) -> None:
    check_dimensions(width, height, Limits(max_bytes=1 << 30, max_pixels=1 << 40))


def test_a_long_thin_png_is_refused_before_decoding() -> None:
    thin = encode(np.full((100_000, 1), 255, np.uint8), "PNG")
    with pytest.raises(ImageDimensions, match="1 x 100000 pixels"):
        decode_photo(thin, LIMITS, Scheme.LUHN30, lambda _: [], 1.0)


def test_an_opencv_failure_is_unreadable_image() -> None:
    def failing(_: Any) -> list[tuple[str, str]]:
        raise cv2.error("simulated failure inside OpenCV")

    photo = encode(np.full((64, 64), 200, np.uint8), "PNG")
    with pytest.raises(UnreadableImage):
        decode_photo(photo, LIMITS, Scheme.LUHN30, failing, 1.0)


# -- the endpoint -------------------------------------------------------------------------
SIDES = st.integers(min_value=1, max_value=160)
EXTREME = st.sampled_from([(1, 100_000), (100_000, 1), (3, 5000), (16, 320), (320, 16), (17, 400)])


@st.composite
def images(draw: st.DrawFn) -> bytes:
    width, height = draw(st.one_of(st.tuples(SIDES, SIDES), EXTREME))
    fmt = draw(st.one_of(st.sampled_from(["PNG", "JPEG"]), st.sampled_from(FORMATS)))
    if width * height > 100_000:
        pixels = np.full((height, width), draw(st.integers(0, 255)), np.uint8)
    else:
        seed = draw(st.integers(0, 2**32 - 1))
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    try:
        return encode(pixels, fmt)
    except (ValueError, OverflowError, OSError):  # WebP stops at 16383 px a side, GIF at 65535
        return encode(pixels, "PNG")


@st.composite
def damaged(draw: st.DrawFn, source: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(source))
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))]) if draw(st.booleans()) else bytes(data)


UPLOADS = st.one_of(
    images(),
    images(),
    damaged(images()),
    st.binary(max_size=2048),
    st.builds(lambda b: b"\x89PNG\r\n\x1a\n" + b, st.binary(max_size=512)),
    st.builds(lambda b: b"\xff\xd8\xff" + b, st.binary(max_size=512)),
    st.builds(
        png_header_only,
        st.integers(0, 2**31 - 1),
        st.integers(0, 2**31 - 1),
    ),
)


async def upload(client: Any, data: bytes, how: str, content_type: str) -> web.Response:
    if how == "multipart":
        form = FormData()
        form.add_field("image", data, filename="card", content_type=content_type or None)
        return await client.post(SCAN, data=form, headers=alice())
    headers = {**alice(), **({"Content-Type": content_type} if content_type else {})}
    return await client.post(SCAN, data=data, headers=headers)


def test_no_upload_is_a_server_error(
    config: Config, app_factory: Callable[[Config], web.Application]
) -> None:
    with served(app_factory(config)) as app:
        _fuzz(app)


def _fuzz(app: Served) -> None:
    @fuzz_settings(120)
    @given(UPLOADS, st.sampled_from(["raw", "multipart"]), TYPES)
    def scan(data: bytes, how: str, content_type: str) -> None:
        response = app.run(upload(app.client, data, how, content_type))
        body = app.run(response.json())
        assert response.status == 200 or 400 <= response.status < 500, (response.status, body)
        if response.status >= 400:
            assert set(body) == {"error", "reason"} and body["reason"], body

    scan()
