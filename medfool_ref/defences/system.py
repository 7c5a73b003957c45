"""The defended system: (model, defence chain) as one ``nn.Module`` taking [0, 1] tiles to logits.

Every pass without gradients (the clean pass, the attacks' checks, the scoring of each adversarial) is the
real system: the real transformations, one random draw each. The passes an attack differentiates depend on
``adaptive``:

- ``adaptive=False`` (the plain, non-adaptive evaluation): autograd through the real chain as it is, so
  rounding steps give zero gradients and a random step one draw: what a naive evaluation sees;
- ``adaptive=True`` (Athalye, Carlini & Wagner, ICML 2018): BPDA, the forward value of every
  non-differentiable step with the gradient of a differentiable stand-in (the identity, straight-through,
  or the spec's approximation), and EOT, ``draws`` random draws per tile in one batch whose log-probabilities
  are averaged (so cross-entropy on the output is the mean cross-entropy over draws).

Random draws come from a generator seeded by ``seed`` and the batch's content, so a unit is reproducible.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .specs import DefenceSpec


def straight_through(x: torch.Tensor, value: torch.Tensor, stand_in: torch.Tensor | None = None) -> torch.Tensor:
    """``value`` forward, the gradient of ``stand_in`` (default: the identity on ``x``) backward (BPDA)."""
    s = x if stand_in is None else stand_in
    return s + (value - s).detach()


class Defended(nn.Module):
    def __init__(self, model: nn.Module, chain: list[tuple[DefenceSpec, dict[str, Any]]], *, adaptive: bool = True,
                 draws: int = 8, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(draws, int) or draws < 1:
            raise ValueError(f"draws must be an integer >= 1; got {draws!r}")
        detectors = [s.name for s, _ in chain if s.kind == "detection"]
        if detectors:
            raise ValueError(f"{', '.join(detectors)}: a detector flags tiles, it does not transform them; "
                             "run it with medfool defend detect")
        self.model = model
        self.chain = [(s, dict(p)) for s, p in chain]
        self.adaptive = adaptive
        self.draws = draws
        self.seed = seed
        self.randomised = any(s.randomised for s, _ in self.chain)
        self.classes = getattr(model, "classes", None)
        # the attacks confirm an early stop with a pass without gradients (the real system) before freezing a tile
        self.approximate_gradients = bool(self.chain) or getattr(model, "approximate_gradients", False)

    def _generator(self, x: torch.Tensor) -> torch.Generator:
        g = torch.Generator(device=x.device)
        content = int(float(x.detach().double().sum()) * 1e4) % (2 ** 31)
        g.manual_seed(self.seed * 1_000_003 + content)
        return g

    def transform(self, x: torch.Tensor, *, bpda: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """The chain applied to ``x`` (bpda: real values forward, stand-in gradients backward)."""
        g = generator if generator is not None else self._generator(x)
        for s, p in self.chain:
            fn = s.function_object()
            if bpda and not s.differentiable:
                approx = s.approximation_object()
                with torch.no_grad():
                    value = fn(x, generator=g, **p)
                x = straight_through(x, value, None if approx is None else approx(x, **p))
            else:
                x = fn(x, generator=g, **p)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.chain:
            return self.model(x)
        if not torch.is_grad_enabled() or not self.adaptive:
            return self.model(self.transform(x))
        if not self.randomised:
            return self.model(self.transform(x, bpda=True))
        b = x.shape[0]
        many = x.repeat(self.draws, 1, 1, 1)  # every draw of every tile in one batch
        z = self.model(self.transform(many, bpda=True)).float().log_softmax(1)
        return z.view(self.draws, b, -1).mean(0)
