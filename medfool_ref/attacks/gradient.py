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

from ._core import (AttackResult, CountingModel, Progress, check_choice, check_classes, check_int, check_positive, confirmed, finish,
                    is_success, prepare, seeded_generator)

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
    held: dict[str, torch.Tensor] = {}

    def grad_forward(counted: CountingModel, x: torch.Tensor) -> torch.Tensor:
        held["xa"] = x.clone().requires_grad_(True)
        held["logits"] = counted(held["xa"])  # the one forward FGSM needs also gives the clean logits
        return held["logits"]

    counted, x, y, t, _, _ = prepare(model, images, labels, target, clean_logits=grad_forward)
    xa, logits = held["xa"], held["logits"]
    logits0 = logits.detach()
    goal = t if t is not None else y
    loss = F.cross_entropy(logits, goal, reduction="sum")
    g = counted.grad(loss, xa)
    sign = -1.0 if t is not None else 1.0
    adv = (x + sign * eps * _direction(g, norm)).clamp(0, 1).detach()
    if norm == "l2":
        adv = (x + _project(adv - x, eps, norm)).clamp(0, 1)
    params = {"eps": eps, "norm": norm, "targeted": t is not None}
    return finish("fgsm", counted, x, adv, y, t, logits0, 1, started, params)


def _pgd_linf(counted: CountingModel, x: torch.Tensor, adv: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None,
              goal: torch.Tensor, signed_step: float, eps: float, steps: int, early_stop: bool,
              progress: Progress | None) -> tuple[torch.Tensor, int]:
    """The L-inf loop on the adversarial batch itself, with the box [x - eps, x + eps] ∩ [0, 1] computed once.

    Only the still-active samples are carried (gathered again only when some finish), so a step
    costs one forward+backward and three elementwise operations.
    """
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    out = adv.clone()
    idx = torch.arange(x.shape[0], device=x.device)
    cur, cur_lo, cur_hi, cur_y, cur_goal = adv, lo, hi, y, goal
    cur_t = t
    iterations = 0
    for i in range(steps):
        if idx.numel() == 0:
            break
        iterations = i + 1
        xa = cur.detach().requires_grad_(True)
        logits = counted(xa)
        if i == 0:
            check_classes(logits, cur_y, cur_t)
        keep = None
        if early_stop:
            done = confirmed(counted, cur, is_success(logits.argmax(1), cur_y, cur_t), cur_y, cur_t)
            if bool(done.any()):
                out[idx[done]] = cur[done]  # frozen where it first fools the model
                keep = ~done
                if not bool(keep.any()):
                    idx = idx[:0]
                    break
        if keep is None:
            g = counted.grad(F.cross_entropy(logits, cur_goal, reduction="sum"), xa)
        else:  # the survivors' loss only; this step's backward still spans the batch it was computed on
            g = counted.grad(F.cross_entropy(logits[keep], cur_goal[keep], reduction="sum"), xa)[keep]
            xa = xa[keep]
            idx, cur_lo, cur_hi, cur_y, cur_goal = idx[keep], cur_lo[keep], cur_hi[keep], cur_y[keep], cur_goal[keep]
            cur_t = cur_t[keep] if cur_t is not None else None
        cur = torch.clamp(xa.detach() + signed_step * g.sign(), cur_lo, cur_hi)
        if progress is not None:
            progress(i + 1, steps)
    if idx.numel():
        out[idx] = cur
    return out.detach(), iterations


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
    counted, x, y, t, logits0, _ = prepare(model, images, labels, target, lazy_clean=True)  # no clean pass of its own
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
    if norm == "linf":
        adv, iterations = _pgd_linf(counted, x, (x + delta).detach(), y, t, goal, sign * step_size, eps, steps, early_stop, progress)
        delta = adv - x
    else:
        active = torch.arange(b, device=x.device)
        iterations = 0
        for i in range(steps):
            if active.numel() == 0:
                break
            iterations = i + 1
            xa = (x[active] + delta[active]).requires_grad_(True)
            logits = counted(xa)
            if i == 0:
                check_classes(logits, y, t)
            if early_stop:
                ta = t[active] if t is not None else None
                done = confirmed(counted, xa, is_success(logits.argmax(1), y[active], ta), y[active], ta)
                if bool(done.all()):
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
