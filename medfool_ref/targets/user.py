"""A user's own model: ``--model path/to/file.py:factory [--weights W]``, checked before any attack runs.

The file is the user's code, imported because they named it on the command line (nothing else in
medfool imports code a file names). Weights come from ``.safetensors``, or from a state dict read
with ``torch.load(weights_only=True)``; a full pickle is never loaded. The model is wrapped so
that, whatever it expects, attacks see one contract: (B, 3, H, W) in [0, 1] in, logits out
(:class:`AuditedModel`: resize/crop policy, normalisation, probabilities turned into log-probabilities).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .target import Target, TargetSpec, fingerprint, state_bytes

if TYPE_CHECKING:  # the config is validated on the driver; here it is only read
    from .config import ModelConfig


class ModelError(ValueError):
    """A model medfool cannot audit: the message says why and where."""


def load_factory(spec: str) -> Callable[[], Any]:
    """``file.py:factory`` -> the callable (the file is imported under a private module name)."""
    path_text, sep, name = spec.rpartition(":")
    if not sep or not path_text or not name:
        raise ModelError(f"--model {spec}: expected path/to/file.py:factory (or 'reference')")
    path = Path(path_text)
    if path.suffix != ".py":
        raise ModelError(f"--model {spec}: {path} is not a Python file (.py)")
    if not path.is_file():
        raise ModelError(f"--model {spec}: {path}: no such file")
    module_name = f"medfool_user_model_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ModelError(f"--model {spec}: {path} cannot be imported")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's code: any failure is reported, with its type
        raise ModelError(f"--model {spec}: importing {path} raised {type(exc).__name__}: {exc}") from None
    factory = getattr(module, name, None)
    if factory is None:
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ModelError(f"--model {spec}: {path} defines no {name!r} (callables there: {', '.join(defined) or 'none'})")
    if not callable(factory):
        raise ModelError(f"--model {spec}: {name!r} in {path} is not callable")
    return factory


def build(spec: str) -> nn.Module:
    factory = load_factory(spec)
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"--model {spec}: the factory raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"--model {spec}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from a torch file read with ``weights_only=True`` (never a full pickle)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"--weights {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelError(f"--weights {path}: not a readable safetensors file ({exc})") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - weights_only refuses pickled objects with an UnpicklingError
        raise ModelError(f"--weights {path}: not a state dict torch can read with weights_only=True "
                         f"(full pickles are never loaded: they can run code); {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ModelError(f"--weights {path}: expected a mapping of parameter names to tensors")
    return state


def load_weights(model: nn.Module, path: str | Path) -> None:
    state = read_state(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
        parts = ([f"missing {few(missing)}"] if missing else []) + ([f"unexpected {few(unexpected)}"] if unexpected else [])
        raise ModelError(f"--weights {path}: the weights do not fit the architecture: {'; '.join(parts)}")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise ModelError(f"--weights {path}: the weights do not fit the architecture: shape of {wrong[0]}")
    model.load_state_dict(state, strict=True)


class AuditedModel(nn.Module):
    """The user's model behind medfool's contract: [0, 1] RGB in, logits out (differentiable end to end)."""

    def __init__(self, net: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        self.net = net
        self.config = config
        self.classes = tuple(config.classes)
        spec = config.input
        if spec.mean is not None and spec.std is not None:
            self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1))
        else:
            self.mean = self.std = None  # type: ignore[assignment]

    def fit(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.config.input
        if spec.size is None or spec.resize == "none" or tuple(x.shape[-2:]) == (spec.size, spec.size):
            return x
        h, w = x.shape[-2:]
        if spec.resize in ("resize", "resize-then-crop"):
            if spec.resize == "resize-then-crop":  # shorter side to size, then the centre
                scale = spec.size / min(h, w)
                x = F.interpolate(x, size=(max(spec.size, round(h * scale)), max(spec.size, round(w * scale))), mode="bilinear",
                                  align_corners=False)
            else:
                return F.interpolate(x, size=(spec.size, spec.size), mode="bilinear", align_corners=False)
        h, w = x.shape[-2:]
        if h < spec.size or w < spec.size:
            raise ValueError(f"a {w}x{h} tile is smaller than the model's input size {spec.size} (use resize)")
        top, left = (h - spec.size) // 2, (w - spec.size) // 2
        return x[..., top:top + spec.size, left:left + spec.size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fit(x)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        out = self.net(x)
        if self.config.output == "probabilities":
            out = out.clamp_min(1e-12).log()  # softmax(log p) = p: attacks can treat it as logits
        return out


def looks_like_probabilities(raw: torch.Tensor, atol: float = 1e-4) -> bool:
    """Every row non-negative and summing to 1 (within ``atol``): what a softmax returns, not logits."""
    return bool((raw >= 0).all()) and bool(((raw.float().sum(1) - 1).abs() <= atol).all())


def check_model(model: nn.Module, config: ModelConfig, device: torch.device, where: str) -> list[str]:
    """Run a probe batch: the output must be (B, classes) and finite (probabilities: in [0, 1], summing to 1).

    Returns warnings. Probabilities where the config says ``output: logits`` are warned about, not refused: the
    audit then attacks softmax(probabilities), whose nearly uniform scores make every attack look far too strong,
    so the warning also heads the report; the fix is ``output: probabilities`` in the config."""
    side = config.input.size or 224
    probe = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        with torch.no_grad():
            raw = model.net(((model.fit(probe) - model.mean) / model.std) if model.mean is not None else model.fit(probe))
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{where}: the model failed on a (2, 3, {side}, {side}) batch: {type(exc).__name__}: {exc}") from None
    n = len(config.classes)
    if not isinstance(raw, torch.Tensor) or raw.ndim != 2 or raw.shape[1] != n:
        shape = tuple(raw.shape) if isinstance(raw, torch.Tensor) else type(raw).__name__
        raise ModelError(f"{where}: the model's output is {shape}; the config lists {n} classes, so (batch, {n}) was expected")
    if not bool(torch.isfinite(raw).all()):
        raise ModelError(f"{where}: the model's outputs are not finite (NaN or inf) on a probe batch")
    if config.output == "probabilities":
        if bool((raw < 0).any() | (raw > 1).any()) or not torch.allclose(raw.sum(1), torch.ones(2, device=raw.device), atol=1e-3):
            raise ModelError(f"{where}: the config says the model outputs probabilities, but its outputs do not sum to 1")
    elif looks_like_probabilities(raw):
        return [f"{where}: every output row of the probe batch is non-negative and sums to 1: these look like probabilities, "
                f"but the config says 'output: logits'; if the model ends in a softmax, set 'output: probabilities' in the "
                f"config (as logits, its scores are nearly uniform and every attack looks far stronger than it is)"]
    return []


def user_target(spec: str, config: ModelConfig, *, weights: str | Path | None = None, device: str | torch.device = "cpu",
                config_path: str | Path | None = None) -> Target:
    from .integrity import verify_pins

    verify_pins(config.integrity, weights=weights, factory=spec.rpartition(":")[0] or None,
                where=f"--config {config_path}" if config_path else "--config")  # before the factory file is imported
    net = build(spec)
    if weights is not None:
        load_weights(net, weights)
    device = torch.device(device)
    model = AuditedModel(net, config).to(device).eval()
    warnings = check_model(model, config, device, f"--model {spec}")
    name = Path(spec.rpartition(":")[0]).name + ":" + spec.rpartition(":")[2]
    target = configured(Target(model, model.classes, fingerprint(model), name), config)
    target.warnings = warnings  # printed by the command and carried into the report
    target.spec = TargetSpec("user", name, target.classes, target.positive, target.threshold, target.fingerprint, str(device),
                             weights=state_bytes(net), factory=str(Path(spec.rpartition(":")[0]).resolve()) + ":" + spec.rpartition(":")[2],
                             config=config.model_dump())
    return target


def configured(target: Target, config: ModelConfig) -> Target:
    """The target with the config's decision (positive classes, threshold) and the config itself attached."""
    from dataclasses import replace

    target.positive = tuple(config.positive)
    target.threshold = config.threshold
    target.config = config
    if target.spec is not None:
        target.spec = replace(target.spec, positive=target.positive, threshold=target.threshold)
    return target
