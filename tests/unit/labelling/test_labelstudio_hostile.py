"""A Label Studio export is data from elsewhere: rectangles out of the image, not finite or
empty are refused naming the task and the result (they were passed on, and the COCO readers
then dropped them silently: a reviewed image read back as one without a box); image URLs that
leave the image folder are left out with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xvhpc.data.catalog import build_catalog
from xvhpc.data.labelstudio import coco_of_export
from xvhpc.data.sample import CatalogError
from xvhpc.spec.schema import DataSpec


def _task(image: str, result: list[dict]) -> dict:
    return {"data": {"image": image}, "annotations": [{"result": result}]}


def _rect(x: float, y: float, w: float, h: float) -> dict:
    value = {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": ["red_box"]}
    return {"type": "rectanglelabels", "original_width": 64, "original_height": 64,
            "value": value}  # fmt: skip


@pytest.mark.parametrize(
    "box",
    [
        (-50, 0, 10, 10),
        (0, 0, 500, 500),
        (float("nan"), 0, 1, 1),
        (1e308, 0, 1e308, 1),
        (0, 0, -10, 5),
        (95, 0, 10, 10),
        (10, 10, 0, 0),
    ],  # fmt: skip
)
def test_a_rectangle_outside_the_image_is_refused(tmp_path: Path, box) -> None:
    path = tmp_path / "export.json"
    tasks = [_task("a.png", [_rect(10, 10, 20, 20)]), _task("b.png", [_rect(*box)])]
    with pytest.raises(CatalogError, match=r"export.json: \[1\].annotations.result\[0\]"):
        coco_of_export(path, tasks)


def test_a_rectangle_on_the_edge_is_kept(tmp_path: Path) -> None:
    doc = coco_of_export(tmp_path / "e.json", [_task("a.png", [_rect(0, 50, 100.0000001, 50)])])
    assert doc["annotations"][0]["bbox"] == [0.0, 32.0, 64.0, 32.0]


@pytest.mark.parametrize(
    "image",
    [
        "../outside/secret.png",
        "/data/local-files/?d=..%2Foutside%2Fsecret.png",
        "/data/local-files/?d=/etc/passwd",
        "data:image/png;base64,AAAA",
    ],  # fmt: skip
)
def test_an_image_outside_the_folder_is_left_out(tmp_path: Path, image) -> None:
    from xvhpc.data.synth import make_dataset

    make_dataset(tmp_path / "d", per_class=2, size=32, seed=1)
    (tmp_path / "outside").mkdir()
    files = sorted((tmp_path / "d").rglob("*.png"))
    (tmp_path / "outside" / "secret.png").write_bytes(files[0].read_bytes())
    good = [
        _task(f.relative_to(tmp_path / "d").as_posix(),
              [{"type": "choices", "value": {"choices": [f.parent.name]}}])
        for f in (files[0], files[-1])
    ]  # fmt: skip
    path = tmp_path / "export.json"
    path.write_text(json.dumps([_task(image, good[0]["annotations"][0]["result"]), *good]))
    spec = DataSpec(source=str(path), coco={"image_dir": str(tmp_path / "d")})
    catalog = build_catalog(path, spec)
    assert sorted(s.rel for s in catalog.samples) == sorted(g["data"]["image"] for g in good)
    assert len(catalog.skipped) == 1 and "secret" not in str(catalog.samples)


def test_a_web_url_is_refused_with_the_way_to_fix_it(tmp_path: Path) -> None:
    for url in ("file:///etc/passwd", "http://example.org/x.png"):
        with pytest.raises(CatalogError, match="local-files storage"):
            coco_of_export(tmp_path / "e.json", [_task(url, [])])
