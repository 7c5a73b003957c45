"""Adversarial training objectives for the one training loop (``train(..., loss_fn=...)``).

- PGD adversarial training (Madry et al., ICLR 2018): the loss on an L-inf PGD adversarial of each crop.
- TRADES (Zhang et al., ICML 2019): clean cross-entropy + beta * KL(f(x) || f(x')), x' maximising that KL.
- Adversarial stain augmentation, in the spirit of calibrated adversarial stain augmentation (CASA,
  hong2026physics): each crop's HED stain scale and shift pushed by signed-gradient ascent to the loss-maximising
  setting inside a fixed box (here +-``stain`` on the optical-density scales, as the loop's stain jitter; the
  paper calibrates the box from several hospitals' stains, which we do not have).

The inner attacks run with the model in eval mode (batch-norm statistics are not fed adversarial batches) and
draw their random starts from the loop's generator, so a run is deterministic and resumable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.transforms import stain_jitter

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
METHODS = ("pgd-at", "trades", "stain")


def _pgd(model: nn.Module, x: torch.Tensor, objective: Callable[[torch.Tensor], torch.Tensor], *, eps: float, steps: int,
         gen: torch.Generator, start: float) -> torch.Tensor:
    """L-inf PGD maximising ``objective(x_adv)`` (a summed loss), from a random start of size ``start``."""
    delta = (torch.rand(x.shape, device=x.device, generator=gen) * 2 - 1) * start
    step = 2.5 * eps / max(steps, 1)
    for _ in range(steps):
        delta.requires_grad_(True)
        g, = torch.autograd.grad(objective((x + delta).clamp(0, 1)), delta)
        delta = (delta.detach() + step * g.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1).detach()


def pgd_at_loss(*, eps: float, steps: int) -> LossFn:
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        model.eval()
        adv = _pgd(model, x, lambda z: F.cross_entropy(model(z), y, reduction="sum"), eps=eps, steps=steps, gen=gen, start=eps)
        model.train()
        return F.cross_entropy(model(adv), y)
    return loss


def trades_loss(*, eps: float, steps: int, beta: float = 6.0) -> LossFn:
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            p_clean = model(x).softmax(1)
        adv = _pgd(model, x, lambda z: F.kl_div(model(z).log_softmax(1), p_clean, reduction="sum"), eps=eps, steps=steps, gen=gen,
                   start=0.001)
        model.train()
        logits = model(x)
        robust = F.kl_div(model(adv).log_softmax(1), logits.softmax(1), reduction="batchmean")
        return F.cross_entropy(logits, y) + beta * robust
    return loss


def stain_loss(*, stain: float, steps: int) -> LossFn:
    """Cross-entropy on clean crops and on their worst-case stain inside the box (half each)."""
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        model.eval()
        scale = 1 + stain * (2 * torch.rand(b, 3, device=x.device, generator=gen) - 1)
        shift = 0.4 * stain * (2 * torch.rand(b, 3, device=x.device, generator=gen) - 1)
        for _ in range(steps):
            scale.requires_grad_(True)
            shift.requires_grad_(True)
            obj = F.cross_entropy(model(stain_jitter(x, scale, shift)), y, reduction="sum")
            gs, gb = torch.autograd.grad(obj, (scale, shift))
            scale = (scale.detach() + 0.5 * stain * gs.sign()).clamp(1 - stain, 1 + stain)
            shift = (shift.detach() + 0.2 * stain * gb.sign()).clamp(-0.4 * stain, 0.4 * stain)
        adv = stain_jitter(x, scale.detach(), shift.detach()).detach()
        model.train()
        return 0.5 * F.cross_entropy(model(x), y) + 0.5 * F.cross_entropy(model(adv), y)
    return loss


def objective(method: str, *, eps: float, steps: int, beta: float = 6.0, stain: float = 0.3) -> LossFn:
    if method == "pgd-at":
        return pgd_at_loss(eps=eps, steps=steps)
    if method == "trades":
        return trades_loss(eps=eps, steps=steps, beta=beta)
    if method == "stain":
        return stain_loss(stain=stain, steps=steps)
    raise ValueError(f"unknown hardening method {method!r}; known: {', '.join(METHODS)}")
