"""A trained model bundle (RUN_DIR/model): save, publish and load it, preprocess new images,
predict, explain.

Train writes a bundle and evaluate publishes the best one; both call this module, so neither
step imports the other. The bundle's ``preprocessing`` is the manifest's, carried unchanged:
new images are decoded exactly as ingest decoded the training images.
"""

from __future__ import annotations

import io
import json
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from .. import rundir
from ..data.dataset import IMAGENET_MEAN, IMAGENET_STD, to_model_input
from ..data.decode import DecodeOptions, decode
from ..data.manifest import decode_options
from ..data.transforms import prepare
from ..spec import ExperimentSpec
from ..spec.schema import ModelSpec
from ..util import replace_dir, write_json_atomic
from .safeload import UnloadableFile, load_tensors
from .zoo import build_model, target_layer


@dataclass
class Bundle:
    model: torch.nn.Module
    meta: dict
    device: torch.device
    lock: threading.Lock = field(
        default_factory=threading.Lock
    )  # Grad-CAM hooks are not re-entrant

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @property
    def size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def decode_options(self) -> DecodeOptions:
        """Ingest's decode settings (a bundle saved before they were recorded whole: its
        four keys, the rest at their defaults, as such bundles were always read)."""
        pre = self.meta.get("preprocessing")
        if pre is not None:
            return decode_options(pre)
        return DecodeOptions(
            self.size,
            int(self.meta["channels"]),
            resize=self.meta["resize"],
            tile_grid=int(self.meta.get("tile_grid", 2)),
        )

    def inputs(self, source: str | Path | bytes, name: str = "") -> torch.Tensor:
        """Decode exactly as ingest does → N×3×S×S (N > 1 only for tiled models)."""
        tiles = prepare(source, self.decode_options, name=name)[0]
        return to_model_input(torch.from_numpy(np.stack(tiles)), self.device)

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> np.ndarray:
        """Class probabilities for a batch (tiles of one image are averaged by the caller)."""
        return torch.softmax(self.model(x.to(self.device)).float(), dim=1).cpu().numpy()

    def heatmap(self, x: torch.Tensor, class_index: int) -> np.ndarray:
        """Grad-CAM (pytorch-grad-cam) on the last conv block → S×S map in [0, 1]."""
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        layer = target_layer(self.model, self.meta["arch"])
        with (
            self.lock,
            torch.enable_grad(),
            GradCAM(model=self.model, target_layers=[layer]) as cam,
        ):
            maps = cam(
                input_tensor=x[:1].to(self.device), targets=[ClassifierOutputTarget(class_index)]
            )
        return np.nan_to_num(maps[0]).astype(np.float32)


class _HasRoot(Protocol):
    root: Path


def save_bundle(
    out: Path,
    model: torch.nn.Module,
    spec: ExperimentSpec,
    classes: list[str],
    preprocessing: dict[str, Any],
    iteration: int,
    metrics: dict,
) -> None:
    """Write the bundle evaluate/serve/export read (weights + meta), replaced atomically.

    ``preprocessing`` is the manifest's dict, stored as is; its first four keys are also kept
    at the top level, where readers of older bundles look for them."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(model.state_dict(), tmp / rundir.BUNDLE_WEIGHTS)
    meta = {
        "task": spec.task,  # what serve, export and predict load it as (rundir.records.task_of)
        "arch": spec.model.arch,
        "import": spec.model.import_,
        "classes": classes,
        "preprocessing": preprocessing,
        **{k: preprocessing[k] for k in ("image_size", "channels", "resize", "tile_grid")},
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "iteration": iteration,
        "validation": metrics,
        "threshold": spec.deploy.threshold,
        "spec": spec.model_dump(mode="json", by_alias=True),
    }
    write_json_atomic(tmp / rundir.BUNDLE_META, meta)
    replace_dir(tmp, out)


def publish_model(run: Path | _HasRoot, point: int) -> None:
    """Copy a point's bundle to RUN_DIR/model (what serve and export read).

    ``run`` is the run dir's path, or anything with a ``root`` path (a step's ``RunDir``)."""
    layout = rundir.Layout(run if isinstance(run, Path) else run.root)
    tmp = layout.model.with_name(layout.model.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(layout.point_model(point), tmp)
    replace_dir(tmp, layout.model)


def preprocessing(meta: dict) -> dict:
    """What an export's sidecar says an image goes through before the model (decode, resize,
    scale): every task's export writes it, so it sits with the bundle, below tasks and serve."""
    return {
        "decode": "grayscale (replicated to 3 channels)" if meta["channels"] == 1 else "RGB",
        "resize": meta["resize"],
        "image_size": int(meta["image_size"]),
        "scale": "1/255",
    }


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> Bundle:
    """The bundle at ``path``. Its weights load with ``weights_only``: a file that does not load
    (corrupt, or a pickle payload) is an ``UnloadableFile`` naming it, and nothing runs."""
    path = Path(path)
    meta_file = path / rundir.BUNDLE_META
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} holds no trained model (no meta.json); train first")
    try:
        meta = json.loads(meta_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnloadableFile(f"{meta_file}: not valid JSON ({exc})") from None
    spec = ModelSpec.model_validate({**meta["spec"]["model"], "pretrained": "none"})
    model = build_model(spec, len(meta["classes"]), int(meta["image_size"]))
    weights = path / rundir.BUNDLE_WEIGHTS
    state = load_tensors(weights)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise UnloadableFile(
            f"{weights}: does not match the {meta['arch']} model of {meta_file}: {exc}"
        ) from None
    model.eval().to(device)
    return Bundle(model, meta, torch.device(device))


def overlay_png(original: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> bytes:
    """Heatmap over the original image, at the original image's size, as PNG bytes."""
    from matplotlib import colormaps

    height, width = original.shape[:2]
    base = (
        original
        if original.ndim == 3 and original.shape[2] == 3
        else np.repeat(original.reshape(height, width, 1)[:, :, :1], 3, axis=2)
    )
    cam_img = Image.fromarray((np.clip(cam, 0, 1) * 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    colour = (colormaps["jet"](np.asarray(cam_img) / 255.0)[:, :, :3] * 255).astype(np.float32)
    blended = (1 - alpha) * base.astype(np.float32) + alpha * colour
    buf = io.BytesIO()
    Image.fromarray(blended.clip(0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def original_image(source: str | Path | bytes, name: str = "") -> np.ndarray:
    """The input at its own size, RGB, for overlays."""
    return decode(source, DecodeOptions(size=1 << 16, channels=3), name=name)[0]
