"""Gradient shielding: PGD that perturbs only the pixels the model is most sensitive to.

Gu et al., "Gradient Shielding: Towards Understanding Vulnerability of Deep Neural Networks", IEEE Transactions on
Network Science and Engineering 8(2), 2021: gradients from insensitive regions are masked out, so the perturbation
stays in the key regions (adaptive gradient shielding). Here the mask is the ``area`` share of pixels with the largest
input-gradient magnitude (summed over channels) at the clean tile; with ``refresh`` it is recomputed from each step's
gradient, the pixels once chosen staying in. Inside the mask, L-inf PGD with budget ``eps``. Comparisons in the same
call: the same masked PGD on a random mask of the same size (does saliency matter?) and, with ``compare_pgd``, plain PGD
at the same budget and steps, also from the clean tile (what the shielding costs in success and saves in changed pixels, L0).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from ._core import AttackResult, CountingModel, Progress, check_int, check_positive, finish, is_success, prepare, seeded_generator
from .gradient import pgd


def _top(score: torch.Tensor, k: int) -> torch.Tensor:
    """(N, 1, H, W) mask of the ``k`` largest entries of ``score`` (N, H, W) per image."""
    flat = score.flatten(1)
    mask = torch.zeros_like(flat)
    mask.scatter_(1, flat.topk(k, dim=1).indices, 1.0)
    return mask.view(score.shape)[:, None]


def _masked_pgd(counted: CountingModel, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None, mask: torch.Tensor | None,
                k: int, eps: float, steps: int, step_size: float, refresh: bool,
                progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """L-inf PGD from the clean tile inside ``mask`` (None: the saliency mask of the first gradient); a tile that fools
    is frozen."""
    goal = t if t is not None else y
    sign = -1.0 if t is not None else 1.0
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    adv = x.clone()
    done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for i in range(steps):
        xa = adv.detach().requires_grad_(True)
        logits = counted(xa)
        done = done | is_success(logits.argmax(1).detach(), y, t)
        g = counted.grad(F.cross_entropy(logits, goal, reduction="sum"), xa)
        if mask is None:  # the saliency of the clean tile
            mask = _top(g.abs().sum(1), k)
        elif refresh:  # adaptive: the pixels salient now join the mask
            mask = torch.maximum(mask, _top(g.abs().sum(1), k))
        step = torch.clamp(xa.detach() + sign * step_size * g.sign() * mask, lo, hi)
        adv = torch.where(done.view(-1, 1, 1, 1), adv, step)
        if progress is not None:
            progress(i + 1, steps)
    return adv.detach(), mask


def gradient_shielding(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                       target: int | torch.Tensor | None = None, eps: float = 8 / 255, area: float = 0.1, steps: int = 10,
                       step_size: float | None = None, refresh: bool = False, seed: int | None = 0, baseline: bool = True,
                       compare_pgd: bool = True, progress: Progress | None = None) -> AttackResult:
    """L-inf PGD restricted to the ``area`` share of pixels with the largest input gradient (at most that many change)."""
    check_positive("eps", eps, upper=1.0)
    check_positive("area", area, upper=1.0)
    check_int("steps", steps, low=1, high=100_000)
    if step_size is None:
        step_size = 2.5 * eps / steps
    check_positive("step_size", step_size)
    started = time.perf_counter()
    counted, x, y, t, logits0, _ = prepare(model, images, labels, target)
    k = max(1, round(area * x.shape[-1] * x.shape[-2]))
    adv, _ = _masked_pgd(counted, x, y, t, None, k, eps, steps, step_size, refresh, progress)
    extra: dict[str, object] = {"mask_pixels": k}
    if baseline:  # the same loop on a random mask of the same size
        bc = CountingModel(model)
        gen = seeded_generator((seed or 0) + 7919, x.device)
        rand_mask = _top(torch.rand(x.shape[0], *x.shape[-2:], device=x.device, generator=gen), k)
        b_adv, _ = _masked_pgd(bc, x, y, t, rand_mask, k, eps, steps, step_size, False)
        with torch.no_grad():
            extra["random_baseline_success"] = is_success(model(b_adv).argmax(1), y, t).float()
    if compare_pgd:
        r = pgd(model, x, y, target=t, eps=eps, steps=steps, step_size=step_size, random_start=False)
        extra["pgd_success"] = r.success.float()
        extra["pgd_l0"] = r.l0.float()
    params = {"eps": eps, "area": area, "steps": steps, "step_size": step_size, "refresh": refresh, "seed": seed,
              "targeted": t is not None}
    return finish("gradient-shielding", counted, x, adv, y, t, logits0, steps, started, params, extra)
