"""FGSM and PGD: the gradient attacks used by the medical papers the survey cites.

FGSM: Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015.
PGD: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018
(used by Finlayson et al. 2018 on fundoscopy, chest X-ray and dermoscopy). Both work in the L-inf
or L2 ball, untargeted (raise the loss of the label) or targeted (lower the loss of the target).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from ._core import AttackResult, Progress, check_choice, check_int, check_positive, finish, is_success, prepare, seeded_generator

NORMS = ("linf", "l2")


def _direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return grad.sign()
    flat = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    return grad / flat.view(-1, 1, 1, 1)


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    n = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    return delta * (eps / n).clamp(max=1.0).view(-1, 1, 1, 1)


def fgsm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
         target: int | torch.Tensor | None = None, eps: float = 8 / 255, norm: str = "linf") -> AttackResult:
    """One signed-gradient step of size ``eps`` (L2: one normalised-gradient step of length ``eps``)."""
    check_positive("eps", eps, upper=1.0 if norm == "linf" else None)
    check_choice("norm", norm, NORMS)
    started = time.perf_counter()
    counted, x, y, t, logits0, _ = prepare(model, images, labels, target)
    xa = x.clone().requires_grad_(True)
    goal = t if t is not None else y
    loss = F.cross_entropy(counted(xa), goal, reduction="sum")
    g = counted.grad(loss, xa)
    sign = -1.0 if t is not None else 1.0
    adv = (x + sign * eps * _direction(g, norm)).clamp(0, 1).detach()
    if norm == "l2":
        adv = (x + _project(adv - x, eps, norm)).clamp(0, 1)
    params = {"eps": eps, "norm": norm, "targeted": t is not None}
    return finish("fgsm", counted, x, adv, y, t, logits0, 1, started, params)


def pgd(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
        target: int | torch.Tensor | None = None, norm: str = "linf", eps: float = 8 / 255,
        step_size: float | None = None, steps: int = 10, random_start: bool = True, early_stop: bool = True,
        seed: int | None = 0, progress: Progress | None = None) -> AttackResult:
    """Projected gradient descent from an optional random start, with sample-wise early stopping.

    ``step_size`` defaults to 2.5 * eps / steps (Madry et al.). With ``early_stop`` a sample is
    frozen as soon as it fools the model and dropped from later forward/backward passes.
    """
    check_choice("norm", norm, NORMS)
    check_positive("eps", eps, upper=1.0 if norm == "linf" else None)
    check_int("steps", steps, low=1, high=100_000)
    if step_size is None:
        step_size = 2.5 * eps / steps
    check_positive("step_size", step_size)
    started = time.perf_counter()
    counted, x, y, t, logits0, _ = prepare(model, images, labels, target)
    gen = seeded_generator(seed, x.device)
    b = x.shape[0]
    if random_start:
        if norm == "linf":
            delta = (torch.rand(x.shape, device=x.device, generator=gen) * 2 - 1) * eps
        else:
            direction = torch.randn(x.shape, device=x.device, generator=gen)
            radius = torch.rand(b, device=x.device, generator=gen).view(-1, 1, 1, 1) * eps
            delta = _direction(direction, "l2") * radius
        delta = (x + delta).clamp(0, 1) - x
    else:
        delta = torch.zeros_like(x)
    goal = t if t is not None else y
    sign = -1.0 if t is not None else 1.0
    active = torch.arange(b, device=x.device)
    iterations = 0
    for i in range(steps):
        if active.numel() == 0:
            break
        iterations = i + 1
        xa = (x[active] + delta[active]).requires_grad_(True)
        logits = counted(xa)
        if early_stop:
            done = is_success(logits.argmax(1), y[active], t[active] if t is not None else None)
            if bool(done.all()):
                active = active[:0]
                break
        loss = F.cross_entropy(logits, goal[active], reduction="sum")
        g = counted.grad(loss, xa)
        step = delta[active] + sign * step_size * _direction(g, norm)
        step = _project(step, eps, norm)
        step = (x[active] + step).clamp(0, 1) - x[active]
        if early_stop:
            keep = ~done
            delta[active[keep]] = step[keep].detach()
            active = active[keep]
        else:
            delta[active] = step.detach()
        if progress is not None:
            progress(i + 1, steps)
    adv = (x + delta).clamp(0, 1).detach()
    params = {"eps": eps, "norm": norm, "steps": steps, "step_size": step_size, "random_start": random_start,
              "early_stop": early_stop, "seed": seed, "targeted": t is not None}
    return finish("pgd", counted, x, adv, y, t, logits0, iterations, started, params)
