"""The registry of defences: name, kind, parameters (defaults, ranges), the catalog entry implemented.

Torch-free, so the catalog can check its ``implementation:`` names and the command line can refuse a bad
``--defence NAME[:key=value,...]`` before any model is loaded. Functions are named by module and function
inside ``medfool_ref.defences`` and imported only when a defence runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Callable, Literal

Kind = Literal["input-restoration", "detection", "hardening", "certification", "data-sanitisation", "integrity"]


class DefenceError(ValueError):
    """A defence asked for that cannot be built as asked: the message says why, in one line."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: type  # int, float or str
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""

    def parse(self, raw: str, where: str) -> Any:
        try:
            value: Any = self.kind(raw)
        except ValueError:
            raise DefenceError(f"{where}: {self.name}={raw!r} is not {'an integer' if self.kind is int else 'a number' if self.kind is float else 'valid'}") from None
        self.check(value, where)
        return value

    def check(self, value: Any, where: str) -> None:
        if self.kind is float and not math.isfinite(value):
            raise DefenceError(f"{where}: {self.name}={value} is not a finite number")
        if self.choices and value not in self.choices:
            raise DefenceError(f"{where}: {self.name} must be one of {', '.join(self.choices)}; got {value!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise DefenceError(f"{where}: {self.name}={value} is out of range [{self.low:g}, {self.high:g}]")


@dataclass(frozen=True)
class DefenceSpec:
    name: str
    kind: Kind
    module: str
    function: str
    implements: str | None  # the catalog defence entry, where the catalog has one
    summary: str
    params: tuple[Param, ...] = ()
    randomised: bool = False  # EOT over its draws in the adaptive mode
    differentiable: bool = True  # False: BPDA (straight-through or ``approximation``) in the adaptive mode
    approximation: str | None = None  # a differentiable stand-in used for the backward pass in the adaptive mode
    citation: str = ""

    def function_object(self) -> Callable[..., Any]:
        return getattr(import_module(f"medfool_ref.defences.{self.module}"), self.function)

    def approximation_object(self) -> Callable[..., Any] | None:
        return getattr(import_module(f"medfool_ref.defences.{self.module}"), self.approximation) if self.approximation else None

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}


SPECS: dict[str, DefenceSpec] = {s.name: s for s in (
    DefenceSpec("jpeg", "input-restoration", "jpeg", "jpeg", "input-transformations",
                "JPEG re-encoding (8x8 DCT, quantisation at a quality, 4:2:0 chroma), in torch",
                (Param("quality", int, 75, 1, 100, help="JPEG quality (libjpeg's table scaling)"),),
                differentiable=False, approximation="jpeg_smooth",
                citation="Dziugaite et al. 2016; Guo et al., ICLR 2018; broken by Athalye et al., ICML 2018"),
    DefenceSpec("bit-depth", "input-restoration", "squeeze", "bit_depth", "input-transformations",
                "bit-depth reduction: each channel rounded to 2^bits levels",
                (Param("bits", int, 4, 1, 7, help="bits kept per channel"),), differentiable=False,
                citation="Xu, Evans & Qi, NDSS 2018 (feature squeezing)"),
    DefenceSpec("median", "input-restoration", "squeeze", "median_filter", "input-transformations",
                "median filter over a k x k window (reflect padding)",
                (Param("size", int, 3, 2, 9, help="window side in pixels"),),
                citation="Xu, Evans & Qi, NDSS 2018 (spatial smoothing)"),
    DefenceSpec("stain-norm", "input-restoration", "stain", "stain_normalise", "input-transformations",
                "stain normalisation to a reference H&E appearance (Macenko or Reinhard); statistics estimated per tile",
                (Param("method", str, "macenko", choices=("macenko", "reinhard")),),
                citation="Macenko et al., ISBI 2009; Reinhard et al., IEEE CG&A 2001"),
    DefenceSpec("resize-pad", "input-restoration", "randomised", "resize_pad", "input-transformations",
                "random resizing (shrink) and random padding back to the tile's size",
                (Param("min_scale", float, 0.85, 0.5, 1.0, help="smallest scale drawn (uniform in [min_scale, 1])"),),
                randomised=True, citation="Xie et al., ICLR 2018; broken by Athalye et al., ICML 2018 (EOT)"),
    DefenceSpec("feature-squeeze", "detection", "detection", "squeeze_scores", "adversarial-example-detection",
                "feature-squeezing detector: flags a tile whose softmax moves (max L1) under bit-depth reduction or a "
                "median filter by more than a threshold set on clean tiles",
                (Param("bits", int, 5, 1, 7, help="bits kept per channel by the bit-depth squeezer"),
                 Param("size", int, 2, 2, 9, help="median filter window side"),
                 Param("fpr", float, 0.05, 0.001, 0.5, help="false-positive rate on clean tiles the threshold is set for")),
                differentiable=False, citation="Xu, Evans & Qi, NDSS 2018"),
    DefenceSpec("input-quality", "detection", "detection", "quality_features", "input-quality-control",
                "input-quality / out-of-distribution check: energy score, optical density per channel and fine detail (focus), each "
                "robustly standardised on clean tiles; flags the largest |z| above a threshold set on clean tiles",
                (Param("fpr", float, 0.05, 0.001, 0.5, help="false-positive rate on clean tiles the threshold is set for"),),
                citation="Liu et al., NeurIPS 2020 (energy score); Hendrycks & Gimpel, ICLR 2017"),
)}

DETECTORS = tuple(name for name, s in SPECS.items() if s.kind == "detection")


def spec(name: str) -> DefenceSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise DefenceError(f"--defence {name}: unknown defence; known: {', '.join(sorted(SPECS))}") from None


def parse(text: str) -> tuple[DefenceSpec, dict[str, Any]]:
    """``NAME[:key=value,...]`` -> (spec, every parameter with its default filled in), or a DefenceError."""
    name, _, rest = text.strip().partition(":")
    s = spec(name.strip())
    where = f"--defence {text.strip()}"
    params = s.defaults()
    known = {p.name: p for p in s.params}
    for pair in [p for p in rest.split(",") if p.strip()] if rest else []:
        key, sep, raw = (part.strip() for part in pair.partition("="))
        if not sep:
            raise DefenceError(f"{where}: expected key=value, got {pair.strip()!r}")
        if key not in known:
            takes = ", ".join(sorted(known)) or "no parameters"
            raise DefenceError(f"{where}: unknown parameter {key!r}; {s.name} takes {takes}")
        params[key] = known[key].parse(raw, where)
    return s, params


def parse_all(texts: list[str] | None) -> list[tuple[DefenceSpec, dict[str, Any]]]:
    """Every ``--defence``, in order (the chain applies them in that order); all problems at once."""
    out, errors = [], []
    for t in texts or []:
        try:
            out.append(parse(t))
        except DefenceError as exc:
            errors.append(str(exc))
    if errors:
        raise DefenceError("; ".join(errors))
    return out


def chain_label(chain: list[tuple[DefenceSpec, dict[str, Any]]]) -> str:
    """A readable, canonical name of a chain: ``stain-norm(method=macenko) -> jpeg(quality=75)``."""
    return " -> ".join(f"{s.name}(" + ",".join(f"{k}={v}" for k, v in sorted(p.items())) + ")" for s, p in chain)
