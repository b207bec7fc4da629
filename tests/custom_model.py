"""A custom model factory for the `model.import` test."""

from torch import nn


def build(num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes)
    )
