"""The benchmark architectures (benchmarks/archs.py) have the published layouts: their parameter counts are those of
torchvision's ResNet-50 (25,557,032 with 1,000 classes) and DeiT-S / ViT-S/16 (22,050,664), with a 9-class head."""

from __future__ import annotations

import pytest
import torch

from benchmarks import archs


@pytest.mark.parametrize("build,published,features", [
    (archs.resnet50, 25_557_032, 2048),
    (archs.vit_s16, 22_050_664, 384),
])
def test_layouts_match_the_published_parameter_counts(build, published: int, features: int) -> None:
    model = build(9)
    head_1000, head_9 = features * 1000 + 1000, features * 9 + 9
    assert archs.parameters(model) == published - head_1000 + head_9
    with torch.no_grad():
        out = model.eval()(torch.rand(2, 3, 224, 224))
    assert out.shape == (2, 9) and torch.isfinite(out).all()


def test_an_unknown_architecture_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        archs.build("vgg", torch.device("cpu"))
