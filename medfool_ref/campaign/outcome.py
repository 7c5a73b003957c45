"""What running a unit gives back: one record per item, unit-level figures and artifacts (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RECORD_FIELDS = ("item", "name", "path", "label", "target", "pred_before", "conf_before", "pred_after", "conf_after", "success",
                 "pred_8bit", "conf_8bit", "success_8bit", "l0", "l2", "linf", "l0_8bit", "l2_8bit", "linf_8bit")


@dataclass
class ItemRecord:
    """One item's outcome. ``*_8bit`` describe the adversarial rounded to the 8-bit grid a saved PNG holds."""

    item: str
    name: str
    path: str | None
    label: int | None
    target: int | None
    pred_before: int | None
    conf_before: float | None
    pred_after: int | None = None
    conf_after: float | None = None
    success: bool | None = None
    pred_8bit: int | None = None
    conf_8bit: float | None = None
    success_8bit: bool | None = None
    l0: int | None = None
    l2: float | None = None
    linf: float | None = None
    l0_8bit: int | None = None
    l2_8bit: float | None = None
    linf_8bit: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Artifact:
    name: str
    media: str  # "image/png", "application/octet-stream" (safetensors), "application/json"
    data: bytes


@dataclass
class UnitOutcome:
    key: str
    attack: str
    label: str
    params: dict[str, Any]
    target: int | None
    records: list[ItemRecord]
    seconds: float
    forward_calls: int = 0
    forward_images: int = 0
    backward_calls: int = 0
    backward_images: int = 0
    iterations: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)
    device: str = ""


@dataclass
class UnitFailure:
    key: str
    attack: str
    label: str
    params: dict[str, Any]
    error: str
    kind: str = "error"  # "invalid" when the unit's own parameters or inputs were refused (a ValueError)
