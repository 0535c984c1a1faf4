"""Image decoding: one test per bad-image kind, and every pixel mode ends up RGB."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from dmf_features.embedding import images


def encoded(img: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    return buffer.getvalue()


JPEG = encoded(Image.new("RGB", (40, 60), (200, 30, 30)), "JPEG")
PNG = encoded(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", images.EMPTY),
        (None, images.EMPTY),
        (b"%PDF-1.4 this is a document, not a picture" * 10, images.NOT_AN_IMAGE),
        (JPEG[: len(JPEG) // 2], images.TRUNCATED),
        (PNG[:300] + bytes(b ^ 0x5A for b in PNG[300:400]) + PNG[400:], images.CORRUPT),  # PNG checks its data
        (encoded(Image.new("L", (9000, 9000)), "PNG"), images.TOO_LARGE),
    ],
)
def test_each_bad_image_has_its_reason(data, reason):
    decoded = images.decode(data, max_pixels=50_000_000 if reason != images.TOO_LARGE else 10_000_000)
    assert decoded.image is None and decoded.reason == reason and decoded.detail


def test_a_bomb_is_refused_before_its_pixels_are_decoded():
    bomb = encoded(Image.new("1", (12_000, 12_000)), "PNG")  # a few KB on disk, 144 Mpx in memory
    assert len(bomb) < 100_000
    decoded = images.decode(bomb)
    assert decoded.reason == images.TOO_LARGE and "144000000 pixels" in decoded.detail


@pytest.mark.parametrize(
    "mode, fmt",
    [
        ("L", "JPEG"),
        ("CMYK", "JPEG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("LA", "PNG"),
        ("I;16", "PNG"),
        ("1", "PNG"),
    ],
)
def test_every_mode_becomes_rgb(mode, fmt):
    decoded = images.decode(encoded(Image.new(mode, (30, 20)), fmt))
    assert decoded.reason is None and decoded.image.mode == "RGB" and decoded.image.size == (30, 20)


def test_transparency_goes_onto_white_and_a_png_under_any_name_is_fine():
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert images.decode(encoded(clear, "PNG")).image.getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.info["transparency"] = 0
    assert images.decode(encoded(palette, "PNG")).image.getpixel((0, 0)) == (255, 255, 255)
