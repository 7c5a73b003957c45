"""A target: the model under attack with what the campaign core needs to know about it.

``fingerprint`` is a sha256 over the model's parameters and buffers (names, dtypes, shapes and
values), so results are keyed by the weights that produced them whatever file they came from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    threshold: float | None = None  # positive when P(positive) >= threshold; None: when a positive class has the top score
    config: Any = None  # the validated model config, when one was given
    spec: TargetSpec | None = None  # how another process rebuilds this target (a cluster's workers)
    precision: str = "float32"  # "bf16": the differentiated passes under bfloat16 autocast (targets.precision)
    channels_last: bool = False
    compiled: bool = False  # the model through torch.compile
    warnings: list[str] = field(default_factory=list)  # what the model check noticed (e.g. probabilities as logits)

    @property
    def run_fingerprint(self) -> str:
        """What units are keyed by: the weights' fingerprint, with the precision mode when it is not plain float32."""
        from .precision import run_fingerprint

        return run_fingerprint(self.fingerprint, self.precision, self.channels_last, self.compiled)

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    def class_index(self, name: str) -> int:
        return self.classes.index(name)

    @property
    def positive_indices(self) -> list[int]:
        return [self.classes.index(c) for c in self.positive if c in self.classes]

    def decision_model(self) -> DecisionModel:
        return DecisionModel(self.model, self.positive_indices, self.threshold)


class DecisionModel(nn.Module):
    """The tumour decision as a two-class model: logits (negative, positive) whose argmax is the decision.

    Argmax rule: (best negative logit, best positive logit). Threshold rule: (0, logit P(positive) -
    logit threshold). Attacking it untargeted flips the decision: a missed tumour on positive tiles,
    an over-call on the others.
    """

    def __init__(self, model: nn.Module, positive: list[int], threshold: float | None) -> None:
        super().__init__()
        self.model = model
        self.positive = positive
        self.threshold = threshold
        self.approximate_gradients = getattr(model, "approximate_gradients", False)  # the wrapped model's precision flag

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        mask = torch.zeros(z.shape[1], dtype=torch.bool, device=z.device)
        mask[self.positive] = True
        if self.threshold is None:
            return torch.stack([z[:, ~mask].amax(1), z[:, mask].amax(1)], dim=1)
        log_odds = torch.logsumexp(z[:, mask], 1) - torch.logsumexp(z[:, ~mask], 1)
        shift = float(torch.logit(torch.tensor(self.threshold)))
        return torch.stack([torch.zeros_like(log_odds), log_odds - shift], dim=1)


@dataclass(frozen=True)
class TargetSpec:
    """Everything a worker needs to rebuild a target: picklable, put in a cluster's object store once.

    ``kind`` "reference": medfool's architecture from ``weights`` (safetensors bytes); "user": the user's
    ``factory`` (a file the worker must see at the same path) with its config and the inner net's
    weights; "module": the module itself (pickled by the engine: Python callers on a local cluster).
    """

    kind: str
    name: str
    classes: tuple[str, ...]
    positive: tuple[str, ...]
    threshold: float | None
    fingerprint: str
    device: str
    weights: bytes = b""
    factory: str | None = None
    config: dict[str, Any] | None = None
    module: Any = None  # rebuilt by :func:`medfool_ref.targets.rebuild.rebuild`
    precision: str = "float32"
    channels_last: bool = False
    compiled: bool = False


def state_bytes(model: nn.Module) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})


def fingerprint(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        flat = t.detach().cpu().reshape(-1).contiguous()
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()


def module_target(model: nn.Module, classes: tuple[str, ...] | list[str], name: str = "model") -> Target:
    """A target from a module already in memory (Python callers, tests, benchmarks)."""
    t = Target(model.eval(), tuple(classes), fingerprint(model), name)
    t.spec = TargetSpec("module", name, t.classes, t.positive, None, t.fingerprint, str(t.device), module=model)
    return t


def reference_target(weights: str | Path | None = None, device: str | torch.device | None = None) -> Target:
    """medfool's reference tile classifier (or another file of its architecture)."""
    from .reference import load_model

    model = load_model(weights, device=device)
    t = Target(model, model.classes, fingerprint(model), "reference" if weights is None else str(weights))
    t.spec = TargetSpec("reference", t.name, t.classes, t.positive, None, t.fingerprint, str(t.device), weights=state_bytes(model))
    return t
