"""The barcode package's errors, as branches of :mod:`sync.errors`' tree.

    FieldsyncError
    ├── TooLarge                    413 too_large
    │   └── ImageTooLarge           413 image_too_large        (bytes over the limit)
    ├── UnsupportedMediaType        415 bad_content_type
    │   └── NotAnImage              415 not_an_image           (not a JPEG or PNG)
    ├── Unprocessable               422 unprocessable
    │   ├── ImageDimensions         422 image_dimensions       (decompresses too big)
    │   ├── CorruptImage            422 corrupt_image          (header ok, pixels not)
    │   ├── UnreadableImage         422 unreadable_image       (OpenCV or zbar failed on it)
    │   ├── NoBarcode               422 no_barcode
    │   └── AmbiguousScan           422 several_ids            (two different valid IDs)
    └── ServiceUnavailable          503 service_unavailable
        └── DecoderUnavailable      503 decoder_unavailable    (libzbar0 missing)

The error tokens are specific so an app can tell the user what to do next
(retake the photo, send a smaller one, ask for the server to be fixed).
"""

from __future__ import annotations

from sync.errors import FieldsyncError, ServiceUnavailable, TooLarge, UnsupportedMediaType


class ImageTooLarge(TooLarge):
    error = "image_too_large"
    default_reason = "The image is larger than the upload limit."


class NotAnImage(UnsupportedMediaType):
    error = "not_an_image"
    default_reason = "The upload is not a JPEG or PNG image."


class Unprocessable(FieldsyncError):
    status = 422
    error = "unprocessable"
    default_reason = "The request was understood but cannot be processed."


class ImageDimensions(Unprocessable):
    error = "image_dimensions"
    default_reason = "The image's dimensions are too large to decode."


class CorruptImage(Unprocessable):
    error = "corrupt_image"
    default_reason = "The image is damaged or truncated and cannot be decoded."


class UnreadableImage(Unprocessable):
    """Pixels that decoded but that a later step (OpenCV, zbar) failed on: the photo's fault
    or ours, but never a reason to answer 500 to a phone."""

    error = "unreadable_image"
    default_reason = "The image could not be processed. Retake the photo of the whole card."


class NoBarcode(Unprocessable):
    error = "no_barcode"
    default_reason = "No barcode or QR code was found in the image."


class AmbiguousScan(Unprocessable):
    error = "several_ids"
    default_reason = "The image holds more than one different patient ID; photograph one card."


ZBAR_PACKAGE = "libzbar0"


class DecoderUnavailable(ServiceUnavailable):
    error = "decoder_unavailable"
    default_reason = (
        f"Barcode decoding is unavailable: the zbar library is not installed on the server "
        f"(Debian/Ubuntu: apt-get install -y {ZBAR_PACKAGE})."
    )
