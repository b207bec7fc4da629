"""Builders of hostile inputs shared by the hostile tests (issue 11): images, DICOM bombs, class
folders, catalogs and their skip reasons, and the checks that an error is one clear message."""

from __future__ import annotations

import io
import subprocess
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from xvhpc.data.catalog import build_catalog
from xvhpc.spec import SpecError
from xvhpc.spec.schema import DataSpec


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
