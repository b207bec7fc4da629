"""The model zoo (xvhpc/models/zoo.py, weights.py): every architecture with a new head, a custom
import, a frozen backbone, ImageNet weights only from the offline cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from xvhpc.models.weights import cached_file
from xvhpc.models.zoo import build_model
from xvhpc.spec.schema import ModelSpec
from xvhpc.tasks.classify.info import ARCHITECTURES


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_builds_with_new_head(arch: str) -> None:
    model = build_model(ModelSpec(arch=arch, pretrained="none"), num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 3)


def test_custom_import() -> None:
    model = build_model(
        ModelSpec.model_validate({"import": "tests.custom_model:build", "pretrained": "none"}), 5
    )
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 5)


def test_freeze_backbone_trains_the_head_only() -> None:
    frozen = build_model(ModelSpec(arch="resnet18", pretrained="none", freeze_backbone=True), 2)
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}


def test_imagenet_weights_missing_from_cache_say_how_to_fetch(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XVHPC_WEIGHTS", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="xvhpc weights fetch googlenet"):
        build_model(ModelSpec(arch="googlenet", pretrained="imagenet"), 4)


def test_imagenet_weights_only_from_cache(tmp_path: Path, monkeypatch) -> None:
    import torchvision

    monkeypatch.setenv("XVHPC_WEIGHTS", str(tmp_path / "cache"))
    # a cache filled (here by hand, as `weights fetch` would) loads without any network
    reference = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
    path = cached_file("googlenet")
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = build_model(ModelSpec(arch="googlenet", pretrained="imagenet"), 4)
    assert model.aux1 is None
    assert model.fc.out_features == 4
    assert torch.equal(model.conv1.conv.weight, reference.conv1.conv.weight)
