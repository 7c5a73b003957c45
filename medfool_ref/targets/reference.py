"""The shipped reference model: safe loading and saving of medfool's tile classifier.

Weights are stored as safetensors (no pickle) next to a JSON card; only medfool's own architecture
can be loaded from a file. Any other ``torch.nn.Module`` that takes [0, 1] inputs and returns logits
can be passed to the attacks directly from Python.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ..inputs.samples import CLASSES
from .tilenet import ARCHITECTURE, TileClassifier, TileNet

MODEL_DIR = Path(__file__).resolve().parents[1] / "data" / "reference-model"
DEFAULT_WEIGHTS = MODEL_DIR / "tilenet.safetensors"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_bytes(model: TileClassifier, width: int = 24) -> bytes:
    """The model's weights as a safetensors file, with the architecture, classes and width in its metadata."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"architecture": ARCHITECTURE, "classes": json.dumps(list(model.classes)), "width": str(width)}
    return save(state, metadata=meta)


def save_model(model: TileClassifier, path: Path, card: dict[str, Any]) -> None:
    Path(path).write_bytes(model_bytes(model, int(card.get("width", 24))))


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
