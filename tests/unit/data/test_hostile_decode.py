"""The pixel guard covers every decode (issue 11, case 5): DICOM bombs are refused from their header."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile import (
    deflated_dicom,
    dicom,
)
from xvhpc.data.decode import BadImage, DecodeOptions, decode


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
