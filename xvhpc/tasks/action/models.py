"""Clip classifiers by name: torchvision's video models (R3D-18, MC3-18, R(2+1)D-18, S3D,
MViT-v1-B; Kinetics-400 weights from the offline cache) and ``c3d_tiny``, a small 3-D conv net
that trains on a CPU in seconds for tests and the demo.

Every model maps a normalised float clip N×3×T×H×W (``clip_input``) to logits N×K over the
data's classes (class 0: background)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ...models.weights import cached_file, load_cached_state_dict
from ...spec.schema import ModelSpec

# torchvision's Kinetics-400 clip normalisation (its video models' transforms)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)

WEIGHTS = {
    "r3d_18": "video.R3D_18_Weights.KINETICS400_V1",
    "mc3_18": "video.MC3_18_Weights.KINETICS400_V1",
    "r2plus1d_18": "video.R2Plus1D_18_Weights.KINETICS400_V1",
    "s3d": "video.S3D_Weights.KINETICS400_V1",
    "mvit_v1_b": "video.MViT_V1_B_Weights.KINETICS400_V1",
}
# each arch's classification head: the layer that maps to Kinetics' 400 classes (not loaded)
HEADS = {"r3d_18": "fc.", "mc3_18": "fc.", "r2plus1d_18": "fc.", "s3d": "classifier.1.",
         "mvit_v1_b": "head.1."}  # fmt: skip
# archs whose shapes are fixed by their design: the clip is resampled to (frames, side) inside
FIXED_INPUT = {"s3d": (16, 224), "mvit_v1_b": (16, 224)}


def clip_input(clips: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 N×T×H×W×C (C 1 or 3) → float N×3×T×H×W, Kinetics-normalised."""
    x = clips.to(device, non_blocking=True).float().div_(255.0)
    x = x.permute(0, 4, 1, 2, 3)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1, -1)
    mean = torch.tensor(KINETICS_MEAN, device=x.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(KINETICS_STD, device=x.device).view(1, 3, 1, 1, 1)
    return ((x - mean) / std).contiguous()


class C3DTiny(nn.Module):
    """Three 3-D conv blocks (16/32/64 channels, GroupNorm), global pooling, a linear head:
    ~0.1 M parameters; any clip length and size."""

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for n, out in enumerate((width, width * 2, width * 4)):
            layers += [
                nn.Conv3d(channels, out, 3, padding=1),
                nn.GroupNorm(8, out),
                nn.ReLU(inplace=True),
                nn.MaxPool3d((1, 2, 2) if n == 0 else 2, ceil_mode=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3, 4)))


class Resampled(nn.Module):
    """A video model whose input shape is fixed (S3D, MViT): the clip resampled to it."""

    def __init__(self, net: nn.Module, frames: int, side: int):
        super().__init__()
        self.net, self.frames, self.side = net, frames, side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.frames, self.side, self.side), mode="trilinear")
        return self.net(x)


def _kinetics(model: nn.Module, arch: str) -> None:
    """Load the cached Kinetics-400 weights, all but the 400-class head (its shape differs
    unless the data has 400 classes); a file that lacks any other tensor, or holds one of
    another shape, is not torchvision's ``arch`` and is refused rather than loaded in part."""
    own = model.state_dict()
    state = load_cached_state_dict(arch)
    head = {k for k in own if k.startswith(HEADS[arch])}
    wrong = [k for k in own if k not in head and (k not in state or state[k].shape != own[k].shape)]
    if wrong:
        raise ValueError(
            f"the cached Kinetics weights of {arch} ({cached_file(arch)}) lack or misshape "
            f"{len(wrong)} of its tensors ({', '.join(wrong[:3])}): not torchvision's {arch}. "
            f"HINT: delete the file and run  xvhpc weights fetch {arch}  on a login node"
        )
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(fits, strict=False)


def build_clip_model(spec: ModelSpec, num_classes: int, image_size: int) -> nn.Module:
    """The clip classifier of a spec for ``num_classes`` classes (background included)."""
    if spec.arch == "c3d_tiny":
        if spec.pretrained not in ("none", None):
            raise ValueError("c3d_tiny has no pretrained weights (model.pretrained: none)")
        return C3DTiny(num_classes)
    import torchvision.models.video as tvv

    net = getattr(tvv, spec.arch)(weights=None, num_classes=num_classes)
    if spec.pretrained == "kinetics":
        _kinetics(net, spec.arch)
    if spec.arch in FIXED_INPUT:
        return Resampled(net, *FIXED_INPUT[spec.arch])
    return net
