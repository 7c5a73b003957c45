"""Adversarial stain perturbation: the worst H&E staining within a stated plausible range.

After Hong, "Physics-Grounded Adversarial Stain Augmentation with Calibrated Coverage Guarantees" (MIDL 2026), which
searches Macenko stain parameters for the worst case inside a budget. Here the tile is decomposed into haematoxylin,
eosin and residual (DAB) concentrations with Ruifrok & Johnston's fixed HED matrix (Beer-Lambert optical density,
differentiable in torch), and rebuilt from perturbed stains: each of the H and E colour vectors turned by at most
``max_angle_deg`` (its components kept non-negative: still a stain colour), each concentration scaled within
``1 +- max_scale`` and shifted within ``+- max_shift`` optical density. The parameters of every tile are optimised
together by projected signed-gradient ascent on the loss (white-box); the baseline draws the same number of random
stains from the same range per tile (one model query each) and counts a tile fooled if any draw fools it.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from ._core import AttackResult, CountingModel, Progress, check_int, check_positive, finish, prepare, seeded_generator
from ._search import random_search
from .transforms import _HED_FROM_RGB, _RGB_FROM_HED

MAX_ANGLE_DEG = 30.0  # upper limit of the accepted range for max_angle_deg
MAX_SCALE = 0.9
MAX_SHIFT = 0.5


def _basis(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two unit vectors orthogonal to ``v`` and to each other."""
    a = torch.tensor([0.0, 0.0, 1.0], dtype=v.dtype) if abs(float(v[2])) < 0.9 else torch.tensor([1.0, 0.0, 0.0], dtype=v.dtype)
    e1 = torch.linalg.cross(v, a)
    e1 = e1 / e1.norm()
    return e1, torch.linalg.cross(v, e1)


def stain_vectors(tau: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) stain matrices (rows H, E, DAB; unit, non-negative) with H and E turned by the tangent vectors
    ``tau`` (N, 2, 2) in radians: |tau| is the angle, its direction the way it turns."""
    base = _RGB_FROM_HED.to(tau)
    rows = []
    for k in range(2):
        v = base[k]
        e1, e2 = _basis(v.double().cpu())
        e1, e2 = e1.to(tau), e2.to(tau)
        t = tau[:, k]
        r = (t.pow(2).sum(1, keepdim=True) + 1e-12).sqrt()
        w = torch.cos(r) * v + torch.sin(r) / r * (t[:, :1] * e1 + t[:, 1:] * e2)
        w = w.clamp_min(0)  # a stain absorbs: no negative optical density (this only shrinks the angle to v)
        rows.append(w / w.norm(dim=1, keepdim=True))
    return torch.stack([rows[0], rows[1], base[2].expand_as(rows[0])], dim=1)


def restain(x: torch.Tensor, tau: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rebuild tiles from their HED concentrations with perturbed stains; zero parameters give the tile back."""
    od = -torch.log(x.clamp(min=1e-3))
    conc = torch.einsum("nchw,cd->ndhw", od, _HED_FROM_RGB.to(x))
    s = torch.cat([scale, torch.ones_like(scale[:, :1])], 1)[:, :, None, None]
    b = torch.cat([shift, torch.zeros_like(shift[:, :1])], 1)[:, :, None, None]
    od2 = torch.einsum("ndhw,nde->nehw", conc * s + b, stain_vectors(tau))
    return torch.exp(-od2).clamp(0, 1)


def angles_deg(tau: torch.Tensor) -> torch.Tensor:
    """(N, 2) angle in degrees between each perturbed H and E vector and Ruifrok & Johnston's."""
    m = stain_vectors(tau)
    base = _RGB_FROM_HED.to(tau)[:2]
    cos = (m[:, :2] * base).sum(-1).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


def _project(tau: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, a: float, s: float, b: float
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r = tau.norm(dim=2, keepdim=True).clamp_min(1e-12)
    return tau * (a / r).clamp(max=1.0), scale.clamp(1 - s, 1 + s), shift.clamp(-b, b)


def _from_unit(p: torch.Tensor, a: float, s: float, b: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit-cube parameters (N, 8) -> (tau, scale, shift) in range: angle a*u, direction 2*pi*u, scale and shift uniform."""
    r, phi = p[:, [0, 2]] * a, p[:, [1, 3]] * (2 * math.pi)
    tau = torch.stack([r * torch.cos(phi), r * torch.sin(phi)], dim=2)
    return tau, 1 + (p[:, 4:6] * 2 - 1) * s, (p[:, 6:8] * 2 - 1) * b


def stain_perturbation(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                       target: int | torch.Tensor | None = None, max_angle_deg: float = 8.0, max_scale: float = 0.2,
                       max_shift: float = 0.05, steps: int = 10, step_fraction: float = 0.25, seed: int | None = 0,
                       baseline: bool = True, progress: Progress | None = None) -> AttackResult:
    """Projected signed-gradient search over H&E stain vectors and concentrations (per tile, batched).

    Bounds: each of H and E turned by at most ``max_angle_deg`` degrees; concentrations scaled by at most
    ``1 +- max_scale`` and shifted by at most ``+- max_shift`` OD. Each step moves every parameter by
    ``step_fraction`` of its range. ``baseline``: also score ``steps`` random stains per tile from the same range.
    """
    check_positive("max_angle_deg", max_angle_deg, upper=MAX_ANGLE_DEG, allow_zero=True)
    check_positive("max_scale", max_scale, upper=MAX_SCALE, allow_zero=True)
    check_positive("max_shift", max_shift, upper=MAX_SHIFT, allow_zero=True)
    if max_angle_deg == max_scale == max_shift == 0:
        raise ValueError("max_angle_deg, max_scale and max_shift are all 0: there is no stain range to search")
    check_int("steps", steps, low=1, high=10_000)
    check_positive("step_fraction", step_fraction, upper=1.0)
    started = time.perf_counter()
    counted, x, y, t, logits0, _ = prepare(model, images, labels, target)
    a = math.radians(max_angle_deg)
    gen = seeded_generator(seed, x.device)
    n = x.shape[0]
    tau, scale, shift = _from_unit(torch.rand(n, 8, device=x.device, generator=gen), a, max_scale, max_shift)  # random start
    sign = -1.0 if t is not None else 1.0
    goal = t if t is not None else y
    best = [tau, scale, shift]
    best_loss = torch.full((n,), float("-inf"), device=x.device)
    for i in range(steps):
        params = [p.detach().requires_grad_(True) for p in (tau, scale, shift)]
        logits = counted(restain(x, *params))
        loss = sign * F.cross_entropy(logits, goal, reduction="none")
        better = loss.detach() > best_loss  # keep each tile's best stain seen (the last step need not be)
        best = [torch.where(better.view(-1, *[1] * (p.ndim - 1)), p.detach(), q) for p, q in zip(params, best)]
        best_loss = torch.where(better, loss.detach(), best_loss)
        counted.backward_calls += 1
        counted.backward_images += n
        grads = torch.autograd.grad(loss.sum(), params)
        tau = params[0] + step_fraction * a * grads[0].sign()
        scale = params[1] + step_fraction * 2 * max_scale * grads[1].sign()
        shift = params[2] + step_fraction * 2 * max_shift * grads[2].sign()
        tau, scale, shift = _project(tau.detach(), scale.detach(), shift.detach(), a, max_scale, max_shift)
        if progress is not None:
            progress(i + 1, steps)
    tau, scale, shift = best
    with torch.no_grad():
        adv = restain(x, tau, scale, shift)
    ang = angles_deg(tau)
    extra: dict[str, object] = {"angle_h_deg": ang[:, 0], "angle_e_deg": ang[:, 1], "scale_h": scale[:, 0], "scale_e": scale[:, 1],
                                "shift_h": shift[:, 0], "shift_e": shift[:, 1]}
    if baseline:
        extra.update(_baseline(model, x, y, t, steps, seed, a, max_scale, max_shift))
    params = {"max_angle_deg": max_angle_deg, "max_scale": max_scale, "max_shift": max_shift, "steps": steps,
              "step_fraction": step_fraction, "seed": seed, "targeted": t is not None}
    return finish("adversarial-stain-perturbation", counted, x, adv, y, t, logits0, steps, started, params, extra)


def _baseline(model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None, draws: int, seed: int | None,
              a: float, s: float, b: float) -> dict[str, object]:
    gen = seeded_generator((seed or 0) + 7919, x.device)
    counted = CountingModel(model)
    _, best_m, frac = random_search(counted, x, y, t, lambda xs, p: restain(xs, *_from_unit(p, a, s, b)), 8, draws, gen)
    return {"random_baseline_success": (best_m < 0).float(), "random_draw_success": frac,
            "baseline_forward_images": counted.forward_images}
