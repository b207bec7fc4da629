"""A faster PNG decode (libspng through pyspng) for the PNGs whose pixels it gives exactly as
PIL does; every other PNG (and any PNG when pyspng is missing) goes to PIL.

Why: a PNG has no reduced-scale decode, so the decoder is the whole cost; libspng decodes
8-bit RGB/RGBA about 2× faster than PIL (gray about the same: both are bound by zlib).
Exactly PIL's pixels, so shards are byte-identical with and without it: only 8-bit, non-
interlaced gray / RGB / RGBA, and no EXIF anywhere (PIL would rotate by it). Palette, gray+
alpha, 16-bit and < 8-bit (PIL converts them its own way) and interlaced files fall back.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np

try:  # optional: POWER9 sites may lack a wheel; PIL decodes everything then
    import pyspng as _pyspng
except ImportError:  # pragma: no cover - depends on the environment
    _pyspng = None

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = (
    0,
    2,
    6,
)  # gray, RGB, RGBA (palette and gray+alpha, which libspng refuses, go to PIL)
_TEXT = (b"tEXt", b"zTXt", b"iTXt")
_EXIF_KEYS = (b"Raw profile type exif", b"Raw profile type APP1", b"XML:com.adobe.xmp")


def enabled() -> bool:
    """pyspng is importable and not switched off (``XVHPC_FAST_PNG=0``, e.g. to compare)."""
    return _pyspng is not None and os.environ.get("XVHPC_FAST_PNG", "1") != "0"


def header(data: bytes) -> tuple[int, int, int, int, int] | None:
    """(width, height, bit depth, colour type, interlace) from IHDR, or None if there is none."""
    if len(data) < 33 or data[:8] != SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height, depth, color, _comp, _filter, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return width, height, depth, color, interlace


def _has_orientation(data: bytes) -> bool:
    """True when a chunk may carry an EXIF orientation PIL applies (eXIf, or a text chunk
    holding EXIF/XMP); a damaged chunk list counts too, so PIL reports it. Walks chunk
    headers only: IDAT bodies are skipped by their length."""
    pos, end = 8, len(data)
    while pos + 8 <= end:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"IEND":
            return False
        if kind == b"eXIf":
            return True
        if kind in _TEXT and data[pos + 8 : pos + 8 + 80].startswith(_EXIF_KEYS):
            return True
        pos += 12 + length
    return True


def fast_decode(data: bytes, max_pixels: int) -> np.ndarray | None:
    """HxW or HxWxC uint8 pixels of a PNG pyspng decodes exactly like PIL, else None: the
    caller uses PIL, which also gives the error for a damaged file or one over
    ``max_pixels`` (checked here from the header, before anything is inflated)."""
    if not enabled():
        return None
    head = header(data)
    if head is None:
        return None
    width, height, depth, color, interlace = head
    if width * height > max_pixels:
        return None
    if depth != 8 or color not in _COLOR_TYPES or interlace or _has_orientation(data):
        return None
    try:
        pixels: Any = _pyspng.load(data)
    except Exception:  # damaged: PIL decodes it again and names the problem
        return None
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
        return None
    return pixels
