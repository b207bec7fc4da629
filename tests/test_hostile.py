"""Hostile input and faults (issue 11): nothing runs code, hangs, blows up memory or loses good
data. One test per case; each names the case of the issue it covers.

Fast cases run in-process with a timeout (pytest-timeout), never a timed assertion: a fix that
regresses shows as a timeout, a slow machine does not fail them.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xvhpc.data.catalog import build_catalog
from xvhpc.data.decode import BadImage, DecodeOptions, decode
from xvhpc.spec import SpecError, load_site, load_spec, sweep_points
from xvhpc.spec.load import point_spec
from xvhpc.spec.schema import DataSpec

from .conftest import tiny_spec, xv

# ---------------------------------------------------------------------------------------------
# helpers


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    image.save(buf, format="PNG")
    return buf.getvalue()


def gradient(w: int = 40, h: int = 30) -> np.ndarray:
    return (np.add.outer(np.arange(h), np.arange(w)) * 3 % 256).astype(np.uint8)


def two_classes(root: Path, per_class: int = 3) -> Path:
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / cls / f"{cls}{i}.png").write_bytes(png_bytes(np.roll(gradient(), i * 7)))
    return root


def catalog(root: Path, **data) -> object:
    return build_catalog(root, DataSpec(source=str(root), **data))


def reasons(cat) -> dict[str, str]:
    return {s["path"]: s["reason"] for s in [*cat.skipped, *cat.ignored]}


def deflated_dicom(path: Path, frames: int, rows: int, cols: int, trailing: int = 0) -> Path:
    """A Deflated Explicit VR Little Endian DICOM, streamed (a 400 MB bomb never sits in
    memory); ``trailing`` zero bytes follow the pixel data inside the zipped dataset."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 8, 8, 7
    ds.PixelRepresentation = 0
    buffers = []
    for write in (lambda fp: write_file_meta_info(fp, meta), lambda fp: write_dataset(fp, ds)):
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write(fp)
        buffers.append(fp.getvalue())
    size = frames * rows * cols
    pixel_header = b"\xe0\x7f\x10\x00OB\x00\x00" + size.to_bytes(4, "little")
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    with open(path, "wb") as fh:
        fh.write(b"\0" * 128 + b"DICM" + buffers[0])
        fh.write(packer.compress(buffers[1] + pixel_header))
        left = size + trailing
        while left:
            fh.write(packer.compress(zeros[: min(left, len(zeros))]))
            left -= min(left, len(zeros))
        fh.write(packer.flush())
    return path


def dicom(path: Path, frames: int, rows: int, cols: int) -> Path:
    """A plain (Explicit VR Little Endian) multi-frame DICOM of zeros."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    ds.Rows, ds.Columns = rows, cols
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 8, 8, 7
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = bytes(frames * rows * cols)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr


def problem_at(exc: SpecError, file: Path, key: str) -> str:
    """The problem for ``key``, checked to name the file and a line (file:line: key: …)."""
    for p in exc.problems:
        if p.key == key:
            assert p.file == str(file) and p.line, str(p)
            assert str(p).startswith(f"{file}:{p.line}: {key}: ")
            return p.message
    raise AssertionError(f"no problem for {key}: {exc}")


# ---------------------------------------------------------------------------------------------
# 1. site config values reach job scripts


SITE = """\
name: hostile
architecture: x86_64
scheduler: slurm
launcher: srun
node: {cores: 2, memory_gb: 8}
queues:
  debug: {max_walltime: "01:00:00", max_nodes: 1}
"""

BAD_SITE_VALUES = [
    ("default_account", 'default_account: "abc\\n#SBATCH --uid=0"\n'),
    (
        "queues.debug; touch x",
        'queues:\n  "debug; touch x": {max_walltime: "01:00", max_nodes: 1}\n',
    ),
    ("default_queue", 'default_queue: "debug\\ntouch x"\n'),
    ("env.modules.0", 'env: {modules: ["cuda; touch x"]}\n'),
    ("env.variables.A B", 'env: {variables: {"A B": "1"}}\n'),
    ("env.variables.OK", 'env: {variables: {OK: "a\\ntouch x"}}\n'),
    ("env.python", 'env: {python: "$(touch x)"}\n'),
    ("env.setup.0", 'env: {setup: ["module purge\\ntouch x"]}\n'),
    ("alloc_flags", 'alloc_flags: "smt4\\" ; touch x"\n'),
    ("extra_directives.0", 'extra_directives: ["--constraint=gpu\\ntouch x"]\n'),
    ("srun_mpi", 'srun_mpi: "pmix --x"\n'),
    ("node.gpu_model", 'node: {cores: 2, memory_gb: 8, gpu_model: "V100\\n#SBATCH -x"}\n'),
    ("name", 'name: "hostile\\ntouch x"\n'),
]


@pytest.mark.parametrize("key,line", BAD_SITE_VALUES, ids=[k for k, _ in BAD_SITE_VALUES])
def test_site_values_that_would_inject_script_lines_are_refused(
    tmp_path: Path, key: str, line: str
) -> None:
    """Issue 11 item 1: every site value written into a job script is validated."""
    top = line.split(":")[0]  # the base's own line for that key makes way for the bad one
    lines = SITE.splitlines(keepends=True)
    if top == "queues":
        lines = [ln for ln in lines if not ln.startswith(("queues", "  debug"))]
    site = tmp_path / "site.yaml"
    site.write_text("".join(ln for ln in lines if not ln.startswith(top + ":")) + line)
    with pytest.raises(SpecError) as info:
        load_site(str(site))
    assert problem_at(info.value, site, key)
    assert len(str(info.value).splitlines()) == 1 + len(info.value.problems)  # one line each


def test_site_module_names_with_version_paths_are_accepted(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        SITE
        + "default_account: ABC-123_x.y\n"
        + "alloc_flags: gpumps smt4\n"
        + "env: {modules: [cuda/11.8, gcc+openmp/9.3.0, open-ce], python: /sw/bin/python3.11,"
        + ' variables: {OMP_NUM_THREADS: "7", _X1: "a b $c"}, setup: ["source $HOME/x"]}\n'
        + 'extra_directives: ["--mail-type=END", "-R \\"span[ptile=4]\\""]\n'
    )
    loaded = load_site(str(site))
    assert loaded.env.modules == ["cuda/11.8", "gcc+openmp/9.3.0", "open-ce"]


# ---------------------------------------------------------------------------------------------
# 3. spec loading: bombs, binaries, duplicates, sizes, bad values, sweeps

BASE = "name: x\ndata:\n  source: d\n"

LAUGHS = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{c}: &{c} [{','.join(['*' + p] * 9)}]"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


@pytest.mark.timeout(10)
def test_billion_laughs_is_refused_at_once(tmp_path: Path) -> None:
    spec = tmp_path / "bomb.yaml"
    spec.write_text(LAUGHS + "\n")
    assert len(spec.read_bytes()) < 400
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert "alias" in str(info.value) and f"{spec}:" in str(info.value)


@pytest.mark.timeout(10)
def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "rec.yaml"
    spec.write_text(BASE + "train: &t\n  seed: [*t]\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert "recursive" in problem_at(info.value, spec, "train.seed.0")


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "content,fragment",
    [
        (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4, "binary file"),
        (BASE.encode() + b"  resize: squ\xe4sh\n", "not UTF-8"),
        (BASE.encode() + b"  resize: \x01\n", "not valid YAML"),
    ],
    ids=["binary", "latin1", "control-char"],
)
def test_binary_or_non_utf8_spec_is_a_clear_error(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_bytes(content)
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert fragment in str(info.value) and f"{spec}:" in str(info.value)


@pytest.mark.timeout(10)
def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(BASE + "train:\n  seed: 1\n  seed: 2\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert "first given at line 5" in problem_at(info.value, spec, "train.seed")
    assert info.value.problems[0].line == 6


@pytest.mark.timeout(10)
def test_oversized_spec_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(BASE + "# " + "x" * 200_000 + "\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert "at most 64 KiB" in str(info.value)


@pytest.mark.timeout(10)
def test_spec_that_is_a_fifo_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    with pytest.raises(SpecError) as info:
        load_spec(fifo)
    assert "not a regular file" in str(info.value)


@pytest.mark.timeout(10)
def test_collection_with_a_python_tag_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(BASE + "train: !!python/object/apply:os.system ['touch x']\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert "is not allowed" in problem_at(info.value, spec, "train")


@pytest.mark.timeout(10)
def test_channels_2_is_a_problem_with_choices_not_a_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(BASE + "  channels: 2\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    problem = next(p for p in info.value.problems if p.key == "data.channels")
    assert problem.line == 4 and set(problem.choices) == {"1", "3"}


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "key,fragment",
    [
        ("train.learning_rate.x", "train.learning_rate is a value, not a section"),
        ("data.source.deeper.still", "data.source is a value, not a section"),
        ("data.csv.labl_column", "did you mean label_column"),
        ("sweep.seed", "not a spec key"),
    ],
)
def test_sweep_over_a_key_below_a_scalar_is_a_problem(
    tmp_path: Path, key: str, fragment: str
) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(BASE + f"sweep:\n  parameters:\n    {key}: [1, 2]\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert fragment in problem_at(info.value, spec, f"sweep.parameters.{key}")


def _wide_sweep(method: str, per_key: int, keys: int) -> str:
    names = [
        "seed",
        "log_every",
        "val_every",
        "checkpoint_every",
        "step_size",
        "warmup_iterations",
        "max_requeues",
        "batch_size",
    ][:keys]
    values = ", ".join(str(i) for i in range(1, per_key + 1))
    listed = "".join(f"    train.{n}: [{values}]\n" for n in names)
    return BASE + f"sweep:\n  method: {method}\n  samples: 6\n  seed: 5\n  parameters:\n{listed}"


@pytest.mark.timeout(10)
def test_random_sweep_over_a_huge_grid_samples_without_enumerating(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(_wide_sweep("random", 10, 8))  # 10^8 points
    loaded = load_spec(spec)
    points = sweep_points(loaded)
    assert len(points) == 6 and len({json.dumps(p, sort_keys=True) for p in points}) == 6
    assert points == sweep_points(load_spec(spec))  # seeded: the same every time
    assert point_spec(loaded, points[0]).train.seed == points[0]["train.seed"]


@pytest.mark.timeout(10)
def test_random_sweep_draws_what_it_drew_before(tmp_path: Path) -> None:
    """The sampler indexes the grid instead of listing it: same points as rng.sample(grid)."""
    import itertools
    import random

    spec = tmp_path / "s.yaml"
    spec.write_text(_wide_sweep("random", 4, 3))
    loaded = load_spec(spec)
    params = loaded.spec.sweep.parameters
    keys = sorted(params)
    grid = [dict(zip(keys, c, strict=True)) for c in itertools.product(*(params[k] for k in keys))]
    assert sweep_points(loaded) == random.Random(5).sample(grid, 6)


@pytest.mark.timeout(10)
def test_grid_sweep_too_large_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(_wide_sweep("grid", 10, 5))  # 10^5 points
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert "use method: random" in problem_at(info.value, spec, "sweep.parameters")


@pytest.mark.timeout(10)
def test_long_sweep_list_is_refused_not_copied_quadratically(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(BASE + "sweep:\n  parameters:\n    train.seed: [" + "1," * 15000 + "1]\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert "at most 1,000" in problem_at(info.value, spec, "sweep.parameters.train.seed")


@pytest.mark.timeout(20)
def test_sweep_at_the_limit_compiles_every_point(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    values = ", ".join(str(i) for i in range(1000))
    spec.write_text(BASE + f"sweep:\n  parameters:\n    train.seed: [{values}]\n")
    loaded = load_spec(spec)
    points = sweep_points(loaded)
    assert len(points) == 1000
    assert [point_spec(loaded, p).train.seed for p in points] == list(range(1000))


@pytest.mark.timeout(10)
def test_sweep_values_that_conflict_together_are_a_problem(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    # data.* cannot be swept (ingest reads it once): the plan's own keys (a fold) take this path
    spec.write_text(BASE + "sweep:\n  parameters:\n    train.seed: [1]\n")
    loaded = load_spec(spec)
    with pytest.raises(SpecError) as info:
        point_spec(loaded, {"data.augment.x.copies": 1, "data.augment.x.target_count": 5})
    assert "not both" in problem_at(info.value, spec, "sweep.parameters")


def test_bad_spec_through_the_cli_is_one_message_no_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "bomb.yaml"
    spec.write_text(LAUGHS + "\n")
    proc = xv("validate", str(spec), check=False, timeout=60)
    assert proc.returncode == 1 and "alias" in proc.stderr
    no_traceback(proc)


# ---------------------------------------------------------------------------------------------
# 4. non-regular files, links out of the source; 6. non-UTF-8 names; hidden files; CSV


@pytest.mark.timeout(20)
def test_fifo_named_like_an_image_is_skipped_not_read(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "data")
    os.mkfifo(root / "a" / "x.jpg")
    cat = catalog(root)
    assert "not a regular file (a FIFO)" in reasons(cat)["a/x.jpg"]
    assert all(not s.path.endswith("x.jpg") for s in cat.samples)
    with pytest.raises(BadImage, match="FIFO"):  # and decode never opens one either
        decode(root / "a" / "x.jpg", DecodeOptions(size=32))


@pytest.mark.timeout(20)
def test_link_to_dev_zero_is_not_read(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "data")
    os.symlink("/dev/zero", root / "a" / "zero.png")
    assert "outside data.source" in reasons(catalog(root))["a/zero.png"]
    followed = catalog(root, follow_links=True)
    assert "not a regular file (a character device)" in reasons(followed)["a/zero.png"]
    with pytest.raises(BadImage, match="character device"):
        decode(root / "a" / "zero.png", DecodeOptions(size=32))


@pytest.mark.timeout(20)
def test_class_folder_linked_to_root_is_not_catalogued(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "data")
    os.symlink("/", root / "everything")
    cat = catalog(root)
    assert "outside data.source" in reasons(cat)["everything"]
    assert cat.classes == ["a", "b"]
    assert any("everything/ skipped" in n for n in cat.notes)


@pytest.mark.timeout(20)
def test_follow_links_reads_a_file_outside_the_source(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "data")
    (tmp_path / "elsewhere.png").write_bytes(png_bytes(gradient()))
    os.symlink(tmp_path / "elsewhere.png", root / "b" / "linked.png")
    inside = tmp_path / "data" / "a" / "a0.png"
    os.symlink(inside, root / "b" / "inside.png")  # a link within the source is always read
    assert "b/linked.png" in reasons(catalog(root))
    assert {"b/inside.png"} <= {s.rel for s in catalog(root).samples}
    assert {"b/linked.png", "b/inside.png"} <= {
        s.rel for s in catalog(root, follow_links=True).samples
    }


@pytest.mark.timeout(20)
def test_hidden_files_are_listed_not_counted(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "data")
    (root / "a" / ".x.jpg").write_bytes(png_bytes(gradient()))
    (root / ".git").mkdir()
    cat = catalog(root)
    found = reasons(cat)
    assert "hidden file" in found["a/.x.jpg"] and "hidden folder" in found[".git"]
    assert not cat.skipped  # nothing counted against max_bad_fraction


@pytest.mark.timeout(20)
def test_non_utf8_names_are_catalogued_with_escapes(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "data")
    raw_root = os.fsencode(root)
    with open(raw_root + b"/a/bad\xff.png", "wb") as fh:
        fh.write(png_bytes(gradient()))
    os.mkdir(raw_root + b"/c\xe9")
    for i in range(2):
        with open(raw_root + b"/c\xe9/" + f"{i}.png".encode(), "wb") as fh:
            fh.write(png_bytes(np.roll(gradient(), i)))
    cat = catalog(root)
    assert "c\\xe9" in cat.classes
    assert "a/bad\\xff.png" in {s.rel for s in cat.samples}
    json.dumps([s.rel for s in cat.samples], ensure_ascii=False).encode("utf-8")  # no surrogate
    assert any("not UTF-8" in n for n in cat.notes)


@pytest.mark.timeout(20)
def test_csv_listing_a_file_twice_or_with_two_labels_is_noted(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "data")
    (root / "list.csv").write_text(
        "path,label\na/a0.png,x\na/a1.png,x\na/a0.png,x\nb/b0.png,y\nb/b1.png,y\nb/b1.png,x\n"
        "b/b2.png,y\n"
    )
    cat = build_catalog(root / "list.csv", DataSpec(source=str(root / "list.csv")))
    rels = [s.rel for s in cat.samples]
    assert rels.count("a/a0.png") == 1 and "b/b1.png" not in rels
    assert "2 labels" in reasons(cat)["b/b1.png"]
    assert any("more than once" in n and "a/a0.png (lines 2, 4)" in n for n in cat.notes)
    assert any("different labels" in n and "b/b1.png" in n for n in cat.notes)


def test_hostile_folder_ingests_end_to_end(tmp_path: Path) -> None:
    """Items 4 and 6 through the CLI: FIFO, /dev/zero link, link to /, non-UTF-8 file and class
    names, a hidden file — ingest finishes, the manifest lists each with why."""
    root = two_classes(tmp_path / "data", per_class=4)
    raw = os.fsencode(root)
    os.mkfifo(root / "a" / "pipe.jpg")
    os.symlink("/dev/zero", root / "a" / "zero.png")
    os.symlink("/", root / "rootlink")
    (root / "b" / ".hidden.png").write_bytes(png_bytes(gradient()))
    with open(raw + b"/a/bad\xff.png", "wb") as fh:
        fh.write(png_bytes(gradient()))
    os.mkdir(raw + b"/c\xe9")
    for i in range(3):
        with open(raw + b"/c\xe9/" + f"{i}.png".encode(), "wb") as fh:
            fh.write(png_bytes(np.roll(gradient(), i * 3)))
    spec = tiny_spec(tmp_path / "s.yaml", root, data={"max_bad_fraction": 0.5, "shards": 1})
    xv("compile", str(spec), "--out", str(tmp_path / "run"))
    proc = xv(
        "ingest", "--run-dir", str(tmp_path / "run"), "--shard", "all", "--merge", timeout=300
    )
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text(encoding="utf-8"))
    skipped = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert "FIFO" in skipped["a/pipe.jpg"] and "outside data.source" in skipped["a/zero.png"]
    assert "outside data.source" in skipped["rootlink"] and "hidden" in skipped["b/.hidden.png"]
    assert manifest["classes"] == ["a", "b", "c\\xe9"]
    assert sum(s["count"] for s in manifest["shards"]) == 4 + 4 + 1 + 3
    no_traceback(proc)


# ---------------------------------------------------------------------------------------------
# 5. the pixel guard covers every decode


@pytest.mark.timeout(30)
def test_deflated_multiframe_dicom_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    bomb = deflated_dicom(tmp_path / "bomb.dcm", 400, 1000, 1000)
    assert bomb.stat().st_size < 500_000  # ~390 KB that inflate to 400 MB
    for frames in ("first", "all"):
        with pytest.raises(BadImage, match="400 frames of 1000x1000"):
            decode(bomb, DecodeOptions(size=32, dicom_frames=frames))


@pytest.mark.timeout(30)
def test_multiframe_dicom_counts_frames(tmp_path: Path) -> None:
    many = dicom(tmp_path / "many.dcm", 30, 100, 100)
    opts = DecodeOptions(size=32, max_pixels=100_000, dicom_frames="all")
    with pytest.raises(BadImage, match="30 frames of 100x100 = 300,000 pixels"):
        decode(many, opts)
    first = decode(many, DecodeOptions(size=32, max_pixels=100_000, dicom_frames="first"))
    assert len(first) == 1  # only the first frame is decoded
    small = deflated_dicom(tmp_path / "small.dcm", 3, 20, 30)
    assert len(decode(small, DecodeOptions(size=32, dicom_frames="all"))) == 3


@pytest.mark.timeout(30)
def test_deflated_dicom_that_inflates_past_its_header_is_refused(tmp_path: Path) -> None:
    """A 1x1 image whose zipped dataset holds 300 MB of zeros after its pixel."""
    path = deflated_dicom(tmp_path / "liar.dcm", 1, 1, 1, trailing=300 << 20)
    with pytest.raises(BadImage, match="inflates past"):
        decode(path, DecodeOptions(size=32))


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    """A model bundle without training (serve only needs weights and meta)."""
    import torch

    from xvhpc.data.manifest import preprocessing
    from xvhpc.models.bundle import save_bundle
    from xvhpc.models.zoo import build_model
    from xvhpc.spec.schema import ExperimentSpec

    spec = ExperimentSpec.model_validate(
        {
            "name": "hostile",
            "data": {"source": "x", "image_size": 32, "channels": 1},
            "model": {"arch": "resnet18", "pretrained": "none"},
            "deploy": {"threshold": 0.9},
        }
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("bundle") / "model"
    save_bundle(
        out, build_model(spec.model, 3), spec, ["a", "b", "c"], preprocessing(spec.data), 0, {}
    )
    return out


@pytest.fixture(scope="module")
def client(bundle_dir: Path):
    from fastapi.testclient import TestClient

    from xvhpc.models.bundle import load_bundle
    from xvhpc.serve.app import create_app

    return TestClient(create_app(load_bundle(bundle_dir)))


@pytest.mark.timeout(120)
def test_serve_refuses_the_dicom_bomb(client, tmp_path: Path) -> None:
    bomb = deflated_dicom(tmp_path / "bomb.dcm", 400, 1000, 1000).read_bytes()
    response = client.post("/v1/predict", files={"file": ("x.dcm", bomb)})
    assert response.status_code == 415 and "bomb" in response.json()["detail"]


@pytest.mark.timeout(120)
def test_serve_heatmap_is_bounded_for_a_huge_sparse_png(client) -> None:
    huge = png_bytes(np.zeros((2000, 3000), np.uint8), mode="1")
    assert len(huge) < 20_000
    response = client.post("/v1/predict", files={"file": ("x.png", huge)}, data={"heatmap": "true"})
    assert response.status_code == 200
    overlay = Image.open(io.BytesIO(base64.b64decode(response.json()["heatmap"])))
    assert overlay.size == (1024, 683)  # the input's shape, at most 1024 px a side


# ---------------------------------------------------------------------------------------------
# serve: deploy.threshold is the default


@pytest.mark.timeout(60)
def test_serve_applies_the_deployed_threshold_by_default(client) -> None:
    assert client.get("/v1/model").json()["default_threshold"] == 0.9
    image = png_bytes(gradient(64, 64))
    deployed = client.post("/v1/predict", files={"file": ("x.png", image)}).json()
    asked = client.post(
        "/v1/predict", files={"file": ("x.png", image)}, data={"threshold": "0"}
    ).json()
    assert len(asked["predictions"]) == 3  # the request's value overrides the deployed one
    assert all(p["confidence"] >= 0.9 for p in deployed["predictions"])
    assert len(deployed["predictions"]) < 3


# ---------------------------------------------------------------------------------------------
# 7. shard corruption; 8. run-dir locks; 9. clear errors


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("ingested")
    root = two_classes(work / "data", per_class=6)
    spec = tiny_spec(work / "s.yaml", root)
    xv("compile", str(spec), "--out", str(work / "run"))
    xv("ingest", "--run-dir", str(work / "run"), "--shard", "all", "--merge", timeout=300)
    return work / "run"


@pytest.fixture
def run(ingested: Path, tmp_path: Path) -> Path:
    """A private copy of the ingested run (paths inside it stay absolute to the data)."""
    copy = tmp_path / "run"
    shutil.copytree(ingested, copy, ignore=shutil.ignore_patterns("locks"))
    plan = json.loads((copy / "plan.json").read_text())
    plan["run_dir"] = str(copy)
    (copy / "plan.json").write_text(json.dumps(plan))
    return copy


def corrupt(path: Path) -> None:
    """Overwrite bytes inside the file, keeping its size (what a bad block or a stray writer
    does)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in [*range(middle, middle + 64), *range(len(data) - 200, len(data) - 100)]:
        data[i] ^= 0xFF  # every byte changes (fixed values may equal what is there: padding)
    path.write_bytes(bytes(data))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_corrupt_shard_is_written_again_by_ingest(run: Path) -> None:
    shard = run / "shards" / "shard-00000.h5"
    good = json.loads(shard.with_suffix(".json").read_text())["sha256"]
    corrupt(shard)
    proc = xv("ingest", "--run-dir", str(run), "--shard", "all", "--merge", timeout=300)
    assert "does not match the sha256" in proc.stderr
    assert sha256(shard) == good  # written again: the same bytes as the first time


def test_corrupt_shard_stops_training_with_its_name(run: Path) -> None:
    shard = run / "shards" / "shard-00001.h5"
    corrupt(shard)
    proc = xv("train", "--run-dir", str(run), "--max-iterations", "1", check=False, timeout=300)
    assert proc.returncode != 0
    assert f"{shard} does not match the sha256" in proc.stderr
    assert "--shard 1" in proc.stderr
    no_traceback(proc)


@pytest.mark.timeout(30)
def test_index_verifies_each_shard_once_per_process(run: Path, monkeypatch) -> None:
    from xvhpc.data import dataset, shards

    calls: list[str] = []
    real = shards.sha256_file
    monkeypatch.setattr(shards, "sha256_file", lambda p: calls.append(str(p)) or real(p))
    shards._digests.clear()
    dataset.load_index(run, "train")
    dataset.load_index(run, "val")
    assert sorted(calls) == sorted(str(p) for p in (run / "shards").glob("*.h5"))
    calls.clear()
    shards._digests.clear()
    monkeypatch.setenv("RANK", "1")  # the job's other ranks leave the check to rank 0
    dataset.load_index(run, "train")
    assert calls == []


HOLD = """
import sys, time
from pathlib import Path
from xvhpc import lock
root, kind, parts = Path(sys.argv[1]), sys.argv[2], [p for p in sys.argv[3:]]
if kind == "run":
    ctx = lock.exclusive_run(root, ["run", "spec.yaml"])
else:
    ctx = lock.step(root, [(p.lstrip("~"), p.startswith("~")) for p in parts], ["ingest", "--shard", "0"])
with ctx:
    print("held", flush=True)
    sys.stdin.read()
"""


def holder(root: Path, kind: str, *parts: str) -> subprocess.Popen:
    """A process holding locks until its stdin closes (``~name``: shared)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root), kind, *parts],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def release(proc: subprocess.Popen) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=60)


def test_second_writer_of_a_shard_is_refused_naming_the_holder(run: Path) -> None:
    hold = holder(run, "step", "~ingest", "shard-00000")
    try:
        proc = xv("ingest", "--run-dir", str(run), "--shard", "0", check=False, timeout=120)
        assert proc.returncode == 5
        assert f"pid {hold.pid} on host {socket.gethostname()}" in proc.stderr
        assert "shard-00000.lock" in proc.stderr
        no_traceback(proc)
        other = xv("ingest", "--run-dir", str(run), "--shard", "1", check=False, timeout=120)
        assert other.returncode == 0, other.stderr  # array tasks of other shards run alongside
        whole = xv("ingest", "--run-dir", str(run), "--shard", "all", check=False, timeout=120)
        assert whole.returncode == 5  # --shard all writes every shard
    finally:
        release(hold)


def test_a_running_pipeline_refuses_a_second_run_and_its_steps(run: Path, tmp_path: Path) -> None:
    hold = holder(run, "run")
    try:
        for args in (
            ("ingest", "--run-dir", str(run), "--merge"),
            ("train", "--run-dir", str(run), "--max-iterations", "1"),
            ("compile", str(run / "spec.yaml"), "--out", str(run)),
        ):
            proc = xv(*args, check=False, timeout=300)
            assert proc.returncode == 5, (args, proc.stderr)
            assert "run.lock is held by `xvhpc run spec.yaml`" in proc.stderr
    finally:
        release(hold)


def test_lock_of_a_killed_holder_is_released(run: Path) -> None:
    hold = holder(run, "step", "~ingest", "merge")
    hold.send_signal(signal.SIGKILL)
    hold.wait(timeout=60)
    proc = xv("ingest", "--run-dir", str(run), "--merge", check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_only_rank_0_of_a_training_job_locks() -> None:
    from xvhpc.lock import launch_rank

    assert launch_rank({}) == 0
    assert launch_rank({"RANK": "3"}) == 3
    assert launch_rank({"OMPI_COMM_WORLD_RANK": "2"}) == 2
    assert launch_rank({"SLURM_PROCID": "1"}) == 0  # the batch script itself, not an srun task
    assert launch_rank({"SLURM_PROCID": "1", "SLURM_STEP_ID": "0"}) == 1


@pytest.mark.parametrize(
    "args,fragment",
    [
        (("ingest", "--shard", "abc"), "'abc' is not a shard index"),
        (("ingest", "--shard", "-1"), "is not a shard index"),
        (("train", "--max-iterations", "0"), "0 is below 1"),
    ],
)
def test_bad_step_arguments_are_one_line(run: Path, args: tuple, fragment: str) -> None:
    proc = xv(args[0], "--run-dir", str(run), *args[1:], check=False, timeout=120)
    assert proc.returncode == 2 and fragment in proc.stderr
    no_traceback(proc)


def test_corrupt_jobs_json_is_a_clear_error(run: Path) -> None:
    (run / "jobs.json").write_text('{"scheduler": "local", "steps": {')
    proc = xv("status", str(run), check=False, timeout=120)
    assert proc.returncode == 2 and f"{run / 'jobs.json'} is damaged" in proc.stderr
    no_traceback(proc)


def test_corrupt_manifest_is_a_clear_error(run: Path) -> None:
    (run / "manifest.json").write_bytes(b"\xff\xfe garbage")
    proc = xv("train", "--run-dir", str(run), "--max-iterations", "1", check=False, timeout=300)
    assert proc.returncode != 0 and "manifest.json is damaged" in proc.stderr
    no_traceback(proc)


def test_corrupt_checkpoint_is_a_clear_error(run: Path) -> None:
    checkpoint = run / "train" / "0" / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"PK\x03\x04 not really a zip" + os.urandom(500))
    proc = xv("train", "--run-dir", str(run), "--max-iterations", "1", check=False, timeout=300)
    assert proc.returncode != 0 and str(checkpoint) in proc.stderr
    no_traceback(proc)


def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


def test_export_to_a_read_only_directory_is_a_clear_error(bundle_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "ro"
    _mount_tmpfs(target, "ro,size=1m")
    try:
        proc = xv("export", str(bundle_dir), "--out", str(target / "m.pt"), check=False)
    finally:
        subprocess.run(["umount", str(target)], check=False)
    assert proc.returncode == 2 and "Read-only file system" in proc.stderr
    no_traceback(proc)


def test_disk_full_during_ingest_is_a_clear_error_and_leaves_no_temp(
    ingested: Path, tmp_path: Path
) -> None:
    full = tmp_path / "full"
    _mount_tmpfs(full, "size=1m")
    try:
        data = Path(json.loads((ingested / "plan.json").read_text())["data_source"])
        spec = tiny_spec(tmp_path / "big.yaml", data, data={"image_size": 256, "channels": 3})
        xv("compile", str(spec), "--out", str(full / "run"))
        proc = xv("ingest", "--run-dir", str(full / "run"), "--shard", "all", check=False)
        leftovers = list((full / "run" / "shards").glob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(full)], check=False)
    assert proc.returncode == 2 and "No space left on device" in proc.stderr, proc.stderr
    assert not leftovers
    no_traceback(proc)


def test_files_get_the_umask_not_0600(tmp_path: Path) -> None:
    from xvhpc.util import atomic_path, write_json_atomic

    old = os.umask(0o002)
    try:
        with atomic_path(tmp_path / "checkpoint.pt") as tmp:
            tmp.write_bytes(b"x")
        write_json_atomic(tmp_path / "progress.json", {})
        root = two_classes(tmp_path / "data")
        spec = tiny_spec(tmp_path / "s.yaml", root, data={"shards": 1})
        xv("compile", str(spec), "--out", str(tmp_path / "run"))
        xv("ingest", "--run-dir", str(tmp_path / "run"), "--shard", "all", "--merge")
    finally:
        os.umask(old)
    for path in (
        tmp_path / "checkpoint.pt",
        tmp_path / "progress.json",
        tmp_path / "run" / "shards" / "shard-00000.h5",
        tmp_path / "run" / "manifest.json",
    ):
        assert path.stat().st_mode & 0o777 == 0o664, path
