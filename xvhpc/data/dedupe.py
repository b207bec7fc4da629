"""Near-duplicate images across held-out parts: a perceptual hash (dHash) of each original as
resized for the shards (computed at ingest), compared at merge for the manifest's leak report.

Pure numpy and PIL.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from PIL import Image

NEAR_DISTANCE = 4  # dHash bits (of 64) at or below which two images count as near-duplicates
MAX_PAIRWISE = 50_000  # above this many originals only identical dHashes are compared


def dhash(image: np.ndarray) -> str:
    """64-bit difference hash of an (H, W, C) uint8 image: brightness gradients of a 9×8
    gray thumbnail, robust to resizing, compression and small intensity changes."""
    gray = image.mean(axis=2).astype(np.uint8) if image.ndim == 3 else image
    thumb = np.asarray(Image.fromarray(gray).resize((9, 8), Image.Resampling.BOX), np.int16)
    bits = (thumb[:, 1:] > thumb[:, :-1]).ravel()
    return f"{int(np.packbits(bits).view('>u8')[0]):016x}"


def near_duplicates(entries: list[dict], limit: int = 100) -> dict:
    """Pairs of originals in different held-out parts whose dHashes differ by ≤ NEAR_DISTANCE
    bits. ``entries``: ``{"part", "dhash", "source"}`` per original image."""
    if not entries:
        return {"pairs": 0, "max_distance": NEAR_DISTANCE, "examples": [], "method": "dhash"}
    codes = np.array([int(e["dhash"], 16) for e in entries], dtype=np.uint64)
    parts = np.array([e["part"] for e in entries])
    if len(entries) > MAX_PAIRWISE:
        pairs = _identical_pairs(codes, parts)
        method = "dhash (identical hashes only: too many images for all pairs)"
    else:
        pairs = _close_pairs(codes, parts)
        method = "dhash"
    examples = [
        {
            "a": entries[i]["source"],
            "part_a": str(parts[i]),
            "b": entries[j]["source"],
            "part_b": str(parts[j]),
            "distance": d,
        }
        for i, j, d in sorted(pairs, key=lambda p: (p[2], p[0], p[1]))[:limit]
    ]
    return {
        "pairs": len(pairs),
        "max_distance": NEAR_DISTANCE,
        "examples": examples,
        "method": method,
    }


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64: ``np.bitwise_count`` where numpy has it (2.0+), else a byte
    table (Open-CE's torch 2.0.1 environments hold numpy 1.x)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    as_bytes = np.ascontiguousarray(values, np.uint64).view(np.uint8)
    return _BYTE_BITS[as_bytes].reshape(*values.shape, 8).sum(-1, dtype=np.uint8)


def _close_pairs(codes: np.ndarray, parts: np.ndarray, chunk: int = 1024) -> list:
    found = []
    for start in range(0, len(codes), chunk):
        block = codes[start : start + chunk]
        dist = popcount(block[:, None] ^ codes[None, :])
        rows, cols = np.nonzero(dist <= NEAR_DISTANCE)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if i < c and parts[i] != parts[c]:
                found.append((i, c, int(dist[r, c])))
    return found


def _identical_pairs(codes: np.ndarray, parts: np.ndarray) -> list:
    by_code: defaultdict[int, list[int]] = defaultdict(list)
    for i, code in enumerate(codes.tolist()):
        by_code[code].append(i)
    return [
        (i, j, 0)
        for same in by_code.values()
        for n, i in enumerate(same)
        for j in same[n + 1 :]
        if parts[i] != parts[j]
    ]
