"""Rebuilding a target from its :class:`TargetSpec` in another process (a cluster's worker)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .target import Target, TargetSpec, fingerprint


class _Config:
    """The validated config's fields as attributes again (a worker needs no pydantic)."""

    def __init__(self, data: dict[str, Any]) -> None:
        for k, v in data.items():
            setattr(self, k, _Config(v) if isinstance(v, dict) else v)

    @staticmethod
    def of(data: dict[str, Any]) -> Any:
        return _Config(data)


def rebuild(spec: TargetSpec, device: str | torch.device | None = None) -> Target:
    """The target ``spec`` describes, on ``device``; its weights must hash as on the driver."""
    from .defended import DefendedSpec, base_spec, with_defences

    if isinstance(spec, DefendedSpec):  # the model's target first, then the same chain in front of it
        inner = rebuild(base_spec(spec), device)
        return with_defences(inner, list(spec.defence), adaptive=spec.adaptive, draws=spec.draws)
    device = torch.device(device or spec.device)
    if spec.kind == "reference":
        from safetensors.torch import load

        from .tilenet import TileClassifier, TileNet

        state = load(spec.weights)
        width = int(state["net.features.0.weight"].shape[0])
        model: nn.Module = TileClassifier(TileNet(len(spec.classes), width), [0.0] * 3, [1.0] * 3, spec.classes)
        model.load_state_dict(state, strict=True)
    elif spec.kind == "user":
        from safetensors.torch import load

        from .user import AuditedModel, build

        net = build(str(spec.factory))
        net.load_state_dict(load(spec.weights), strict=True)
        model = AuditedModel(net, _Config.of(spec.config or {}))
    else:
        model = spec.module
    model = model.to(device).eval()
    target = Target(model, spec.classes, fingerprint(model), spec.name, spec.positive, spec.threshold, spec.config, spec)
    if target.fingerprint != spec.fingerprint:
        raise ValueError(f"the rebuilt model's weights differ from the driver's ({target.fingerprint[:12]} vs {spec.fingerprint[:12]})")
    if spec.precision != "float32" or spec.channels_last or spec.compiled:
        from dataclasses import replace

        from .precision import with_precision

        target.spec = replace(spec, precision="float32", channels_last=False, compiled=False)
        target = with_precision(target, spec.precision, spec.channels_last, spec.compiled)
    return target
