"""A trained model bundle (RUN_DIR/model): load it, preprocess new images, predict, explain."""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.dataset import to_model_input
from ..data.decode import DecodeOptions, decode
from ..data.transforms import prepare
from ..spec.schema import ModelSpec
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

    def inputs(self, source: str | Path | bytes, name: str = "") -> torch.Tensor:
        """Decode exactly as ingest does → N×3×S×S (N > 1 only for tiled models)."""
        opts = DecodeOptions(
            self.size,
            int(self.meta["channels"]),
            resize=self.meta["resize"],
            tile_grid=int(self.meta.get("tile_grid", 2)),
        )
        tiles = prepare(source, opts, name=name)[0]
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


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> Bundle:
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} holds no trained model (no meta.json); train first")
    meta = json.loads(meta_file.read_text())
    spec = ModelSpec.model_validate({**meta["spec"]["model"], "pretrained": "none"})
    model = build_model(spec, len(meta["classes"]))
    model.load_state_dict(torch.load(path / "weights.pt", map_location="cpu", weights_only=True))
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
        (width, height), Image.BILINEAR
    )
    colour = (colormaps["jet"](np.asarray(cam_img) / 255.0)[:, :, :3] * 255).astype(np.float32)
    blended = (1 - alpha) * base.astype(np.float32) + alpha * colour
    buf = io.BytesIO()
    Image.fromarray(blended.clip(0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def original_image(source: str | Path | bytes, name: str = "") -> np.ndarray:
    """The input at its own size, RGB, for overlays."""
    return decode(source, DecodeOptions(size=1 << 16, channels=3), name=name)[0]
