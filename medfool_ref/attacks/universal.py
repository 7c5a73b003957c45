"""Universal perturbations: one pattern, computed once on some tiles, added unchanged to any other tile.

- ``uap``: Moosavi-Dezfooli, Fawzi, Fawzi & Frossard, "Universal adversarial perturbations", CVPR 2017, in the
  batched stochastic-gradient form of Shafahi, Najibi, Xu, Dickerson, Davis & Goldstein, "Universal adversarial
  training", AAAI 2020: signed gradient ascent on the clipped cross-entropy of the whole support batch, the pattern
  projected onto the L-inf ball after each step (one pattern shared by all classes).
- ``common_noise``: one such pattern per class, each computed on that class's support tiles (the survey's
  "common adversarial noise"); a tile receives the pattern of its own class.
- ``utap``: no labels: the pattern maximises the relative distortion of the model's penultimate features
  (the input of its last linear layer), as UTAP does against pathology foundation-model encoders.

A pattern has the support tiles' size; a tile of another size receives it tiled periodically and cropped
(:func:`fit`). Success on the support tiles is a training figure: :func:`evaluate` measures a pattern on other
tiles beside a random sign pattern of the same L-inf norm (whose L2 norm is never smaller).
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._core import AttackResult, CountingModel, Progress, check_int, check_positive, finish, is_success, prepare, seeded_generator

OBJECTIVES = ("classifier", "features")


def fit(delta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A pattern (..., C, H0, W0) repeated periodically and cropped to (..., C, h, w)."""
    h0, w0 = delta.shape[-2:]
    reps = [1] * (delta.ndim - 2) + [-(-h // h0), -(-w // w0)]
    return delta.repeat(*reps)[..., :h, :w]


def apply(images: torch.Tensor, delta: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
    """Add a pattern (C, H, W) or one pattern per class (K, C, H, W, picked by ``classes``) and clip to [0, 1]."""
    d = fit(delta, *images.shape[-2:]).to(images)
    if d.ndim == 4:
        d = d[classes]
    return (images + d).clamp(0, 1)


class _Features(nn.Module):
    """The input of the model's last linear layer (its penultimate features), read by a forward hook."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("the features objective needs a model whose last layer is nn.Linear")
        self.model, self.last = model, linears[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen: list[torch.Tensor] = []
        handle = self.last.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        return seen[-1].flatten(1)


def compute(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float, steps: int, step_size: float,
            objective: str, per_class: int, target: torch.Tensor | None, clip_loss: float, seed: int | None,
            counted: CountingModel, progress: Progress | None = None) -> torch.Tensor:
    """The pattern (C, H, W), or (per_class, C, H, W) patterns, by signed gradient steps on the support batch."""
    gen = seeded_generator(seed, images.device)
    shape = ((per_class,) if per_class else ()) + tuple(images.shape[1:])
    delta = ((torch.rand(shape, device=images.device, generator=gen) * 2 - 1) * eps * 0.5).requires_grad_(True)
    feats = _Features(counted) if objective == "features" else None
    if feats is not None:
        with torch.no_grad():
            clean = feats(images)
        scale = clean.norm(dim=1).clamp_min(1e-6)
    for i in range(steps):
        d = delta[labels] if per_class else delta
        x = (images + d).clamp(0, 1)
        if feats is not None:  # maximise the relative feature distortion (no labels)
            loss = ((feats(x) - clean).norm(dim=1) / scale).mean()
        elif target is not None:  # minimise the target's loss
            loss = -F.cross_entropy(counted(x), target, reduction="none").mean()
        else:  # clipped so that tiles already fooled stop dominating the step
            loss = F.cross_entropy(counted(x), labels, reduction="none").clamp(max=clip_loss).mean()
        (g,) = torch.autograd.grad(loss, delta)
        counted.backward_calls += 1
        counted.backward_images += images.shape[0]
        with torch.no_grad():
            delta += step_size * g.sign()
            delta.clamp_(-eps, eps)
        if progress is not None:
            progress(i + 1, steps)
    return delta.detach()


def _universal(name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, *, target: Any, eps: float,
               steps: int, step_size: float | None, objective: str, per_class: bool, clip_loss: float, seed: int | None,
               progress: Progress | None) -> AttackResult:
    check_positive("eps", eps, upper=1.0)
    check_int("steps", steps, low=1, high=100_000)
    check_positive("clip_loss", clip_loss, upper=1e6)
    if step_size is not None:
        check_positive("step_size", step_size, upper=1.0)
    started = time.perf_counter()
    counted, x, y, t, logits0, _ = prepare(model, images, labels, target)
    k = logits0.shape[1] if per_class else 0
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    delta = compute(counted, x, y, eps=eps, steps=steps, step_size=alpha, objective=objective, per_class=k, target=t,
                    clip_loss=clip_loss, seed=seed, counted=counted, progress=progress)
    adv = apply(x, delta, y if per_class else None)
    params = {"eps": eps, "steps": steps, "step_size": alpha, "objective": objective, "per_class": per_class,
              "seed": seed, "targeted": t is not None}
    result = finish(name, counted, x, adv, y, t, logits0, steps, started, params)
    result.extra["perturbation"] = delta
    result.extra["support_classes"] = sorted(set(y.tolist())) if per_class else None
    return result


def uap(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *, target: int | torch.Tensor | None = None,
        eps: float = 8 / 255, steps: int = 10, step_size: float | None = None, clip_loss: float = 10.0, seed: int | None = 0,
        progress: Progress | None = None) -> AttackResult:
    """One L-inf pattern for all tiles (SGD-UAP); the result's ``extra["perturbation"]`` holds it (C, H, W)."""
    return _universal("uap", model, images, labels, target=target, eps=eps, steps=steps,
                      step_size=step_size, objective="classifier", per_class=False, clip_loss=clip_loss, seed=seed,
                      progress=progress)


def common_noise(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *, eps: float = 8 / 255,
                 steps: int = 10, step_size: float | None = None, clip_loss: float = 10.0, seed: int | None = 0,
                 progress: Progress | None = None) -> AttackResult:
    """One L-inf pattern per class (K, C, H, W), each pushed by its class's tiles only; classes without support tiles
    keep their random start (tiles of those classes are reported apart by :func:`evaluate`)."""
    return _universal("common-noise", model, images, labels, target=None, eps=eps, steps=steps,
                      step_size=step_size, objective="classifier", per_class=True, clip_loss=clip_loss, seed=seed,
                      progress=progress)


def utap(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *, eps: float = 8 / 255,
         steps: int = 10, step_size: float | None = None, seed: int | None = 0, progress: Progress | None = None) -> AttackResult:
    """One L-inf pattern maximising the distortion of the penultimate features; labels are never used to compute it."""
    return _universal("utap", model, images, labels, target=None, eps=eps, steps=steps, step_size=step_size,
                      objective="features", per_class=False, clip_loss=10.0, seed=seed, progress=progress)


@torch.no_grad()
def random_pattern(delta: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
    """A random sign pattern of the same shape and L-inf norm (its L2 norm is the largest that L-inf allows)."""
    gen = seeded_generator(seed, delta.device)
    return (torch.randint(0, 2, delta.shape, device=delta.device, generator=gen).to(delta.dtype) * 2 - 1) * eps


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, delta: torch.Tensor, *, eps: float, seed: int = 0,
             target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-tile success of the pattern and of a random pattern of the same norm on (held-out) tiles.

    Per-class patterns are picked by ``labels``; a tile whose class had no support tiles is marked ``covered`` False.
    """
    per_class = delta.ndim == 4
    rand = random_pattern(delta, eps, seed)
    adv = apply(images, delta, labels if per_class else None)
    base = apply(images, rand, labels if per_class else None)
    pred_adv, pred_base = model(adv).argmax(1), model(base).argmax(1)
    return {"adversarial": adv, "random": base, "success": is_success(pred_adv, labels, target),
            "random_success": is_success(pred_base, labels, target)}
