"""Performance paths that must not change results: the libspng PNG decode gives PIL's pixels
(and hands PIL what it cannot read), shards are byte-identical with it on or off, the
block-shuffled loader still yields every sample once per epoch with disjoint ranks, and the
loader's direct (pread) reads give the pixels h5py gives."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from tests.conftest import tiny_spec, xv
from xvhpc.data import png
from xvhpc.data.dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Index,
    RankBatches,
    ShardCorrupt,
    ShardDataset,
    row_offsets,
    to_model_input,
)
from xvhpc.data.decode import BadImage, DecodeOptions, decode, to_channels
from xvhpc.data.shards import Record, ShardWriter

RNG = np.random.default_rng(7)
GRAY = RNG.integers(0, 256, (37, 53), dtype=np.uint8)
RGBA = RNG.integers(0, 256, (37, 53, 4), dtype=np.uint8)


def encode(image: Image.Image, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", **kwargs)
    return out.getvalue()


def pil_decode(data: bytes, opts: DecodeOptions, monkeypatch) -> np.ndarray:
    """What decode gives with the fast path switched off (PIL only)."""
    with monkeypatch.context() as m:
        m.setenv("XVHPC_FAST_PNG", "0")
        return decode(data, opts)[0]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def adam7_png(pixels: np.ndarray) -> bytes:
    """An interlaced (Adam7) 8-bit gray PNG, written by hand: PIL cannot write one."""
    height, width = pixels.shape
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
    raw = b""
    for x0, y0, dx, dy in (*passes, (0, 1, 1, 2)):
        sub = pixels[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 1)
    body = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw))
    return png.SIGNATURE + body + _chunk(b"IEND", b"")


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
@pytest.mark.parametrize("channels", [1, 3])
def test_fast_png_gives_pil_pixels(mode: str, channels: int, monkeypatch) -> None:
    image = Image.fromarray(RGBA).convert(mode)
    data = encode(image)
    fast = png.fast_decode(data, 10**9)
    assert fast is not None, "this PNG should take the libspng path"
    assert np.array_equal(fast, np.asarray(image))
    opts = DecodeOptions(channels=channels, expand_gray=False)
    assert np.array_equal(decode(data, opts)[0], pil_decode(data, opts, monkeypatch))


def test_fast_png_gray_with_transparency_keeps_pixels(monkeypatch) -> None:
    data = encode(Image.fromarray(GRAY), transparency=0)
    assert png.fast_decode(data, 10**9) is not None
    opts = DecodeOptions(channels=1)
    assert np.array_equal(decode(data, opts)[0][:, :, 0], GRAY)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: encode(Image.fromarray(GRAY.astype(np.uint16) * 257)), id="16bit"),
        pytest.param(lambda: encode(Image.fromarray(RGBA[:, :, :3]).convert("P")), id="palette"),
        pytest.param(lambda: encode(Image.fromarray(RGBA).convert("LA")), id="gray-alpha"),
        pytest.param(lambda: encode(Image.fromarray(GRAY).convert("1")), id="1bit"),
        pytest.param(lambda: adam7_png(GRAY), id="interlaced"),
    ],
)
def test_png_that_libspng_cannot_match_goes_to_pil(make, monkeypatch) -> None:
    data = make()
    assert png.fast_decode(data, 10**9) is None
    for channels in (1, 3):
        opts = DecodeOptions(channels=channels, expand_gray=False)
        ours = decode(data, opts)[0]
        with Image.open(io.BytesIO(data)) as image:
            assert ours.shape[:2] == (image.height, image.width)
        assert np.array_equal(ours, pil_decode(data, opts, monkeypatch))


def test_interlaced_png_pixels_are_exact() -> None:
    assert np.array_equal(decode(adam7_png(GRAY), DecodeOptions(channels=1))[0][:, :, 0], GRAY)


def test_16bit_png_scaled_like_before() -> None:
    data = encode(Image.fromarray(GRAY.astype(np.uint16) * 100))
    out = decode(data, DecodeOptions(channels=1))[0][:, :, 0]
    assert (int(out.min()), int(out.max())) == (0, 255)


def test_png_with_exif_orientation_is_rotated_by_pil() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise
    data = encode(Image.fromarray(GRAY), exif=exif.tobytes())
    assert png.fast_decode(data, 10**9) is None
    assert decode(data, DecodeOptions(channels=1))[0].shape[:2] == (53, 37)


def test_png_over_the_pixel_guard_is_refused_before_decoding() -> None:
    data = encode(Image.fromarray(GRAY))
    assert png.fast_decode(data, 100) is None
    with pytest.raises(BadImage, match="decompression bomb guard"):
        decode(data, DecodeOptions(max_pixels=100))


def test_damaged_png_is_named_by_pil() -> None:
    data = encode(Image.fromarray(RGBA[:, :, :3]))
    cut = data[: len(data) // 2]
    assert png.fast_decode(cut, 10**9) is None
    with pytest.raises(BadImage, match="PNG"):
        decode(cut, DecodeOptions())


def _png_source(root: Path) -> Path:
    """PNGs of every mode the fast path takes (and one it does not), in two classes."""
    rng = np.random.default_rng(3)
    for i in range(12):
        folder = root / ("a", "b")[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (90 + i, 120, 4), dtype=np.uint8)
        mode = ("L", "RGB", "RGBA", "P")[i % 4]
        Image.fromarray(pixels).convert(mode).save(folder / f"{i:02d}.png")
    return root


def _shard_digests(run: Path) -> list[str]:
    shards = sorted((run / "shards").glob("shard-*.h5"))
    assert shards, f"no shards under {run}"
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in shards]


@pytest.mark.parametrize("channels", [1, 3])
def test_shards_identical_with_fast_png_on_and_off(tmp_path: Path, channels: int) -> None:
    assert png.enabled(), "pyspng is a dependency: the fast path must be on by default"
    source = _png_source(tmp_path / "src")
    digests = []
    for flag in ("1", "0"):
        work = tmp_path / f"fast{flag}"
        work.mkdir()
        spec = tiny_spec(work / "spec.yaml", source, data={"channels": channels})
        xv("compile", str(spec), "--out", str(work / "run"))
        env = {"XVHPC_FAST_PNG": flag}
        xv("ingest", "--run-dir", str(work / "run"), "--shard", "all", "--merge", env=env)
        digests.append(_shard_digests(work / "run"))
    assert digests[0] == digests[1]


# ----------------------------------------------------------------- block-shuffled loader
@pytest.mark.parametrize(("n", "world", "batch", "block"), [(96, 2, 8, 8), (103, 3, 5, 4)])
def test_block_batches_cover_an_epoch_once_with_disjoint_ranks(
    n: int, world: int, batch: int, block: int
) -> None:
    ranks = [RankBatches(n, batch, r, world, seed=4, block=block) for r in range(world)]
    steps = ranks[0].steps_per_epoch
    for epoch in range(2):
        seen = [sum((b.batch_at(epoch * steps + s) for s in range(steps)), []) for b in ranks]
        flat = sum(seen, [])
        assert len(flat) == len(set(flat)), "a sample came twice in one epoch"
        assert all(not set(a) & set(b) for a in seen for b in seen if a is not b)
        assert len(flat) == world * steps * batch
        if n % (world * batch) == 0:
            assert sorted(flat) == list(range(n))


def test_block_batches_reshuffle_resume_and_read_runs() -> None:
    a = RankBatches(256, 32, 0, 1, seed=1, block=8)
    assert a.batch_at(0) != a.batch_at(8)  # next epoch reshuffles
    assert next(iter(RankBatches(256, 32, 0, 1, seed=1, block=8, start=11))) == a.batch_at(11)
    rows = sorted(a.batch_at(3))
    runs = 1 + sum(1 for x, y in zip(rows, rows[1:], strict=False) if y != x + 1)
    assert runs <= 4, f"32 samples in blocks of 8 should be at most 4 runs, got {runs}"
    assert a.batch_at(3) != rows, "the batch is shuffled within itself"


def test_block_batches_off_with_weights() -> None:
    weights = np.ones(64)
    assert RankBatches(64, 8, 0, 1, seed=1, weights=weights, block=8).block == 1


def _shards(tmp_path: Path, compression: str = "none") -> Index:
    """Two small shards written by the real writer (rows of each: distinct images)."""
    files, shards, rows, labels = [], [], [], []
    for s, count in enumerate((13, 9)):
        path = tmp_path / f"shard-{s}.h5"
        writer = ShardWriter(path, 8, 3, compression, batch=4)
        for r in range(count):
            image = np.full((8, 8, 3), s * 100 + r, dtype=np.uint8)
            writer.add(Record(image, (s + r) % 2, "train", f"s{s}r{r}"))
        writer.close({})
        files.append(str(path))
        shards.append(np.full(count, s, np.int32))
        rows.append(np.arange(count))
        labels.append(np.array([(s + r) % 2 for r in range(count)]))
    return Index(tuple(files), np.concatenate(shards), np.concatenate(rows), np.concatenate(labels))


@pytest.mark.parametrize("memory", [False, True])
def test_batch_read_equals_sample_reads(tmp_path: Path, memory: bool) -> None:
    data = ShardDataset(_shards(tmp_path), cache_in_memory=memory)
    asked = [14, 3, 4, 5, 12, 13, 21, 0, 5, 6]  # runs, a shard boundary, a repeat, any order
    got = data.__getitems__(asked)
    assert len(got) == len(asked)
    for i, (image, label) in zip(asked, got, strict=True):
        one, one_label = data[i]
        assert torch.equal(image, one), f"sample {i}"
        assert label == one_label


@pytest.mark.parametrize("compression", ["none", "gzip", "lzf"])
def test_direct_reads_give_h5py_pixels_and_compressed_shards_use_h5py(
    tmp_path: Path, compression: str
) -> None:
    index = _shards(tmp_path, compression)
    with h5py.File(index.files[0], "r") as h5:
        offsets = row_offsets(h5["images"])
        written = h5["images"][:]
    if compression == "none":  # every row's bytes lie at its offset in the file
        raw = Path(index.files[0]).read_bytes()
        assert offsets is not None and len(offsets) == len(written)
        for row, at in enumerate(offsets):
            assert raw[at : at + written[row].nbytes] == written[row].tobytes()
    else:
        assert offsets is None, "a filtered chunk is not raw pixels"
    asked = [14, 3, 4, 5, 12, 13, 21, 0, 5, 6, 1, 2]
    direct = ShardDataset(index).__getitems__(asked)
    through_h5py = ShardDataset(index, direct=False).__getitems__(asked)
    for (a, label_a), (b, label_b) in zip(direct, through_h5py, strict=True):
        assert torch.equal(a, b) and label_a == label_b
    assert [int(image[0, 0, 0]) for image, _ in direct] == [
        s * 100 + r for s, r in zip(index.shard[asked], index.row[asked], strict=True)
    ]


def test_a_shard_cut_short_while_open_is_a_clear_error(tmp_path: Path) -> None:
    index = _shards(tmp_path)
    data = ShardDataset(index)
    data.__getitems__([0, 1])  # opened, offsets read
    os.truncate(index.files[0], 4096)
    with pytest.raises(ShardCorrupt, match=r"shard-0\.h5 is shorter than its own HDF5 index"):
        data.__getitems__([12, 2])


def test_short_reads_are_continued_not_called_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read may return less than asked (Linux: at most 2 GiB - 4 KiB per call)."""
    index = _shards(tmp_path)
    expected = ShardDataset(index, direct=False).__getitems__(list(range(12)))
    preadv = os.preadv

    def capped(fd: int, buffers: list, offset: int) -> int:  # 100 bytes per call at most
        return preadv(fd, [memoryview(buffers[0])[:100]], offset)

    monkeypatch.setattr("xvhpc.data.dataset.os.preadv", capped)
    got = ShardDataset(index).__getitems__(list(range(12)))  # one run of 12 rows
    for (a, label_a), (b, label_b) in zip(got, expected, strict=True):
        assert torch.equal(a, b) and label_a == label_b


def test_dataloader_uses_batch_reads(tmp_path: Path) -> None:
    data = ShardDataset(_shards(tmp_path))
    batches = RankBatches(len(data), 4, 0, 1, seed=2, block=4)
    # one worker process: the files open there, after the fork, and the batch crosses back
    loader = DataLoader(data, batch_sampler=[batches.batch_at(i) for i in range(5)], num_workers=1)
    for step, (images, labels) in enumerate(loader):
        asked = batches.batch_at(step)
        assert images.dtype == torch.uint8, "uint8 until the device"
        assert images[:, 0, 0, 0].tolist() == [int(data[i][0][0, 0, 0]) for i in asked]
        assert labels.tolist() == [data[i][1] for i in asked]


# ----------------------------------------------------------------- per-stage figures
def test_status_and_report_show_each_stage_throughput(trained_run: Path) -> None:
    manifest = json.loads((trained_run / "manifest.json").read_text())
    assert manifest["ingest_seconds"] > 0
    assert json.loads((trained_run / "eval" / "0" / "metrics.json").read_text())["seconds"] > 0
    status = xv("status", str(trained_run)).stdout
    assert re.search(r"^ingest .*\d+ images, 0 skipped, \d+ files/s per task$", status, re.M)
    assert re.search(r"^train .*img/s per rank \(data wait \d+%\)", status, re.M), status
    assert re.search(r"^evaluate .*\d+\.\d s for 1 point\(s\)$", status, re.M), status
    report = (trained_run / "report.html").read_text()
    section = report.split("<h2>Where the time goes</h2>")[1].split("<h2>")[0]
    for stage in ("ingest", "train, point 0", "evaluate, point 0", "images/s per rank"):
        assert stage in section


@pytest.mark.parametrize("channels", [1, 3])
def test_model_input_is_normalised_nchw_from_uint8(channels: int) -> None:
    images = torch.randint(0, 256, (4, 16, 16, channels), dtype=torch.uint8)
    x = to_model_input(images)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = (images.permute(0, 3, 1, 2).float() / 255 - mean) / std
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and x.is_contiguous()
    assert torch.allclose(x, expected, atol=1e-5)


def _weighted_gray(array: np.ndarray) -> np.ndarray:
    """The float RGB → gray formula every shard so far was written with."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return (array.astype(np.float32) @ weights).round().clip(0, 255).astype(np.uint8)[:, :, None]


def test_gray_saved_as_rgb_gives_the_weighted_formula_exactly() -> None:
    values = np.tile(np.arange(256, dtype=np.uint8), (300, 1))  # every value, 300 rows
    rgb = np.repeat(values[:, :, None], 3, axis=2)
    assert np.array_equal(to_channels(rgb, 1), _weighted_gray(rgb))
    rgb[250, 7] = (10, 200, 30)  # one colour pixel, in a row the sparse check skips
    assert np.array_equal(to_channels(rgb, 1), _weighted_gray(rgb))
    assert to_channels(rgb, 1)[250, 7, 0] != 10
