"""Robust adversarial examples by Expectation over Transformation (EOT).

Athalye, Engstrom, Ilyas & Kwok, "Synthesizing Robust Adversarial Examples", ICML 2018. PGD on
the loss averaged over a distribution of transformations (here: :mod:`.transforms`, a pathology-
plausible one), so that the perturbation keeps working after the tile is flipped, rotated,
rescaled, re-stained, blurred or noised. Each step makes one forward pass over B x T transformed
copies. Success is measured on fresh transformation draws (:func:`expected_success`).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from . import transforms as T
from ._core import AttackResult, Progress, check_int, check_positive, finish, prepare, seeded_generator
from .gradient import _project

HELD_OUT_SEED_OFFSET = 1_000_003


@torch.no_grad()
def expected_success(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, target: torch.Tensor | None = None,
                     draws: int = 32, seed: int = HELD_OUT_SEED_OFFSET, config: T.TransformConfig | None = None,
                     chunk: int = 256) -> torch.Tensor:
    """Per-image fraction of ``draws`` random transformations under which the model is fooled."""
    config = config or T.TransformConfig()
    gen = seeded_generator(seed, images.device)
    b = images.shape[0]
    rep = images.repeat_interleave(draws, 0)
    tb = T.sample(rep.shape[0], config, gen, images.device, tuple(images.shape[1:]))
    preds = []
    for start in range(0, rep.shape[0], chunk):
        part = T.TransformBatch(tb.theta[start:start + chunk], tb.stain_scale[start:start + chunk], tb.stain_shift[start:start + chunk],
                                tb.blur_sigma[start:start + chunk], tb.noise_std[start:start + chunk],
                                None if tb.noise is None else tb.noise[start:start + chunk], tb.identity, tb.geometric,
                                tb.stain, tb.blur)
        preds.append(model(T.apply(rep[start:start + chunk], part)).argmax(1))
    pred = torch.cat(preds).view(b, draws)
    goal = (target if target is not None else labels)[:, None]
    fooled = pred == goal if target is not None else pred != goal
    return fooled.float().mean(dim=1)


def eot(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
        target: int | torch.Tensor | None = None, eps: float = 8 / 255, steps: int = 10, samples: int = 8,
        step_size: float | None = None, random_start: bool = True, seed: int | None = 0,
        transforms: T.TransformConfig | None = None, eval_draws: int = 32, progress: Progress | None = None) -> AttackResult:
    """L-inf PGD on the expected loss over ``samples`` transformation draws per step."""
    check_positive("eps", eps, upper=1.0)
    check_int("steps", steps, low=1, high=100_000)
    check_int("samples", samples, low=1, high=4096)
    check_int("eval_draws", eval_draws, low=1, high=4096)
    if step_size is None:
        step_size = 2.5 * eps / steps
    check_positive("step_size", step_size)
    config = transforms or T.TransformConfig()
    started = time.perf_counter()
    counted, x, y, t, logits0, _ = prepare(model, images, labels, target)
    gen = seeded_generator(seed, x.device)
    tgen = seeded_generator((seed or 0) + 1, x.device)
    if random_start:
        delta = (torch.rand(x.shape, device=x.device, generator=gen) * 2 - 1) * eps
        delta = (x + delta).clamp(0, 1) - x
    else:
        delta = torch.zeros_like(x)
    goal = t if t is not None else y
    sign = -1.0 if t is not None else 1.0
    goal_rep = goal.repeat_interleave(samples)
    for i in range(steps):
        xa = (x + delta).requires_grad_(True)
        rep = xa.repeat_interleave(samples, 0) if samples > 1 else xa
        tb = T.sample(rep.shape[0], config, tgen, x.device, tuple(x.shape[1:]))
        logits = counted(T.apply(rep, tb))
        loss = F.cross_entropy(logits, goal_rep, reduction="sum") / samples
        g = counted.grad(loss, xa)
        step = delta + sign * step_size * g.sign()
        step = _project(step, eps, "linf")
        delta = ((x + step).clamp(0, 1) - x).detach()
        if progress is not None:
            progress(i + 1, steps)
    adv = (x + delta).clamp(0, 1).detach()
    params = {"eps": eps, "steps": steps, "samples": samples, "step_size": step_size, "random_start": random_start,
              "seed": seed, "targeted": t is not None, "eval_draws": eval_draws}
    result = finish("eot", counted, x, adv, y, t, logits0, steps, started, params)
    exp = expected_success(model, adv, y, target=t, draws=eval_draws, seed=(seed or 0) + HELD_OUT_SEED_OFFSET, config=config)
    result.extra["expected_success"] = exp
    result.extra["expected_success_mean"] = float(exp.mean())
    return result
