"""torchvision classifiers by name, with the head replaced for the dataset's classes; a custom
factory (``model.import``) or a state-dict path (``model.pretrained``) instead."""

from __future__ import annotations

import importlib
from pathlib import Path

from torch import nn

from ...models.safeload import load_tensors
from ...models.weights import load_cached_state_dict
from ...spec.schema import ModelSpec
from .info import ARCHITECTURES

# torchvision's ImageNet weights per architecture (enum members under torchvision.models)
WEIGHTS = {
    "googlenet": "GoogLeNet_Weights.IMAGENET1K_V1",
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V1",
    "densenet121": "DenseNet121_Weights.IMAGENET1K_V1",
    "mobilenet_v3_large": "MobileNet_V3_Large_Weights.IMAGENET1K_V1",
    "efficientnet_b0": "EfficientNet_B0_Weights.IMAGENET1K_V1",
}


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


def _imported(spec: ModelSpec, num_classes: int) -> nn.Module:
    """The model of a custom factory, ``module:function(num_classes=...)``."""
    assert spec.import_ is not None
    module_name, _, factory = spec.import_.partition(":")
    model = getattr(importlib.import_module(module_name), factory)(num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model.import {spec.import_} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def build_classifier(spec: ModelSpec, num_classes: int) -> nn.Module:
    """The classifier of a spec: torchvision by name, a custom factory, or a state-dict path."""
    if spec.import_:
        return _imported(spec, num_classes)
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
