"""torchvision classifiers by name, with the head replaced for the dataset's classes."""

from __future__ import annotations

import importlib
from pathlib import Path

from torch import nn

from ..spec.schema import ModelSpec
from ..tasks.classify.info import ARCHITECTURES
from ..tasks.detect.info import ARCHITECTURES as DETECTION_ARCHITECTURES
from .safeload import load_tensors
from .weights import load_cached_state_dict


def _head_path(arch: str) -> str:
    """Dotted attribute of the final Linear layer."""
    return {
        "googlenet": "fc",
        "resnet18": "fc",
        "resnet50": "fc",
        "densenet121": "classifier",
        "mobilenet_v3_large": "classifier.3",
        "efficientnet_b0": "classifier.1",
    }[arch]


def _set_module(model: nn.Module, dotted: str, module: nn.Module) -> None:
    parent, _, last = dotted.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    if last.isdigit():
        if not isinstance(owner, nn.Sequential | nn.ModuleList):
            raise TypeError(f"{dotted}: {type(owner).__name__} does not support item assignment")
        owner[int(last)] = module
    else:
        setattr(owner, last, module)


def _torchvision(arch: str, imagenet: bool) -> nn.Module:
    import torchvision.models as tvm

    if arch == "googlenet":
        # aux heads exist only to load the pretrained state dict; dropped afterwards
        model = tvm.googlenet(
            weights=None, aux_logits=imagenet, init_weights=not imagenet, transform_input=imagenet
        )
    else:
        model = getattr(tvm, arch)(weights=None)
    if imagenet:
        model.load_state_dict(load_cached_state_dict(arch))
    if arch == "googlenet":
        model.aux_logits = False
        model.aux1 = None
        model.aux2 = None
    return model


def build_model(spec: ModelSpec, num_classes: int, image_size: int = 224) -> nn.Module:
    """The classifier of a spec: torchvision by name, a custom factory, or a state-dict path
    (a detector for a detection arch: ``detect/models.py``; it resizes to ``image_size``)."""
    if spec.arch in DETECTION_ARCHITECTURES:
        from ..tasks.detect.models import build_detector

        return build_detector(spec, num_classes, image_size)
    if spec.import_:
        module_name, _, factory = spec.import_.partition(":")
        model = getattr(importlib.import_module(module_name), factory)(num_classes=num_classes)
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"model.import {spec.import_} returned {type(model).__name__}, not a torch.nn.Module"
            )
        return model
    if spec.arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {spec.arch!r} (valid: {', '.join(ARCHITECTURES)})")
    imagenet = spec.pretrained == "imagenet"
    model = _torchvision(spec.arch, imagenet)
    head = model.get_submodule(_head_path(spec.arch))
    assert isinstance(head, nn.Linear)
    _set_module(model, _head_path(spec.arch), nn.Linear(head.in_features, num_classes))
    if spec.pretrained not in ("imagenet", "none"):
        state = load_tensors(Path(spec.pretrained).expanduser())
        state = state.get("model", state)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [m for m in missing if not m.startswith(_head_path(spec.arch))]:
            raise ValueError(
                f"model.pretrained {spec.pretrained}: keys do not match {spec.arch} (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
    if spec.freeze_backbone:
        head_prefix = _head_path(spec.arch) + "."
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith(head_prefix)
    return model


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
