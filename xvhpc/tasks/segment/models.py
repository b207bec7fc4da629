"""Segmenters by name: torchvision's semantic segmentation zoo (DeepLabv3, FCN, LR-ASPP),
segmentation-models-pytorch's encoder-decoders (U-Net, FPN on ResNet encoders: the field's
library for them) and ``unet_tiny`` (a small U-Net in plain torch) that trains on a CPU in
seconds for tests and the demo.

Every model maps ImageNet-normalised float NCHW (``to_model_input``) to logits N×K×H×W at the
input's size: K is the data's class count (class 0 is whatever the data calls 0, usually
background); torchvision's ``{"out", "aux"}`` dict is unwrapped (no auxiliary head)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ...models.detection import TinyBackbone
from ...models.weights import load_cached_state_dict
from ...spec.schema import ModelSpec
from .info import is_instance

# The backbones' ImageNet weights (enum members under torchvision.models): several archs share
# one file in the cache. The segmentation heads always start fresh (their COCO/VOC weights
# have 21 classes and are not offered).
WEIGHTS = {
    "deeplabv3_mobilenet_v3_large": "MobileNet_V3_Large_Weights.IMAGENET1K_V1",
    "deeplabv3_resnet50": "ResNet50_Weights.IMAGENET1K_V1",
    "fcn_resnet50": "ResNet50_Weights.IMAGENET1K_V1",
    "lraspp_mobilenet_v3_large": "MobileNet_V3_Large_Weights.IMAGENET1K_V1",
    # segmentation-models-pytorch's ResNet encoders are torchvision's ResNets without ``fc``:
    # they take torchvision's ImageNet files from the same offline cache (smp's own download
    # from the Hugging Face hub is never used: compute nodes have no internet)
    "unet_resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "unet_resnet34": "ResNet34_Weights.IMAGENET1K_V1",
    "fpn_resnet34": "ResNet34_Weights.IMAGENET1K_V1",
    # Mask R-CNN (instance masks): the whole detector's COCO weights, heads sized by class count
    # start fresh (as task: detect's COCO weights)
    "maskrcnn_resnet50_fpn": "detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1",
    "maskrcnn_resnet50_fpn_v2": "detection.MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1",
}
SMP = {  # arch → (segmentation_models_pytorch class, encoder)
    "unet_resnet18": ("Unet", "resnet18"),
    "unet_resnet34": ("Unet", "resnet34"),
    "fpn_resnet34": ("FPN", "resnet34"),
}


def _block(width_in: int, width_out: int) -> nn.Sequential:
    """Two 3×3 convolutions with GroupNorm (no batch statistics: tiny batches are fine)."""
    return nn.Sequential(
        nn.Conv2d(width_in, width_out, 3, 1, 1),
        nn.GroupNorm(8, width_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(width_out, width_out, 3, 1, 1),
        nn.GroupNorm(8, width_out),
        nn.ReLU(inplace=True),
    )


class UNetTiny(nn.Module):
    """A three-level U-Net (16/32/64 channels, ~0.1 M parameters); any input size (the decoder
    interpolates to the skip connection's size, so odd sizes work too)."""

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        self.enc1 = _block(3, width)
        self.enc2 = _block(width, width * 2)
        self.mid = _block(width * 2, width * 4)
        self.dec2 = _block(width * 4 + width * 2, width * 2)
        self.dec1 = _block(width * 2 + width, width)
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        up2 = F.interpolate(m, size=e2.shape[-2:], mode="bilinear", align_corners=False)
        d2 = self.dec2(torch.cat([up2, e2], 1))
        up1 = F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.dec1(torch.cat([up1, e1], 1)))


class Logits(nn.Module):
    """A torchvision segmentation model returning its ``out`` logits as a plain tensor (what
    the loss, evaluate, serve and the exports take)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


def _backbone_state(arch: str, state: dict) -> dict:
    """ImageNet classifier weights → the segmenter's backbone names: ResNets keep their layer
    names (``fc`` is dropped) under ``net.backbone.`` (torchvision) or ``encoder.`` (smp),
    MobileNetV3's ``features.N`` become ``net.backbone.N``."""
    out = {}
    for key, value in state.items():
        if arch in SMP:
            if not key.startswith("fc."):
                out[f"encoder.{key}"] = value
        elif arch.endswith("resnet50"):
            if not key.startswith("fc."):
                out[f"net.backbone.{key}"] = value
        elif key.startswith("features."):
            out[f"net.backbone.{key.removeprefix('features.')}"] = value
    return out


def _torchvision(arch: str, num_classes: int) -> nn.Module:
    import torchvision.models.segmentation as tvs

    kwargs: dict = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    if not arch.startswith("lraspp"):
        kwargs["aux_loss"] = False
    return Logits(getattr(tvs, arch)(**kwargs))


def _smp(arch: str, num_classes: int) -> nn.Module:
    """An smp encoder-decoder; its forward already returns N×K×H×W logits at the input size."""
    import segmentation_models_pytorch as smp

    kind, encoder = SMP[arch]
    net: nn.Module = getattr(smp, kind)(encoder, encoder_weights=None, classes=num_classes)
    return net


def maskrcnn_tiny(num_classes: int, image_size: int) -> nn.Module:
    """A real torchvision Mask R-CNN on a two-layer stride-4 backbone with slim heads (~0.5 M
    parameters): trains on a CPU in a minute for tests and the demo."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    width = 64
    return MaskRCNN(
        TinyBackbone(width, widths=(32,)),
        None,  # the predictors below carry the class count
        min_size=image_size,
        max_size=image_size,
        rpn_anchor_generator=AnchorGenerator(((6, 12, 24),), ((0.5, 1.0, 2.0),)),
        rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100,
        rpn_pre_nms_top_n_test=150, rpn_post_nms_top_n_test=50, rpn_batch_size_per_image=64,
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        box_head=TwoMLPHead(width * 7 * 7, 128),
        box_predictor=FastRCNNPredictor(128, num_classes),
        box_batch_size_per_image=64,
        box_detections_per_img=30,
        mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
        mask_head=MaskRCNNHeads(width, [width, width], 1),
        mask_predictor=MaskRCNNPredictor(width, width, num_classes),
    )  # fmt: skip


def build_instance_segmenter(spec: ModelSpec, num_classes: int, image_size: int) -> nn.Module:
    """A Mask R-CNN for ``num_classes`` classes, class 0 the background (torchvision's label 0,
    so data classes and model labels are the same numbers). ``pretrained: coco`` loads the
    cached COCO weights except the class-count-shaped tensors of the heads."""
    if spec.arch == "maskrcnn_tiny":
        return maskrcnn_tiny(num_classes, image_size)
    import torchvision.models.detection as tvd

    model = getattr(tvd, spec.arch)(
        weights=None, weights_backbone=None, num_classes=num_classes,
        min_size=image_size, max_size=image_size,
    )  # fmt: skip
    if spec.pretrained == "coco":
        own = model.state_dict()
        state = load_cached_state_dict(spec.arch)
        fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(fits, strict=False)
    return model


def build_segmenter(spec: ModelSpec, num_classes: int, image_size: int) -> nn.Module:
    """The segmenter of a spec for ``num_classes`` data classes (one output channel each), or
    a Mask R-CNN for an instance arch.

    ``pretrained: imagenet`` loads the backbone's cached ImageNet weights (never the network);
    the head starts fresh."""
    if is_instance(spec.arch):
        return build_instance_segmenter(spec, num_classes, image_size)
    if spec.arch == "unet_tiny":
        if spec.pretrained not in ("none", None):
            raise ValueError("unet_tiny has no pretrained weights (model.pretrained: none)")
        return UNetTiny(num_classes)
    model = (
        _smp(spec.arch, num_classes) if spec.arch in SMP else _torchvision(spec.arch, num_classes)
    )
    if spec.pretrained == "imagenet":
        own = model.state_dict()
        mapped = _backbone_state(spec.arch, load_cached_state_dict(spec.arch))
        fits = {k: v for k, v in mapped.items() if k in own and own[k].shape == v.shape}
        if not fits:
            raise ValueError(
                f"the cached ImageNet weights of {spec.arch} match none of its backbone"
            )
        model.load_state_dict(fits, strict=False)
    return model
