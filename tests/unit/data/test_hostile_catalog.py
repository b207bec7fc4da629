"""Hostile image folders (issue 11, cases 4 and 6): FIFOs, links out of the source, hidden files,
non-UTF-8 names and contradictory CSV rows are skipped or noted with a reason, and good data survives."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_spec, xv
from tests.hostile import (
    catalog,
    gradient,
    no_traceback,
    png_bytes,
    reasons,
    two_classes,
)
from xvhpc.data.catalog import build_catalog
from xvhpc.data.decode import BadImage, DecodeOptions, decode
from xvhpc.spec.schema import DataSpec


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
