"""Detectors by name: torchvision's detection zoo, and ``fcos_tiny`` (a real torchvision FCOS
on a three-layer backbone) that trains on a CPU in seconds for tests and the demo.

Class ``k`` of the data is label ``k + 1`` of the model (0: background, torchvision's rule).
"""

from __future__ import annotations

from torch import nn

from ...models.detection import TinyBackbone
from ...models.weights import load_cached_state_dict
from ...spec.schema import ModelSpec

SIZED = ("fasterrcnn", "retinanet", "fcos")  # families that resize inputs (min_size, max_size)
# torchvision's COCO weights of each detector (enum members under torchvision.models)
WEIGHTS = {
    "fasterrcnn_resnet50_fpn_v2": "detection.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1",
    "fasterrcnn_mobilenet_v3_large_fpn": "detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1",
    "retinanet_resnet50_fpn_v2": "detection.RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1",
    "ssd300_vgg16": "detection.SSD300_VGG16_Weights.COCO_V1",
    "ssdlite320_mobilenet_v3_large": "detection.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1",
    "fcos_resnet50_fpn": "detection.FCOS_ResNet50_FPN_Weights.COCO_V1",
}


def fcos_tiny(num_classes: int, image_size: int) -> nn.Module:
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOSHead

    backbone = TinyBackbone()
    return FCOS(
        backbone,
        num_classes,
        min_size=image_size,
        max_size=image_size,
        anchor_generator=AnchorGenerator(((16,),), ((1.0,),)),
        head=FCOSHead(backbone.out_channels, 1, num_classes, num_convs=2),
        score_thresh=0.05,
    )


def build_detector(spec: ModelSpec, num_classes: int, image_size: int) -> nn.Module:
    """The detector of a spec for ``num_classes`` data classes (one more output: background).

    ``pretrained: coco`` loads the cached COCO weights except the class-count-shaped tensors
    of the heads, which start fresh."""
    labels = num_classes + 1
    if spec.arch == "fcos_tiny":
        return fcos_tiny(labels, image_size)
    import torchvision.models.detection as tvd

    kwargs = {"min_size": image_size, "max_size": image_size} if spec.arch.startswith(SIZED) else {}
    model = getattr(tvd, spec.arch)(
        weights=None, weights_backbone=None, num_classes=labels, **kwargs
    )
    if spec.pretrained == "coco":
        own = model.state_dict()
        state = load_cached_state_dict(spec.arch)
        fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(fits, strict=False)
    return model
