"""The reference tile classifier: a small CNN, its [0,1]-input wrapper, and safe loading.

Inputs are (B, 3, H, W) in [0, 1]; normalisation happens inside :class:`TileClassifier`, so attacks
never see it. Weights are stored as safetensors (no pickle) next to a JSON card; only medfool's
own architecture can be loaded from a file. Any other ``torch.nn.Module`` that takes [0, 1] inputs
and returns logits can be passed to the attacks directly from Python.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .tiles import CLASSES, TUMOUR

MODEL_DIR = Path(__file__).parent / "models"
DEFAULT_WEIGHTS = MODEL_DIR / "tilenet.safetensors"
# mean/std of the training tiles' RGB channels are stored with the weights
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


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_model(model: TileClassifier, path: Path, card: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"architecture": ARCHITECTURE, "classes": json.dumps(list(model.classes)),
            "width": str(card.get("width", 24))}
    save_file(state, str(path), metadata=meta)


class ModelFileError(ValueError):
    """A weights file medfool cannot load safely."""


def load_model(path: str | Path | None = None, device: str | torch.device | None = None) -> TileClassifier:
    """Load medfool's tile classifier from a .safetensors file (default: the shipped reference model)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if path.suffix != ".safetensors":
        raise ModelFileError(f"{path}: only .safetensors weights of medfool's architecture are loaded "
                             "(pickled .pt/.pth files are refused: they can run code when unpickled)")
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("architecture") != ARCHITECTURE:
        raise ModelFileError(f"{path}: architecture {meta.get('architecture')!r} is not {ARCHITECTURE!r}")
    classes = tuple(json.loads(meta.get("classes", "[]"))) or CLASSES
    net = TileNet(num_classes=len(classes), width=int(meta.get("width", "24")))
    model = TileClassifier(net, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], classes)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not fit the architecture ({str(exc).splitlines()[0]})") from None
    return model.to(device or default_device()).eval()
