"""Hostile manifests, second pass (issue 23): paths a manifest lists stay inside the image folder
(finding 2); deeply nested JSON and CSV fields over the csv module's 128 KiB limit are one clear
error naming the file, not a traceback (finding 11).

Real files, real catalogs; no mocks, no timed assertions (pytest-timeout only
turns a hang into a failure)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.hostile import gradient, png_bytes
from xvhpc.data.catalog import CatalogError, build_catalog
from xvhpc.spec.schema import DataSpec
from xvhpc.tasks.detect.catalog import build_detection_catalog


def _outside_files(tmp_path: Path) -> tuple[Path, Path]:
    """An image folder ``set/`` and a folder ``outside/`` beside it holding two images, one
    linked from inside the set."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png_bytes(gradient()))
    (outside / "secret2.png").write_bytes(png_bytes(np.roll(gradient(), 5)))
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    for i in range(4):
        (root / "images" / f"in{i}.png").write_bytes(png_bytes(np.roll(gradient(), i * 3)))
    os.symlink(outside / "secret2.png", root / "images" / "link_out.png")
    return root, outside


ESCAPES = [
    "../outside/secret.png",
    "ABS",
    "../../../../../../../etc/passwd",
    "/proc/self/environ",
    "images/link_out.png",
]


def _escaping(names: list[str], outside: Path) -> list[str]:
    return [str(outside / "secret.png") if n == "ABS" else n for n in names]


def _reasons(cat) -> dict[str, str]:
    return {s["path"]: s["reason"] for s in [*cat.skipped, *cat.ignored]}


@pytest.mark.timeout(30)
def test_classification_csv_paths_outside_the_folder_are_skipped(tmp_path: Path) -> None:
    root, outside = _outside_files(tmp_path)
    rows = [f"images/in{i}.png,{'ab'[i % 2]}" for i in range(4)]
    escaping = _escaping(
        ["../outside/secret.png", "ABS", "/etc/hostname", "/proc/self/environ"], outside
    )
    rows += [f"{p},a" for p in escaping] + ["images/link_out.png,b"]
    (root / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    cat = build_catalog(root / "labels.csv", DataSpec(source=str(root / "labels.csv")))
    read = {Path(s.path).name for s in cat.samples}
    assert read == {f"in{i}.png" for i in range(4)}
    why = _reasons(cat)
    for name in [*escaping, "images/link_out.png"]:
        assert "outside the image folder" in why[name], (name, why)
        assert "data.follow_links: true" in why[name]
    followed = build_catalog(
        root / "labels.csv", DataSpec(source=str(root / "labels.csv"), follow_links=True)
    )
    assert {"secret.png", "secret2.png"} <= {Path(s.path).name for s in followed.samples}


@pytest.mark.timeout(30)
def test_coco_paths_outside_the_folder_are_skipped(tmp_path: Path) -> None:
    """Classification and detection read the same COCO file: neither reads outside it."""
    root, outside = _outside_files(tmp_path)
    names = [f"images/in{i}.png" for i in range(4)] + _escaping(ESCAPES, outside)
    images = [{"id": i, "file_name": n, "width": 40, "height": 30} for i, n in enumerate(names)]
    anns = [
        {"id": i, "image_id": i, "category_id": i % 2, "bbox": [2, 2, 10, 10]}
        for i in range(len(names))
    ]
    doc = {"images": images, "annotations": anns, "categories": [{"id": 0, "name": "a"}]}
    doc["categories"].append({"id": 1, "name": "b"})
    (root / "annotations.json").write_text(json.dumps(doc))
    spec = DataSpec(source=str(root / "annotations.json"))
    for cat in (
        build_catalog(root / "annotations.json", spec),
        build_detection_catalog(root / "annotations.json", spec),
    ):
        assert {Path(s.path).name for s in cat.samples} == {f"in{i}.png" for i in range(4)}
        why = _reasons(cat)
        for name in _escaping(ESCAPES, outside):
            assert "outside the image folder" in why[name], (name, why)


@pytest.mark.timeout(30)
def test_detection_csv_path_outside_the_folder_is_skipped(tmp_path: Path) -> None:
    root, _outside = _outside_files(tmp_path)
    rows = [f"images/in{i}.png,red,5,5,20,20" for i in range(4)]
    rows += ["../outside/private.png,red,5,5,30,30", "images/link_out.png,red,5,5,20,20"]
    (root / "boxes.csv").write_text("path,label,x0,y0,x1,y1\n" + "\n".join(rows) + "\n")
    (tmp_path / "outside" / "private.png").write_bytes(png_bytes(gradient()))
    cat = build_detection_catalog(root / "boxes.csv", DataSpec(source=str(root / "boxes.csv")))
    assert {Path(s.path).name for s in cat.samples} == {f"in{i}.png" for i in range(4)}
    why = _reasons(cat)
    assert "outside the image folder" in why["../outside/private.png"]
    assert "outside the image folder" in why["images/link_out.png"]


# ---------------------------------------------------------------------------------------------
# finding 3: no file is clobbered through a link at a lock path; a FIFO there is an error


@pytest.mark.timeout(60)
def test_deeply_nested_coco_json_is_a_clear_error(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"images": ' + "[" * 200_000 + "]" * 200_000 + "}")
    for build in (build_catalog, build_detection_catalog):
        with pytest.raises(CatalogError, match=r"deep\.json: JSON nested too deeply"):
            build(deep, DataSpec(source=str(deep)))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("detect", [False, True])
def test_csv_field_over_128_kib_is_a_clear_error(tmp_path: Path, detect: bool) -> None:
    big = tmp_path / "big.csv"
    head = "path,label,x0,y0,x1,y1" if detect else "path,label"
    big.write_text(f'{head}\n"{"x" * 200_000}.png",a{",1,1,5,5" if detect else ""}\n')
    build = build_detection_catalog if detect else build_catalog
    with pytest.raises(CatalogError, match=r"big\.csv: not a usable CSV.*field larger"):
        build(big, DataSpec(source=str(big)))
