"""What torchvision's detectors share across tasks (detect's boxes, segment's instance masks):
the list-of-images input they take and a tiny backbone that trains on a CPU in seconds.

Tasks never import each other, so the pieces both ``tasks/detect`` and ``tasks/segment`` build
their torchvision detectors from live here."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class TinyBackbone(nn.Module):
    """Stride-2 convolutions (GroupNorm: no batch statistics) → one feature map ``"0"`` at
    stride ``2 ** len(widths)``; ``out_channels`` is what torchvision's heads read."""

    def __init__(self, channels: int = 32, widths: tuple[int, ...] = (16, 32)):
        super().__init__()
        self.out_channels = channels
        layers: list[nn.Module] = []
        width = 3
        for out in (*widths, channels):
            layers += [nn.Conv2d(width, out, 3, 2, 1), nn.GroupNorm(8, out), nn.ReLU()]
            width = out
        layers += [nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU()]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return OrderedDict([("0", self.body(x))])


def detector_input(images: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """uint8 NHWC → the list of float CHW images in [0, 1] torchvision detectors take (they
    normalise and resize themselves); a gray channel becomes three."""
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    return list(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)
