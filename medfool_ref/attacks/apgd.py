"""APGD: Auto-PGD, a step-size-free PGD for reliable robustness evaluation.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020. PGD with momentum (0.75) whose step size starts at 2 eps and
halves at checkpoints (at 22%, then ever closer fractions of the budget) when the loss has stopped
rising often enough (condition 1: fewer than rho of the steps since the last checkpoint raised
it) or has not improved since the last checkpoint without a halving then (condition 2); on a
halving the iterate restarts from the best point so far. Losses: cross-entropy, or the
difference-of-logits ratio (DLR), which is invariant to the logits' scale, and its targeted form.
With ``targets`` = k > 0 it is APGD-T: the targeted DLR version against each of the k classes with
the highest clean logits after the label, in turn, on the samples not fooled yet (success is then
any misclassification: it is an untargeted evaluation). Every sample of the batch has its own step size and best point; samples that are
fooled leave the active set (sample-wise early stopping).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from ._core import AttackResult, CountingModel, Progress, check_choice, check_int, check_positive, confirmed, finish, prepare, seeded_generator

NORMS = ("linf", "l2")
LOSSES = ("ce", "dlr")


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD may halve its step size: ceil(p_j * steps) with p_0 = 0, p_1 = 0.22 and
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({min(math.ceil(v * steps), steps) for v in p[1:]})


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Per-sample DLR loss to be maximised; needs 3 classes (4 when targeted)."""
    z = logits.float()
    srt = z.sort(dim=1, descending=True).values
    zy = z.gather(1, labels[:, None])[:, 0]
    if target is None:
        others = z.scatter(1, labels[:, None], float("-inf")).amax(1)
        return -(zy - others) / (srt[:, 0] - srt[:, 2] + 1e-12)
    zt = z.gather(1, target[:, None])[:, 0]
    return -(zy - zt) / (srt[:, 0] - (srt[:, 2] + srt[:, 3]) / 2 + 1e-12)


def _loss(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None, kind: str) -> torch.Tensor:
    if kind == "dlr":
        return dlr_loss(logits, y, t)
    if t is not None:
        return -F.cross_entropy(logits, t, reduction="none")
    return F.cross_entropy(logits, y, reduction="none")


def _project(x: torch.Tensor, adv: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    d = adv - x
    n = d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (x + d * (eps / n).clamp(max=1.0)).clamp(0, 1)


def _step(grad: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return grad.sign()
    return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


def _run(counted: CountingModel, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None, *, norm: str, eps: float,
         steps: int, loss: str, rho: float, momentum: float, start: torch.Tensor, early_stop: bool,
         progress: Progress | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The APGD iteration on a batch; returns the adversarial (fooling where found, else the best-loss point), success, iterations."""
    b = x.shape[0]

    def value_and_grad(xa: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xa = xa.detach().requires_grad_(True)
        logits = counted(xa)
        li = _loss(logits, y[idx], None if t is None else t[idx], loss)
        g = counted.grad(li.sum(), xa)
        pred = logits.detach().argmax(1)
        ok = pred == t[idx] if t is not None else pred != y[idx]
        return li.detach(), g, confirmed(counted, xa, ok, y[idx], None if t is None else t[idx])

    everyone = torch.arange(b, device=x.device)
    adv = start.clone()
    cur_loss, grad, ok = value_and_grad(adv, everyone)
    found = ok.clone()
    out = adv.clone()
    best_x, best_loss, best_grad = adv.clone(), cur_loss.clone(), grad.clone()
    step = torch.full((b,), 2 * eps, device=x.device)
    prev = adv.clone()
    rises = torch.zeros(b, device=x.device)
    last_best = best_loss.clone()
    halved_last = torch.zeros(b, dtype=torch.bool, device=x.device)
    marks = checkpoints(steps)
    since = 0
    iterations = 0
    for i in range(steps):
        active = (~found).nonzero().squeeze(1) if early_stop else everyone
        if active.numel() == 0:
            break
        iterations = i + 1
        a, s = adv[active], step[active].view(-1, 1, 1, 1)
        z = _project(x[active], a + s * _step(grad[active], norm), eps, norm)
        w = momentum if i > 0 else 1.0
        new = _project(x[active], a + w * (z - a) + (1 - w) * (a - prev[active]), eps, norm)
        prev[active] = a
        adv[active] = new
        li, g, ok_now = value_and_grad(new, active)
        grad[active] = g
        rises[active] += (li > cur_loss[active]).float()
        cur_loss[active] = li
        hit = active[ok_now]
        out[hit] = new[ok_now]
        found[hit] = True
        better = li > best_loss[active]
        upd = active[better]
        best_x[upd], best_loss[upd], best_grad[upd] = new[better], li[better], g[better]
        since += 1
        if i + 1 in marks:  # a checkpoint: halve the step where progress stalled, and restart there from the best point
            cond1 = rises < rho * since
            cond2 = ~halved_last & (best_loss <= last_best)
            halve = (cond1 | cond2) & ~found
            step[halve] /= 2
            adv[halve], grad[halve] = best_x[halve], best_grad[halve]
            halved_last, last_best = halve, best_loss.clone()
            rises.zero_()
            since = 0
        if progress is not None:
            progress(i + 1, steps)
    out[~found] = best_x[~found]
    return out.detach(), found, iterations


def apgd(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
         target: int | torch.Tensor | None = None, norm: str = "linf", eps: float = 8 / 255, steps: int = 100,
         loss: str = "ce", targets: int = 0, rho: float = 0.75, momentum: float = 0.75, random_start: bool = True,
         early_stop: bool = True, seed: int | None = 0, progress: Progress | None = None) -> AttackResult:
    """APGD with cross-entropy (APGD-CE) or DLR loss, untargeted or towards ``target``; ``targets`` > 0: APGD-T."""
    check_int("targets", targets, low=0, high=10_000)
    if targets:
        if target is not None or loss != "dlr":
            raise ValueError("targets > 0 runs APGD-T (targeted DLR towards the top classes in turn): it needs loss='dlr' and no target")
        return _apgd_t(model, images, labels, norm=norm, eps=eps, steps=steps, targets=targets, rho=rho, momentum=momentum,
                       seed=seed, progress=progress)
    check_choice("norm", norm, NORMS)
    check_choice("loss", loss, LOSSES)
    check_positive("eps", eps, upper=1.0 if norm == "linf" else None)
    check_int("steps", steps, low=1, high=100_000)
    check_positive("rho", rho, upper=1.0)
    check_positive("momentum", momentum, upper=1.0)
    started = time.perf_counter()
    counted, x, y, t, logits0, _ = prepare(model, images, labels, target)
    need = 3 + (t is not None)
    if loss == "dlr" and logits0.shape[1] < need:
        raise ValueError(f"the DLR loss needs at least {need} classes; this model has {logits0.shape[1]} (use loss='ce')")
    start = x.clone()
    if random_start:
        gen = seeded_generator(seed, x.device)
        noise = torch.rand(x.shape, device=x.device, generator=gen) * 2 - 1
        if norm == "linf":
            start = _project(x, x + eps * noise, eps, norm)
        else:
            start = _project(x, x + eps * _step(noise, "l2") * 0.5, eps, norm)
    adv, _, iterations = _run(counted, x, y, t, norm=norm, eps=eps, steps=steps, loss=loss, rho=rho, momentum=momentum,
                              start=start, early_stop=early_stop, progress=progress)
    params = {"norm": norm, "eps": eps, "steps": steps, "loss": loss, "targets": 0, "rho": rho, "momentum": momentum,
              "random_start": random_start, "early_stop": early_stop, "seed": seed, "targeted": t is not None}
    return finish("apgd", counted, x, adv, y, t, logits0, iterations, started, params)


def _apgd_t(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, *, norm: str, eps: float, steps: int,
            targets: int, rho: float, momentum: float, seed: int | None, progress: Progress | None) -> AttackResult:
    """APGD-T: targeted-DLR APGD towards the top ``targets`` competing classes in turn."""
    check_choice("norm", norm, NORMS)
    check_positive("eps", eps, upper=1.0 if norm == "linf" else None)
    check_int("steps", steps, low=1, high=100_000)
    started = time.perf_counter()
    counted, x, y, _, logits0, _ = prepare(model, images, labels, None)
    k = min(targets, logits0.shape[1] - 1)
    if logits0.shape[1] < 4:
        raise ValueError(f"APGD-T's targeted DLR loss needs at least 4 classes; this model has {logits0.shape[1]}")
    order = logits0.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)
    adv = x.clone()
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    iterations = 0
    gen = seeded_generator(seed, x.device)
    for rank in range(k):
        idx = (~fooled).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        xs, ys, ts = x[idx], y[idx], order[idx, rank]
        noise = torch.rand(xs.shape, device=x.device, generator=gen) * 2 - 1
        start = _project(xs, xs + eps * (noise if norm == "linf" else _step(noise, "l2") * 0.5), eps, norm)
        a, _, it = _run(counted, xs, ys, ts, norm=norm, eps=eps, steps=steps, loss="dlr", rho=rho, momentum=momentum,
                        start=start, early_stop=True, progress=progress)
        iterations += it
        with torch.no_grad():
            ok = counted(a).argmax(1) != ys  # any wrong class counts, whichever target led there
        adv[idx[ok]] = a[ok]
        fooled[idx[ok]] = True
        still = idx[~ok]
        adv[still] = a[~ok]  # keep the last attempt's best point for the rest
    params = {"norm": norm, "eps": eps, "steps": steps, "loss": "dlr", "targets": k, "rho": rho, "momentum": momentum,
              "seed": seed, "targeted": False}
    return finish("apgd", counted, x, adv, y, None, logits0, iterations, started, params)
