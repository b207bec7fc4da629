"""Hostile manifests, second pass (issue 23, finding 11): deeply nested JSON and CSV fields
over the csv module's 128 KiB limit are one clear error naming the file, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from xvhpc.data.catalog import CatalogError, build_catalog
from xvhpc.detect.catalog import build_detection_catalog
from xvhpc.spec.schema import DataSpec


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
