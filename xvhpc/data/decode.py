"""Decode JPEG/PNG/BMP/TIFF/DICOM into uint8 arrays, cheaply and defensively.

One decode path serves ingest, evaluate and serve. Every failure is a ``BadImage`` with a
reason a person can act on; nothing else escapes for bad input.
"""

from __future__ import annotations

import io
import os
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..util import file_kind
from .frames import frame_ref, read_frame
from .png import fast_decode as fast_png
from .video import VIDEO_SUFFIXES, BadVideo, Frames, VideoOptions, read_video

Image.MAX_IMAGE_PIXELS = None  # xvhpc checks the pixel count itself, from the header
ImageFile.LOAD_TRUNCATED_IMAGES = False


class BadImage(Exception):
    """An input that cannot become a training image; ``str()`` is the reason."""


DEFAULT_DECODE_BYTES = 4 << 30  # ingest and predict; serve sets a lower one (serve/app.py)
_BLOCK = 1 << 18  # pixels converted at a time: float64 rescales never span the whole image
_PIL_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "RGB": 3, "YCbCr": 3, "RGBA": 4}
_PIL_BYTES |= {"CMYK": 4, "I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4, "F": 4}


def decode_cost(pixels: int, stored: int, wide: bool, channels: int, raw: int = 0) -> int:
    """Bytes a decode holds at its peak: the decoder's buffer and numpy's copy of it
    (2 × ``stored`` bytes a pixel), a float32 plane when the values are wider than 8 bits
    (to_uint8 converts block by block into it), the uint8 result and its ``channels`` copy,
    plus ``raw`` bytes the format holds besides (DICOM pixel data, inflated), plus the
    float64 temporaries of one block (a DICOM rescale makes several)."""
    blocks = _BLOCK * 64 if wide else 0
    return pixels * (2 * stored + (4 if wide else 0) + 1 + channels) + raw + blocks


def check_budget(cost: int, shown: str, opts: DecodeOptions) -> None:
    """Refuse, from the header alone, a decode that would hold more than the byte budget:
    a < 1 MB upload can otherwise take several GB (issue 23, finding 1)."""
    if cost > opts.max_decode_bytes:
        raise BadImage(
            f"memory guard: decoding {shown} needs about {cost:,} bytes > the decode budget "
            f"{opts.max_decode_bytes:,} bytes (data.max_decode_bytes; serve allows less)"
        )


@dataclass(frozen=True)
class DecodeOptions:
    size: int = 224  # the side the image will be resized to (reduced decode aims at it)
    channels: int = 3
    max_pixels: int = 200_000_000
    # bytes one decode may hold at its peak (pixels × the widest intermediate), from the header
    max_decode_bytes: int = DEFAULT_DECODE_BYTES
    dicom_frames: str = "first"  # or "all"
    resize: str = "squash"  # how the frame will be resized: decides how far a JPEG may be reduced
    tile_grid: int = 2
    expand_gray: bool = True  # False: a grayscale source stays 1 channel (expanded after resizing)
    # True (detection): the stored pixels at full size — no reduced JPEG decode, no EXIF
    # rotation — the frame box annotations (COCO, CSV) are written in
    stored_pixels: bool = False
    video: VideoOptions = VideoOptions()  # frames of a video file (data.video)

    def draft_box(self, width: int, height: int) -> tuple[int, int]:
        """The smallest decoded size the resize still needs at full quality."""
        if self.resize == "letterbox":  # only the long side must reach the target
            scale = self.size / max(width, height)
            return max(1, round(width * scale)), max(1, round(height * scale))
        if self.resize == "tile":  # every tile must reach the target
            return self.size * self.tile_grid, self.size * self.tile_grid
        return self.size, self.size


def for_boxes(opts: DecodeOptions) -> DecodeOptions:
    """Detection: box annotations are in the file's stored pixels, so decode those at full
    size (a reduced JPEG decode or an EXIF rotation would move every box); gray stays one
    channel until the model."""
    return replace(opts, expand_gray=False, stored_pixels=True)


def sniff(head: bytes) -> str | None:
    """Format from magic bytes: jpeg, png, bmp, tiff, gif, dicom, or None.

    DICOM first: its 128-byte preamble may itself look like a TIFF header (dual-format files).
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def max_file_bytes(max_pixels: int) -> int:
    """The largest file worth reading for ``max_pixels``: 8 bytes a pixel (16-bit RGBA,
    uncompressed) and 64 MiB of headers; a larger file is refused before it is read."""
    return max_pixels * 8 + (64 << 20)


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    kind = file_kind(mode)
    return "not a regular file" if kind == "not a regular file" else f"not a regular file ({kind})"


def _read(source: str | os.PathLike[str] | bytes, limit: int | None = None) -> bytes:
    """The bytes of a regular file (links followed) of at most ``limit`` bytes. A FIFO, a
    device or a socket is refused before it is opened (reading one could block forever or
    never end), and checked again on the open file."""
    if isinstance(source, bytes):
        return source
    try:
        why = _not_regular(os.stat(source).st_mode)
        if why:
            raise BadImage(why)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
        fd = os.open(source, flags | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            why = _not_regular(info.st_mode)
            if why:
                raise BadImage(why)
            if limit is not None and info.st_size > limit:
                raise BadImage(
                    f"file of {info.st_size:,} bytes, more than any image within "
                    f"data.max_image_pixels needs ({limit:,})"
                )
            data = fh.read() if limit is None else fh.read(limit + 1)
    except PermissionError:
        raise BadImage("unreadable: permission denied") from None
    except IsADirectoryError:
        raise BadImage("is a directory") from None
    except OSError as exc:
        raise BadImage(f"unreadable: {exc.strerror or exc}") from None
    if limit is not None and len(data) > limit:
        raise BadImage(f"file grew past {limit:,} bytes while it was read")
    return data


Transform = Callable[[np.ndarray], np.ndarray]


def _as_float32(array: np.ndarray, transform: Transform | None) -> np.ndarray:
    """``transform(array)`` as float32, converted ``_BLOCK`` pixels at a time, so a float64
    rescale (DICOM's modality LUT) never exists for the whole image at once."""
    values = np.empty(array.shape, dtype=np.float32)
    step = max(1, _BLOCK // max(1, array[:1].size))
    for start in range(0, len(array), step):
        block = array[start : start + step]
        values[start : start + step] = block if transform is None else transform(block)
    return values


def to_uint8(
    array: np.ndarray, robust: bool = True, transform: Transform | None = None
) -> np.ndarray:
    """Scale any numeric array (after an elementwise ``transform``) to uint8 (percentile
    0.5–99.5 when ``robust``). The same values as one whole-array float32 conversion, in one
    float32 plane: a large image's percentiles partition that plane in place, and the values
    are then converted again block by block."""
    if array.dtype == np.uint8 and transform is None:
        return array
    if transform is not None and transform(array[:1]).dtype == np.uint8:
        return transform(array)  # 8-bit values left as they are (as without a transform)
    values = _as_float32(array, transform)
    small = values.size <= 4 * _BLOCK
    if robust:
        low, high = np.percentile(values, [0.5, 99.5], overwrite_input=not small)
        if not small:
            del values  # partitioned: free it before the result is allocated
    else:
        low, high = float(values.min()), float(values.max())
    if high <= low:
        high = low + 1.0
    if small:
        return np.clip((values - low) * (255.0 / (high - low)), 0, 255).astype(np.uint8)
    out = np.empty(array.shape, dtype=np.uint8)
    step = max(1, _BLOCK // max(1, array[:1].size))
    for start in range(0, len(array), step):
        if robust:  # the plane was partitioned: convert this block again
            block = _as_float32(array[start : start + step], transform)
        else:
            block = values[start : start + step]
        out[start : start + step] = np.clip((block - low) * (255.0 / (high - low)), 0, 255)
    return out


def _gray_as_rgb(array: np.ndarray) -> bool:
    """R = G = B everywhere (a gray X-ray saved as RGB): a sparse sample of rows first, so a
    colour image is rejected cheaply; a third of the cost of the float conversion otherwise."""
    red = array[:, :, 0]
    return (
        np.array_equal(red[::97], array[::97, :, 1])
        and np.array_equal(red, array[:, :, 1])
        and np.array_equal(red, array[:, :, 2])
    )


def to_channels(array: np.ndarray, channels: int, expand_gray: bool = True) -> np.ndarray:
    """HxW or HxWxC → HxWx``channels`` (HxWx1 kept for a gray source unless ``expand_gray``)."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 4:  # drop alpha
        array = array[:, :, :3]
    if array.shape[2] == 2:  # LA
        array = array[:, :, :1]
    if channels == 1 and array.shape[2] == 3 and _gray_as_rgb(array):
        array = array[:, :, :1]  # what the weighted sum gives for R = G = B (weights sum to 1)
    elif channels == 1 and array.shape[2] == 3:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        array = (
            (array.astype(np.float32) @ weights).round().clip(0, 255).astype(np.uint8)[:, :, None]
        )
    elif channels == 3 and array.shape[2] == 1 and expand_gray:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)


def _pil_budget(image: Image.Image, opts: DecodeOptions) -> None:
    """The byte budget for the image PIL will decode (its size after a JPEG draft)."""
    width, height = image.size
    stored = _PIL_BYTES.get(image.mode, 4)
    wide = image.mode.startswith("I") or image.mode == "F"
    cost = decode_cost(width * height, stored, wide, opts.channels)
    check_budget(cost, f"{width}x{height} {image.mode}", opts)


def _decode_pil(data: bytes, kind: str, opts: DecodeOptions) -> list[np.ndarray]:
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > opts.max_pixels:
            raise BadImage(
                f"decompression bomb guard: {width}x{height} = {width * height:,} pixels "
                f"> data.max_image_pixels {opts.max_pixels:,}"
            )
        if kind == "jpeg" and not opts.stored_pixels:
            # reduced-scale DCT decode: never a full-size decode to make a small image
            image.draft("L" if opts.channels == 1 else "RGB", opts.draft_box(width, height))
        _pil_budget(image, opts)
        if kind == "png":  # libspng where it gives PIL's pixels exactly (data/png.py)
            pixels = fast_png(data, opts.max_pixels)
            if pixels is not None:
                return [to_channels(pixels, opts.channels, opts.expand_gray)]
        image.load()
        if not opts.stored_pixels:
            ImageOps.exif_transpose(image, in_place=True)  # no full-size copy when upright
    except BadImage:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc)
        if "truncated" in text.lower() or isinstance(exc, EOFError):
            raise BadImage(f"truncated {kind.upper()}: {text}") from None
        raise BadImage(f"corrupt {kind.upper()}: {text or type(exc).__name__}") from None
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        wide = np.asarray(image)
        image.close()  # numpy holds its own copy: free PIL's before the float plane
        array = to_uint8(wide, robust=False)
        del wide
    elif mode in ("L", "RGB"):
        array = np.asarray(image)
    elif mode in ("LA", "RGBA", "P", "PA", "CMYK", "YCbCr", "1"):
        array = np.asarray(image.convert("L" if mode in ("LA", "1") else "RGB"))
    else:
        array = np.asarray(image.convert("RGB"))
    image.close()
    return [to_channels(array, opts.channels, opts.expand_gray)]


_DICOM_HINT = {
    "jpeg-ls": "pip install pylibjpeg pylibjpeg-libjpeg (or python-gdcm)",
    "jpeg 2000": "pip install pylibjpeg pylibjpeg-openjpeg (or python-gdcm)",
    "jpeg": "pip install pylibjpeg pylibjpeg-libjpeg (or python-gdcm)",
    "rle": "pip install pylibjpeg pylibjpeg-rle",
    "deflate": "pip install python-gdcm",
}


_DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: the whole dataset zipped
_HEADER_BYTES = 4 << 20  # inflated bytes searched for a deflated file's header
_LONG_VRS = (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT")


def _deflated_body(data: bytes) -> int | None:
    """Where the zipped dataset of a deflated DICOM file starts (after its file meta
    group, which is never zipped); None for any other transfer syntax."""
    if data[128:132] != b"DICM":
        return None
    pos, syntax = 132, b""
    while pos + 8 <= len(data) and data[pos : pos + 2] == b"\x02\x00":
        element, vr = data[pos + 2 : pos + 4], data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            length, start = int.from_bytes(data[pos + 8 : pos + 12], "little"), pos + 12
        else:
            length, start = int.from_bytes(data[pos + 6 : pos + 8], "little"), pos + 8
        if element == b"\x10\x00":  # (0002,0010) TransferSyntaxUID
            syntax = data[start : start + length].rstrip(b"\x00 ")
        pos = start + length
    return pos if syntax == _DEFLATED.encode() else None


def _dicom_guard(
    header, opts: DecodeOptions, all_frames: bool, deflated: bool = False
) -> tuple[int, int]:
    """Refuse, from the header alone, a file whose decoded frames exceed max_pixels: frames ×
    rows × columns of what will be decoded. Returns (frames, bytes the pixel data needs)."""
    try:
        rows, cols = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
        frames = int(header.get("NumberOfFrames", 1) or 1)
        samples = int(header.get("SamplesPerPixel", 1) or 1)
        bits = int(header.get("BitsAllocated", 16) or 16)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadImage(f"corrupt DICOM header: {exc}") from None
    if min(rows, cols, frames, samples, bits) < 0:
        raise BadImage("corrupt DICOM header: negative size")
    decoded = frames if all_frames else min(frames, 1)
    pixels = decoded * rows * cols
    if pixels > opts.max_pixels:
        shown = f"{decoded} frames of {cols}x{rows}" if decoded > 1 else f"{cols}x{rows}"
        raise BadImage(
            f"decompression bomb guard: {shown} = {pixels:,} pixels > data.max_image_pixels "
            f"{opts.max_pixels:,}"
            + (
                " (a deflated file is inflated whole, every frame)"
                if deflated and decoded > 1
                else ""
            )
        )
    needed = frames * rows * cols * samples * max(1, (bits + 7) // 8)
    stored = samples * max(1, (bits + 7) // 8)
    # the file's pixel bytes (or the inflated stream), pydicom's copy of them and its read
    # buffer, then per decoded frame the pixel array, the float32 plane and the uint8 result
    cost = decode_cost(pixels, stored, True, opts.channels, raw=3 * needed)
    check_budget(cost, f"DICOM {shown_size(decoded, rows, cols)}", opts)
    return frames, needed


def shown_size(frames: int, rows: int, cols: int) -> str:
    return f"{frames} frames of {cols}x{rows}" if frames > 1 else f"{cols}x{rows}"


def _check_deflated(data: bytes, body: int, opts: DecodeOptions) -> None:
    """A deflated file is inflated whole by pydicom: read its header from the first inflated
    bytes, apply the guard to every frame, and make sure the stream inflates to no more than
    its header declares, before pydicom inflates it."""
    from pydicom.filereader import read_dataset

    try:
        head = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data[body:], _HEADER_BYTES)
        header = read_dataset(
            io.BytesIO(head),
            is_implicit_VR=False,
            is_little_endian=True,
            stop_when=lambda tag, vr, length: tag >= 0x7FE00000,
        )
    except (zlib.error, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise BadImage(f"corrupt DICOM (deflated): {exc}") from None
    if "Rows" not in header or "Columns" not in header:
        raise BadImage(
            f"corrupt DICOM (deflated): no Rows/Columns in the first {_HEADER_BYTES:,} bytes"
        )
    _frames, needed = _dicom_guard(header, opts, all_frames=True, deflated=True)
    limit = needed + _HEADER_BYTES
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflater.decompress(data[body:], limit)
    except zlib.error as exc:
        raise BadImage(f"corrupt DICOM (deflated): {exc}") from None
    if inflater.unconsumed_tail:
        raise BadImage(
            f"decompression bomb guard: the deflated dataset inflates past {limit:,} bytes, more "
            "than its header declares"
        )


def _decode_dicom(data: bytes, opts: DecodeOptions, force: bool) -> list[np.ndarray]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, convert_color_space

    errors = (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError)
    first_only = opts.dicom_frames == "first"
    body = _deflated_body(data)
    try:
        if body is not None:
            _check_deflated(data, body, opts)
        else:  # the header alone, then the guard, before any pixel is decoded
            header = pydicom.dcmread(io.BytesIO(data), force=force, stop_before_pixels=True)
            _dicom_guard(header, opts, all_frames=not first_only)
        ds = pydicom.dcmread(io.BytesIO(data), force=force)
    except errors as exc:
        raise BadImage(f"corrupt DICOM: {exc}") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise BadImage("DICOM without pixel data")
    frames_count, _ = _dicom_guard(ds, opts, all_frames=not first_only)
    one_frame = first_only and frames_count > 1
    try:
        if one_frame:  # decode the first frame only, not all of them
            ds.pixel_array_options(index=0)
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for missing decoders
        uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(uid, "name", str(uid or "unknown"))
        text = f"{exc}"
        lowered = f"{name} {text}".lower()
        if any(
            w in lowered
            for w in (
                "decoder",
                "plugin",
                "handler",
                "not supported",
                "unable to decode",
                "no pixel data handler",
                "install",
            )
        ):
            hint = next(
                (v for k, v in _DICOM_HINT.items() if k in lowered),
                "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg python-gdcm",
            )
            raise BadImage(f"DICOM transfer syntax {name} needs an extra decoder: {hint}") from None
        raise BadImage(
            f"DICOM pixel data unreadable ({name}): {text.splitlines()[0] if text else type(exc).__name__}"
        ) from None
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = pixels if frames_count > 1 and not one_frame else pixels[None]
    if first_only:
        frames = frames[:1]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    out = []

    def rescale(block: np.ndarray) -> np.ndarray:
        """Modality then VOI LUT: elementwise, so to_uint8 applies it block by block."""
        values = apply_modality_lut(block, ds)
        try:
            values = apply_voi_lut(values, ds, prefer_lut=True)
        except Exception:  # a broken VOI LUT must not lose the image
            pass
        return np.asarray(values)

    for frame in frames:
        if samples == 1:
            image = to_uint8(frame, robust=True, transform=rescale)
            if photometric == "MONOCHROME1":
                image = 255 - image
        else:
            rgb = frame
            if photometric.startswith("YBR"):
                try:
                    rgb = convert_color_space(frame, photometric, "RGB")
                except Exception:
                    rgb = frame
            image = to_uint8(np.asarray(rgb), robust=False)
        out.append(to_channels(image, opts.channels, opts.expand_gray))
    return out


def decode(
    source: str | os.PathLike[str] | bytes, opts: DecodeOptions, name: str = ""
) -> list[np.ndarray]:
    """Decode one file (path or bytes) into one or more HxWxC uint8 frames (a video: its
    sampled frames, streamed from the file, with their times: ``video.Frames``)."""
    suffix = Path(name or (str(source) if not isinstance(source, bytes) else "")).suffix.lower()
    if suffix in VIDEO_SUFFIXES or frame_ref(name):  # a video, or one frame of it
        return _decode_video(source, opts, name or str(source))
    data = _read(source, max_file_bytes(opts.max_pixels))
    if not data:
        raise BadImage("zero-byte file")
    kind = sniff(data[:132])
    if kind == "dicom":
        return _decode_dicom(data, opts, force=False)
    if kind is None and suffix in (".dcm", ".dicom"):
        return _decode_dicom(data, opts, force=True)  # DICOM without the 128-byte preamble
    if kind is None:
        return _decode_unknown(suffix)
    return _decode_pil(data, kind, opts)


def _decode_video(
    source: str | os.PathLike[str] | bytes, opts: DecodeOptions, name: str
) -> list[np.ndarray]:
    """A video's kept frames (``data.video``), streamed and scaled as they are decoded; or,
    for a name that names one frame (``clip.mp4#t=1.5``), that frame as an image."""
    ref = frame_ref(name)
    draft = None if opts.stored_pixels else opts.draft_box
    if ref is not None and isinstance(source, bytes):  # not every frame, nor the first one
        raise BadImage(
            "a named frame (#t=, #frame=) is read from a video file, not from uploaded bytes; "
            "upload the frame as an image, or the whole video under its own name"
        )
    try:
        if ref is not None and not isinstance(source, bytes):
            frame, _ = read_frame(source, ref, opts.video, opts.max_pixels,
                                  opts.max_decode_bytes, draft, gray=opts.channels == 1)  # fmt: skip
            return [to_channels(frame, opts.channels, opts.expand_gray)]
        frames = read_video(source, opts.video, opts.max_pixels, opts.max_decode_bytes, draft,
                            gray=opts.channels == 1, name=name)  # fmt: skip
    except BadVideo as exc:
        raise BadImage(str(exc)) from None
    shaped = [to_channels(f, opts.channels, opts.expand_gray) for f in frames]
    return Frames(shaped, frames.times, frames.size)


def _decode_unknown(suffix: str) -> list[np.ndarray]:
    if suffix in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"):
        raise BadImage(f"not a {suffix[1:].upper()}: content does not match the extension")
    raise BadImage(f"unsupported or non-image file{f' ({suffix})' if suffix else ''}")
