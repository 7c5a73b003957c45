"""HopSkipJump: a label-only attack that walks along the decision boundary, L2 and L-inf.

Chen, Jordan & Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack", IEEE S&P 2020.
Only the top-1 label is used. Each tile starts from a random image the model already gets wrong, found by
uniform noise and brought to the boundary by binary search; each iteration estimates the boundary's normal
from the labels of random perturbations (Monte Carlo, with the paper's baseline), steps along it with a
geometrically shrunk step that keeps the tile adversarial, and searches back to the boundary. All tiles move
in lockstep, one query batch per phase; each tile's queries are counted exactly and a tile stops before any
phase its remaining budget cannot pay for, so the budget is never exceeded. The result is always adversarial
where a start was found: the measure is its distance to the clean tile (``l2`` / ``linf``) after the budget. Starts alternate between uniform
noise (the paper's) and flat colours, as the reference model calls every uniform-noise tile tumour.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from ._core import AttackResult, Progress, check_choice, check_int, check_positive, finish, prepare, seeded_generator
from .query import Queries


def _dist(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    d = (a - b).flatten(1)
    return d.norm(dim=1) if norm == "l2" else d.abs().amax(1)


def _blend(x: torch.Tensor, adv: torch.Tensor, alpha: torch.Tensor, norm: str) -> torch.Tensor:
    """The point a fraction ``alpha`` of the way from x to adv (L2: on the segment; L-inf: adv clipped to the box)."""
    a = alpha.view(-1, 1, 1, 1)
    if norm == "l2":
        return (1 - a) * x + a * adv
    return torch.minimum(torch.maximum(adv, x - a), x + a)


def hop_skip_jump(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                  target: int | torch.Tensor | None = None, norm: str = "l2", max_queries: int = 1000,
                  init_evals: int = 100, max_evals: int = 1000, gamma: float = 1.0, init_tries: int = 100,
                  max_halvings: int = 25, seed: int | None = 0, chunk: int = 256,
                  progress: Progress | None = None) -> AttackResult:
    """HopSkipJump in ``norm`` (l2 or linf) with at most ``max_queries`` label queries per tile, the clean one
    included; ``init_evals`` * sqrt(t) perturbations (at most ``max_evals``) estimate the gradient at iteration t."""
    check_choice("norm", norm, ("l2", "linf"))
    check_int("max_queries", max_queries, low=2, high=10_000_000)
    check_int("init_evals", init_evals, low=1, high=1_000_000)
    check_int("max_evals", max_evals, low=1, high=1_000_000)
    check_int("init_tries", init_tries, low=1, high=100_000)
    check_int("max_halvings", max_halvings, low=1, high=60)
    check_int("chunk", chunk, low=1, high=1_000_000)
    check_positive("gamma", gamma, upper=1e6)
    started = time.perf_counter()
    counted, x, y, t, logits0, _ = prepare(model, images, labels, target)
    b, c, h, w = x.shape
    dev = x.device
    d = c * h * w
    gen = seeded_generator(seed, dev)
    q = Queries(counted, b, max_queries, dev, chunk)
    q.used += 1  # the clean query prepare() made
    theta = gamma / (d * math.sqrt(d)) if norm == "l2" else gamma / d ** 2

    def adversarial(imgs: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
        pred = q.labels(imgs, tiles)
        return pred == t[tiles] if t is not None else pred != y[tiles]

    # a start: an image the model gets wrong (a tile already wrong starts at itself)
    start = x.clone()
    found = ~(logits0.argmax(1) == y) if t is None else logits0.argmax(1) == t
    for k in range(init_tries):
        need = ((~found) & (q.remaining >= 1)).nonzero()[:, 0]
        if need.numel() == 0:
            break
        # uniform noise, then flat colours in turn (some models call all noise one class: tumour, for ours)
        size = (need.numel(), c, h, w) if k % 2 == 0 else (need.numel(), c, 1, 1)
        noise = torch.rand(size, device=dev, generator=gen).expand(need.numel(), c, h, w).contiguous()
        hit = adversarial(noise, need)
        start[need[hit]] = noise[hit]
        found[need[hit]] = True
    adv = start.clone()
    moving = found & (_dist(adv, x, norm) > 0)
    adv = _search(q, adversarial, x, adv, moving, norm, theta)
    dist = _dist(adv, x, norm)
    iterations = 0
    t_iter = 0
    while True:
        t_iter += 1
        n_evals = int(min(init_evals * math.sqrt(t_iter), max_evals))
        live = (moving & (q.remaining >= n_evals + 2)).nonzero()[:, 0]
        if live.numel() == 0:
            break
        iterations = t_iter
        xb, xl = adv[live], x[live]
        delta = (math.sqrt(d) * theta * dist[live] if norm == "l2" else d * theta * dist[live]) if t_iter > 1 else \
            torch.full_like(dist[live], 0.1)
        grad = _gradient(q, adversarial, xb, live, delta, n_evals, norm, gen)
        update = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1) if norm == "l2" else grad.sign()
        # geometric step search: halve until the step stays adversarial (or the tile's budget runs out)
        step = dist[live] / math.sqrt(t_iter)
        cand = xb.clone()
        pending = torch.ones(live.numel(), dtype=torch.bool, device=dev)
        for _ in range(max_halvings):
            idx = (pending & (q.remaining[live] >= 1)).nonzero()[:, 0]
            if idx.numel() == 0:
                break
            trial = (xb[idx] + step[idx].view(-1, 1, 1, 1) * update[idx]).clamp(0, 1)
            ok = adversarial(trial, live[idx])
            cand[idx[ok]] = trial[ok]
            pending[idx[ok]] = False
            step[idx[~ok]] /= 2
        # tiles whose search failed keep their boundary point (still adversarial)
        adv[live] = cand
        adv = _search(q, adversarial, x, adv, moving & torch.isin(torch.arange(b, device=dev), live), norm, theta)
        dist = _dist(adv, x, norm)
        if progress is not None:
            progress(int(q.used.max()), max_queries)
    params = {"norm": norm, "max_queries": max_queries, "init_evals": init_evals, "max_evals": max_evals, "gamma": gamma,
              "seed": seed, "targeted": t is not None}
    result = finish("hop-skip-jump", counted, x, adv, y, t, logits0, iterations, started, params)
    result.extra["queries"] = q.used.clone()
    result.extra["queries_per_image"] = float(q.used.float().mean())
    result.extra["started"] = found.clone()
    return result


def _search(q: Queries, adversarial, x: torch.Tensor, adv: torch.Tensor, which: torch.Tensor, norm: str,
            theta: float) -> torch.Tensor:
    """Binary search from each chosen tile's adversarial point towards its clean tile, to within theta (L2: of the
    segment's fraction; L-inf: of the box's half-width), spending at most each tile's remaining budget."""
    idx = which.nonzero()[:, 0]
    if idx.numel() == 0:
        return adv
    xs, advs = x[idx], adv[idx]
    f64 = torch.float64  # theta is far below float32's resolution near 1
    if norm == "l2":
        high, tol = torch.ones(idx.numel(), device=x.device, dtype=f64), torch.full((idx.numel(),), theta, device=x.device, dtype=f64)
    else:
        high = _dist(advs, xs, "linf").to(f64)
        tol = (high * theta).clamp(max=theta)
    low = torch.zeros_like(high)
    for _ in range(64):
        go = ((high - low) > tol) & (q.remaining[idx] >= 1)
        j = go.nonzero()[:, 0]
        if j.numel() == 0:
            break
        mid = (high[j] + low[j]) / 2
        ok = adversarial(_blend(xs[j], advs[j], mid.to(x.dtype), norm), idx[j])
        high[j] = torch.where(ok, mid, high[j])
        low[j] = torch.where(ok, low[j], mid)
    out = adv.clone()
    out[idx] = _blend(xs, advs, high.to(x.dtype), norm)
    return out


def _gradient(q: Queries, adversarial, xb: torch.Tensor, tiles: torch.Tensor, delta: torch.Tensor, n: int, norm: str,
              gen: torch.Generator) -> torch.Tensor:
    """Monte Carlo estimate of the boundary's normal at each xb from n labelled perturbations (with a baseline)."""
    a = xb.shape[0]
    per = max(1, 4096 // max(a, 1))  # perturbations per query batch, so memory stays bounded on large tiles
    fs, rvs = [], []
    for s0 in range(0, n, per):
        k = min(per, n - s0)
        shape = (a, k, *xb.shape[1:])
        rv = torch.randn(shape, device=xb.device, generator=gen) if norm == "l2" else \
            torch.rand(shape, device=xb.device, generator=gen) * 2 - 1
        rv = rv / rv.flatten(2).norm(dim=2).view(a, k, 1, 1, 1)
        pert = (xb[:, None] + delta.view(-1, 1, 1, 1, 1) * rv).clamp(0, 1)
        rvs.append((pert - xb[:, None]) / delta.view(-1, 1, 1, 1, 1))
        fs.append(adversarial(pert.flatten(0, 1), tiles.repeat_interleave(k)).view(a, k).float())
    ok, rv = torch.cat(fs, 1), torch.cat(rvs, 1)
    f = 2 * ok - 1
    mean = f.mean(1, keepdim=True)
    mixed = (mean.abs() < 1).view(a, 1)  # all one sign: no baseline (the paper's special case)
    f = torch.where(mixed, f - mean, f)
    return (f.view(a, n, 1, 1, 1) * rv).mean(1)
