"""Hostile exports, second pass (issue 23): a detector's Triton export is refused before anything is
written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xvhpc.util import UserError


def test_triton_export_of_a_detector_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:

    from xvhpc.serve.triton import export_triton

    model = tmp_path / "run" / "model"
    model.mkdir(parents=True)
    (model / "meta.json").write_text(json.dumps({"spec": {"name": "boxes", "task": "detect"}}))
    with pytest.raises(UserError, match="Triton export is for classifiers.*--format onnx"):
        export_triton(tmp_path / "run", tmp_path / "TR")
    assert not (tmp_path / "TR").exists()
