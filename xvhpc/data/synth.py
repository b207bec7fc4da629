"""A synthetic chest-X-ray-like dataset a small model can learn: JPEG, PNG and DICOM.

Each class draws a distinct pattern inside two lung fields: normal (clear), covid19
(bilateral diffuse blobs), bacterial (one dense lobar patch), viral (streaky lines).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("bacterial", "covid19", "normal", "viral")


def patient_field(size: int, rng: np.random.Generator, strength: float = 40.0) -> np.ndarray:
    """A smooth brightness field of its own for each image (exposure, soft tissue, position).

    Without it every image shares one silhouette, so their perceptual hashes (the 9×8 dHash of
    the leak report) differ by a few bits and a clean demo reported hundreds of near-duplicate
    "leaks". The field is low-frequency, so the class patterns stay what a model learns.
    """
    coarse = rng.normal(0.0, strength, (4, 5)).astype(np.float32)
    return np.asarray(
        Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    )


def xray(label: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One grayscale image (size×size uint8): a patient of its own (position, build, exposure)
    with the class's pattern in the lungs."""
    img = Image.new("L", (size, size), 20)
    d = ImageDraw.Draw(img)
    s = size
    dx, dy = rng.uniform(-0.06, 0.06, 2) * s  # where the patient stands
    w = rng.uniform(0.9, 1.1)  # build
    d.ellipse([0.05 * s + dx, dy, 0.95 * s + dx, 1.1 * s + dy], fill=int(rng.uniform(55, 85)))
    half = 0.32 * s * w / 2
    lungs = [
        (0.31 * s + dx - half, 0.15 * s + dy, 0.31 * s + dx + half, 0.85 * s + dy),
        (0.69 * s + dx - half, 0.15 * s + dy, 0.69 * s + dx + half, 0.85 * s + dy),
    ]
    for box in lungs:
        d.ellipse(box, fill=30)
    d.rectangle([0.47 * s + dx, 0.1 * s + dy, 0.53 * s + dx, 0.9 * s + dy], fill=150)  # spine
    if label == "covid19":
        for box in lungs:
            for _ in range(6):
                x = rng.uniform(box[0], box[2])
                y = rng.uniform(box[1] + 0.2 * s, box[3])
                r = rng.uniform(0.04, 0.08) * s
                d.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.uniform(90, 130)))
    elif label == "bacterial":
        box = lungs[int(rng.integers(2))]
        y = rng.uniform(box[1] + 0.3 * s, box[3] - 0.15 * s)
        d.ellipse([box[0] + 0.02 * s, y - 0.12 * s, box[2] - 0.02 * s, y + 0.12 * s], fill=190)
    elif label == "viral":
        for box in lungs:
            for _ in range(5):
                x0 = rng.uniform(box[0], box[2])
                d.line(
                    [x0, box[1] + 0.1 * s, x0 + rng.uniform(-0.1, 0.1) * s, box[3] - 0.1 * s],
                    fill=140,
                    width=max(1, s // 64),
                )
    img = img.filter(ImageFilter.GaussianBlur(s / 128))
    arr = np.asarray(img, dtype=np.float32) + patient_field(s, rng) + rng.normal(0, 6, (s, s))
    return np.clip(arr, 0, 255).astype(np.uint8)


def write_dicom(path: Path, pixels: np.ndarray) -> None:
    """A minimal valid MONOCHROME2 DICOM (explicit VR little endian)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientID = path.stem
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleSlope = 1
    ds.RescaleIntercept = 0
    ds.PixelData = (pixels.astype(np.uint16) * 16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def encode_video(path: Path, images: Iterable[np.ndarray], fps: int) -> None:
    """An MP4 (MPEG-4 Part 2 at a high bit rate, which every FFmpeg decodes) of RGB frames:
    the demo videos of every task. PyAV is imported here only: demo images never need it."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.pix_fmt, stream.bit_rate = "yuv420p", 4_000_000
        for n, image in enumerate(images):
            if image.ndim == 2:
                image = np.repeat(image[:, :, None], 3, axis=2)
            if n == 0:  # every frame has the first one's size
                stream.width, stream.height = image.shape[1], image.shape[0]
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def pan(image: np.ndarray, dx: int, dy: int, fill: int = 0) -> np.ndarray:
    """``image`` moved right by ``dx`` and down by ``dy`` pixels, the uncovered edge ``fill``:
    a camera pan, so demo videos move while their labels move by the same offset."""
    out = np.full_like(image, fill)
    height, width = image.shape[:2]
    src_y, dst_y = slice(max(0, -dy), height - max(0, dy)), slice(max(0, dy), height + min(0, dy))
    src_x, dst_x = slice(max(0, -dx), width - max(0, dx)), slice(max(0, dx), width + min(0, dx))
    out[dst_y, dst_x] = image[src_y, src_x]
    return out


def make_dataset(out: str | Path, per_class: int = 40, size: int = 256, seed: int = 0) -> Path:
    """Write ``per_class`` images per class under ``out/<class>/``; every 5th is PNG, every 7th DICOM."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    for label in CLASSES:
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = xray(label, size, rng)
            stem = folder / f"{label}-{i:04d}"
            if i % 7 == 3:
                write_dicom(stem.with_suffix(".dcm"), pixels)
            elif i % 5 == 1:
                Image.fromarray(pixels).save(stem.with_suffix(".png"))
            else:
                Image.fromarray(pixels).save(stem.with_suffix(".jpg"), quality=90)
    return out


def main(args: argparse.Namespace) -> int:
    if getattr(args, "video", False):
        print(
            "demo-data --video writes labelled frames for --task detect or segment; for "
            "classification, put videos in class folders (data.video picks their frames)"
        )
        return 2
    path = make_dataset(args.out, args.per_class, args.size or 256, args.seed)
    print(f"wrote {args.per_class * len(CLASSES)} images in {len(CLASSES)} classes to {path}")
    return 0
