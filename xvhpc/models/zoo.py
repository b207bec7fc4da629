"""Models by arch name: the task whose ``TaskInfo.archs`` holds the arch builds it (its
``build_model`` hook), so a new task's models need no edit here."""

from __future__ import annotations

import torch
from torch import nn

from ..registry import load_task, task_infos, task_of_arch
from ..spec.schema import ExperimentSpec, ModelSpec


def build_model(spec: ModelSpec, num_classes: int, image_size: int = 224) -> nn.Module:
    """The model of a spec for ``num_classes`` data classes, built by the task of its arch
    (a classifier, or a detector that resizes to ``image_size``)."""
    info = task_of_arch(spec.arch)
    if info is None:
        known = [a for i in task_infos().values() for a in i.archs]
        raise ValueError(f"unknown arch {spec.arch!r} (valid: {', '.join(known)})")
    return load_task(info.name).build_model(spec, num_classes, image_size)


def memory_format(spec: ExperimentSpec, device: torch.device) -> torch.memory_format:
    """channels_last on GPUs when asked: cuDNN's tensor-core convolutions want NHWC; CPUs gain little."""
    on = spec.train.channels_last and device.type == "cuda"
    return torch.channels_last if on else torch.contiguous_format


def target_layer(model: nn.Module, arch: str) -> nn.Module:
    """The last convolutional block, for Grad-CAM."""
    layers = {
        "googlenet": "inception5b",
        "resnet18": "layer4",
        "resnet50": "layer4",
        "densenet121": "features",
        "mobilenet_v3_large": "features",
        "efficientnet_b0": "features",
    }
    if arch in layers:
        return model.get_submodule(layers[arch])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("no convolutional layer found for the heatmap")
    return convs[-1]
