"""The reference tile classifier's architecture: a small CNN and its [0, 1]-input wrapper.

Inputs are (B, 3, H, W) in [0, 1]; normalisation happens inside :class:`TileClassifier`, so attacks
never see it. Depends on torch only.
"""

from __future__ import annotations

import torch
from torch import nn

from ..inputs.samples import CLASSES, TUMOUR

ARCHITECTURE = "medfool-tilenet-v1"


def _block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class TileNet(nn.Module):
    """A small CNN: a stride-2 stem, three 3x3 conv blocks with 2x2 pooling, global average pooling, a linear head.

    Fully convolutional, so it reads 96 px training crops and whole 150 or 224 px tiles alike.
    Kept small so that training and attacks run in minutes on two CPU cores.
    """

    def __init__(self, num_classes: int = len(CLASSES), width: int = 24) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_block(3, w, stride=2),
            *_block(w, 2 * w), nn.MaxPool2d(2),
            *_block(2 * w, 4 * w), nn.MaxPool2d(2),
            *_block(4 * w, 4 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pool(self.features(x)).flatten(1)))


class TileClassifier(nn.Module):
    """Wraps a network so that it takes [0, 1] RGB input: ``(x - mean) / std`` happens inside."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float], classes: tuple[str, ...] = CLASSES) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.classes = tuple(classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    @property
    def tumour_index(self) -> int:
        return self.classes.index("TUM") if "TUM" in self.classes else TUMOUR

    def tumour_probability(self, x: torch.Tensor) -> torch.Tensor:
        """The explicit tumour-versus-rest decision: P(TUM) from the softmax over all classes."""
        return self.forward(x).softmax(1)[:, self.tumour_index]
