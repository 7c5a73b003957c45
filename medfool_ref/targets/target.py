"""A target: the model under attack with what the campaign core needs to know about it.

``fingerprint`` is a sha256 over the model's parameters and buffers (names, dtypes, shapes and
values), so results are keyed by the weights that produced them whatever file they came from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..attacks._core import model_device


@dataclass
class Target:
    model: nn.Module
    classes: tuple[str, ...]
    fingerprint: str
    name: str = "model"
    positive: tuple[str, ...] = ("TUM",)  # the classes that make the tumour decision

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    def class_index(self, name: str) -> int:
        return self.classes.index(name)


def fingerprint(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        flat = t.detach().cpu().reshape(-1).contiguous()
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()


def module_target(model: nn.Module, classes: tuple[str, ...] | list[str], name: str = "model") -> Target:
    """A target from a module already in memory (Python callers, tests, benchmarks)."""
    return Target(model.eval(), tuple(classes), fingerprint(model), name)


def reference_target(weights: str | Path | None = None, device: str | torch.device | None = None) -> Target:
    """medfool's reference tile classifier (or another file of its architecture)."""
    from .reference import load_model

    model = load_model(weights, device=device)
    return Target(model, model.classes, fingerprint(model), "reference" if weights is None else str(weights))
