"""``pretrained: kinetics`` from the offline weights cache (issue 27): the real Kinetics-400 files
cannot be fetched here (no network), so torchvision's own architecture with its 400-class head,
saved under the cache's file name, stands in for them: the loading path (file name, safe load,
every tensor but the head, the refusal of a file of another arch) is the real one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from xvhpc.models.weights import MissingWeights, cached_file
from xvhpc.spec.schema import ModelSpec
from xvhpc.tasks.action.models import HEADS, build_clip_model

OTHER = {"mc3_18": "s3d", "s3d": "mc3_18"}  # a file of another arch, for the refusal


@pytest.mark.parametrize("arch", sorted(OTHER))
def test_kinetics_weights_load_from_the_cache_all_but_the_head(
    arch: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.models.video as tvv

    monkeypatch.setenv("XVHPC_WEIGHTS", str(tmp_path))
    spec = ModelSpec(arch=arch, pretrained="kinetics")
    with pytest.raises(MissingWeights, match=f"KINETICS400_V1\\) are not in the cache .*"
                       f"xvhpc weights fetch {arch}"):  # fmt: skip
        build_clip_model(spec, 3, 32)
    torch.manual_seed(1)
    kinetics = getattr(tvv, arch)(weights=None).state_dict()  # 400 classes, as Kinetics
    torch.save(kinetics, cached_file(arch))
    model = build_clip_model(spec, 3, 32)
    got = getattr(model, "net", model).state_dict()
    assert set(got) == set(kinetics)
    for key, value in got.items():
        if key.startswith(HEADS[arch]):  # the head: this data's 3 classes, not loaded
            assert value.shape[0] == 3 and kinetics[key].shape[0] == 400
        else:
            assert torch.equal(value, kinetics[key]), key
    torch.save(getattr(tvv, OTHER[arch])(weights=None).state_dict(), cached_file(arch))
    with pytest.raises(ValueError, match=f"not torchvision's {arch}. HINT: delete the file"):
        build_clip_model(spec, 3, 32)
