"""Reading and writing images: pixels, colour space and metadata, safely.

One package, split by concern (every arrow points down: ``read`` and ``write`` use
``metadata`` and ``picture``, nothing here imports the rest of the tool but `errors` and
`native_stderr`):

* `picture`: the `Picture` value, array helpers (`image_from_array`, `with_pixels`,
  `to_uint8`) and the one conversion to ``(H, W, 3)`` ``uint8`` RGB for the detectors
  (`as_rgb8`, `Picture.rgb8`).
* `read`: the pixel limit, format sniffing, headers, `read_image` with its decoders and its
  checks for damaged data.
* `metadata`: EXIF orientation, PNG chunk surgery, the settings a JPEG was saved with.
* `write`: format choice, encoders, `write_image`, and the atomic writer (`write_atomic`,
  also used for the dataset's shards and every other file the tool writes) with its
  stale-temporary cleanup.

Conventions used throughout:

* Pixels are ``numpy`` arrays of shape ``(H, W, C)``, C-contiguous, dtype
  ``uint8`` or ``uint16``, in the file's own colour space (see `Picture`).
* EXIF orientation is applied on reading: ``pixels`` are upright and the
  returned EXIF says orientation 1, so writers never rotate anything.
* EXIF bytes are kept in the JPEG APP1 payload form, starting with
  ``b"Exif\\0\\0"`` followed by a TIFF header.
* User-facing failures raise `InputError` (reading) or `OutputError`
  (writing) with a one-line message that names the file and says what to do.
  Programming errors (wrong array shape or dtype) raise ``ValueError``.

The names below are the package's public interface; private helpers are imported from the
module that defines them (`mirrorppr_cli.io.read._decode`, …), which is also where a test
patches one.
"""

from __future__ import annotations

from .metadata import (
    apply_orientation,
    estimate_jpeg_quality,
    exif_orientation,
    exif_with_orientation_reset,
    jpeg_settings,
)
from .picture import (
    MODES,
    Image,
    Picture,
    as_rgb8,
    image_from_array,
    to_uint8,
    with_pixels,
)
from .read import (
    DEFAULT_MAX_PIXELS,
    MAX_PIXELS_ENV,
    READABLE_FORMATS,
    frames_note,
    header_info,
    header_size,
    read_image,
    resolve_max_pixels,
    sniff_format,
)
from .write import (
    FORMAT_SUFFIX,
    PNG_LEVEL,
    SUFFIX_FORMAT,
    WRITABLE_FORMATS,
    encode_image,
    normalise_format,
    output_quality,
    remove_stale_temporaries,
    write_atomic,
    write_image,
)

__all__ = [
    "DEFAULT_MAX_PIXELS", "FORMAT_SUFFIX", "MAX_PIXELS_ENV", "MODES", "PNG_LEVEL",
    "READABLE_FORMATS", "SUFFIX_FORMAT", "WRITABLE_FORMATS", "Image", "Picture",
    "apply_orientation", "as_rgb8", "encode_image", "estimate_jpeg_quality",
    "exif_orientation", "exif_with_orientation_reset", "frames_note", "header_info",
    "header_size", "image_from_array", "jpeg_settings", "normalise_format", "output_quality",
    "read_image", "remove_stale_temporaries", "resolve_max_pixels", "sniff_format", "to_uint8",
    "with_pixels", "write_atomic", "write_image",
]  # fmt: skip
