"""Image bytes -> an RGB picture an encoder can take, or the reason it cannot.

Every failure has its own reason so that the quarantine says what to fix: an empty file, bytes that
are not an image at all, a truncated file, a file that is corrupt in some other way, or a
decompression bomb (a small file that would expand to an enormous bitmap). Pixel modes are
normalised here (greyscale, CMYK, palette, alpha, 16-bit) so encoders only ever see RGB.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

EMPTY = "empty_image"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED = "truncated_image"
CORRUPT = "corrupt_image"
TOO_LARGE = "image_too_large"
REASONS = (EMPTY, NOT_AN_IMAGE, TRUNCATED, CORRUPT, TOO_LARGE)

DEFAULT_MAX_PIXELS = 40_000_000  # about 6,300 x 6,300; posters are 0.05 Mpx


@dataclass(frozen=True)
class Decoded:
    image: Image.Image | None
    reason: str | None = None
    detail: str | None = None


def decode(data: bytes | None, max_pixels: int = DEFAULT_MAX_PIXELS, white_background: bool = True) -> Decoded:
    """Fully decode `data` (not just its header) into RGB; never raises for bad input."""
    if not data:
        return Decoded(None, EMPTY, "0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                return Decoded(None, TOO_LARGE, f"{width}x{height} pixels exceeds {max_pixels:,}")
            img.load()
    except UnidentifiedImageError:
        return Decoded(None, NOT_AN_IMAGE, f"{len(data):,} bytes that no image format recognises")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return Decoded(None, TOO_LARGE, str(e)[:200])
    except OSError as e:
        reason = TRUNCATED if "truncated" in str(e).lower() else CORRUPT
        return Decoded(None, reason, f"{type(e).__name__}: {e}"[:200])
    except (SyntaxError, ValueError, EOFError) as e:  # what PIL's parsers raise on garbage
        return Decoded(None, CORRUPT, f"{type(e).__name__}: {e}"[:200])
    return Decoded(to_rgb(img, white_background))


def to_rgb(img: Image.Image, white_background: bool = True) -> Image.Image:
    """RGB, with transparency composited onto white (a transparent poster is not a black one)."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") and white_background:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if img.mode.startswith("I;16") or img.mode == "I":
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB")
