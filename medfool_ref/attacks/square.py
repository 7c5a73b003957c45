"""Square Attack: score-based random search with square-shaped updates, L-inf and L2.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial attack via
random search", ECCV 2020. Only the model's scores are used (margin loss on log-scores); each tile draws its own
square window per iteration, a candidate is kept when it lowers the tile's loss, and a tile stops at its first
success or when its query budget is spent. Every tile of the batch is one row of each query batch; one image
sent is one query, the clean query included.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ._core import AttackResult, Progress, check_choice, check_int, check_positive, finish, prepare, seeded_generator
from .query import Queries, margin, output_of

# the paper's schedule: p is halved at these fractions (of 10,000 iterations, rescaled to the budget)
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, it: int, budget: int) -> float:
    """The fraction of the tile a square covers at iteration ``it`` of a ``budget``-query run."""
    k = int(it / max(budget, 1) * 10_000)
    return p_init / 2 ** sum(k > h for h in _HALVINGS)


def _l2_block(s: int, n: int, c: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """n blocks (n, c, s, s): two bumps of opposite sign side by side, transposed at random, a random sign per channel."""
    top, bottom = s // 2, s - s // 2
    block = torch.zeros(s, s, device=device)
    if top:
        block[:top] = _rect(top, s, device)
    block[top:] = -_rect(bottom, s, device)
    block = block / block.norm()
    flip = torch.rand(n, device=device, generator=gen) < 0.5
    blocks = torch.where(flip[:, None, None], block.t()[None], block[None])
    sign = torch.randint(0, 2, (n, c, 1, 1), device=device, generator=gen).float() * 2 - 1
    return blocks[:, None] * sign


def _rect(h: int, w: int, device: torch.device) -> torch.Tensor:
    """A rectangular bump: nested rectangles around the centre, weights 1/(k+1)^2 summed outwards, unit norm."""
    r = torch.arange(h, device=device)[:, None] - (h // 2)
    col = torch.arange(w, device=device)[None] - (w // 2)
    ring = torch.maximum(r.abs(), col.abs())
    k = max(h, w)
    weights = (1.0 / (torch.arange(k + 1, device=device, dtype=torch.float32) + 1) ** 2).flip(0).cumsum(0).flip(0)
    out = weights[ring.clamp(max=k)]
    return out / out.norm()


def _windows(n: int, h: int, w: int, s: int, gen: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.randint(0, h - s + 1, (n,), device=device, generator=gen)
    cols = torch.randint(0, w - s + 1, (n,), device=device, generator=gen)
    return rows, cols


def _mask(rows: torch.Tensor, cols: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """(n, 1, h, w) boolean masks of each row's s x s window."""
    r = torch.arange(h, device=rows.device)
    c = torch.arange(w, device=rows.device)
    in_r = (r[None] >= rows[:, None]) & (r[None] < rows[:, None] + s)
    in_c = (c[None] >= cols[:, None]) & (c[None] < cols[:, None] + s)
    return (in_r[:, :, None] & in_c[:, None, :])[:, None]


def _paste(base: torch.Tensor, blocks: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``base`` (n, c, h, w) with ``blocks`` (n, c, s, s) written at (rows, cols)."""
    n, c, h, w = base.shape
    s = blocks.shape[-1]
    out = base.clone()
    ri = (rows[:, None] + torch.arange(s, device=base.device))[:, None, :, None].expand(n, c, s, s)
    ci = (cols[:, None] + torch.arange(s, device=base.device))[:, None, None, :].expand(n, c, s, s)
    flat = ri * w + ci
    out.view(n, c, h * w).scatter_(2, flat.reshape(n, c, s * s), blocks.reshape(n, c, s * s))
    return out


def _crop(base: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, s: int) -> torch.Tensor:
    n, c, h, w = base.shape
    ri = (rows[:, None] + torch.arange(s, device=base.device))[:, None, :, None].expand(n, c, s, s)
    ci = (cols[:, None] + torch.arange(s, device=base.device))[:, None, None, :].expand(n, c, s, s)
    return base.reshape(n, c, h * w).gather(2, (ri * w + ci).reshape(n, c, s * s)).view(n, c, s, s)


def square(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
           target: int | torch.Tensor | None = None, norm: str = "linf", eps: float = 4 / 255, max_queries: int = 1000,
           p_init: float = 0.8, seed: int | None = 0, chunk: int = 256, progress: Progress | None = None) -> AttackResult:
    """Square Attack within an ``norm`` ball of radius ``eps``, at most ``max_queries`` queries per tile
    (``p_init``: the first square's fraction of the tile; 0.8 as in AutoAttack and torchattacks, where small tiles
    gain from large early squares; the paper used 0.05 (L-inf) and 0.1 (L2) on ImageNet)."""
    check_choice("norm", norm, ("linf", "l2"))
    check_positive("eps", eps, upper=1.0 if norm == "linf" else 1e6)
    check_int("max_queries", max_queries, low=2, high=10_000_000)
    check_int("chunk", chunk, low=1, high=1_000_000)
    check_positive("p_init", p_init, upper=1.0)
    p0 = p_init
    if output_of(model) == "label":
        raise ValueError("square needs scores; this model answers labels only (use hop-skip-jump)")
    started = time.perf_counter()
    counted, x, y, t, logits0, _ = prepare(model, images, labels, target)
    b, c, h, w = x.shape
    dev = x.device
    gen = seeded_generator(seed, dev)
    q = Queries(counted, b, max_queries, dev, chunk)
    q.used += 1  # the clean query prepare() made
    loss = margin(logits0.float(), y, t)
    if norm == "linf":  # vertical stripes of +-eps
        stripes = (torch.randint(0, 2, (b, c, 1, w), device=dev, generator=gen).float() * 2 - 1) * eps
        best = (x + stripes).clamp(0, 1)
    else:  # a grid of bumps, scaled to the L2 radius
        s0 = max(h // 5, 1)
        delta = torch.zeros_like(x)
        for r0 in range(0, h - s0 + 1, s0):
            for c0 in range(0, w - s0 + 1, s0):
                blk = _l2_block(s0, b, c, gen, dev)
                delta[:, :, r0:r0 + s0, c0:c0 + s0] += blk
        best = (x + delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1) * eps).clamp(0, 1)
    start_ok = loss <= 0  # already misclassified: nothing to do
    todo = (~start_ok).nonzero()[:, 0]
    if todo.numel():
        new_loss = margin(q.ask(best[todo], todo), y[todo], None if t is None else t[todo])
        loss[todo] = new_loss
    best = torch.where(start_ok.view(-1, 1, 1, 1), x, best)
    iterations = 0
    for it in range(1, max_queries):
        active = ((loss > 0) & (q.remaining > 0)).nonzero()[:, 0]
        if active.numel() == 0:
            break
        iterations = it
        n = active.numel()
        xa, ba = x[active], best[active]
        frac = square_fraction(p0, it, max_queries)
        if norm == "linf":
            s = min(max(int(round((frac * h * w) ** 0.5)), 1), h - 1, w - 1)
            rows, cols = _windows(n, h, w, s, gen, dev)
            mask = _mask(rows, cols, s, h, w)
            cand = ba
            same = torch.ones(n, dtype=torch.bool, device=dev)
            for _ in range(8):  # redraw the colours of a window left unchanged (costs no query)
                signs = (torch.randint(0, 2, (n, c, 1, 1), device=dev, generator=gen).float() * 2 - 1) * eps
                cand = torch.where(same.view(-1, 1, 1, 1), torch.where(mask, (xa + signs).clamp(0, 1), ba), cand)
                same = (cand == ba).flatten(1).all(1)
                if not bool(same.any()):
                    break
        else:
            cand = _l2_step(xa, ba, eps, frac, gen)
        cl = margin(q.ask(cand, active), y[active], None if t is None else t[active])
        better = cl < loss[active]
        best[active] = torch.where(better.view(-1, 1, 1, 1), cand, ba)
        loss[active] = torch.where(better, cl, loss[active])
        if progress is not None:
            progress(it, max_queries - 1)
    params = {"norm": norm, "eps": eps, "max_queries": max_queries, "p_init": p0, "seed": seed, "targeted": t is not None}
    result = finish("square", counted, x, best, y, t, logits0, iterations, started, params)
    result.extra["queries"] = q.used.clone()
    result.extra["queries_per_image"] = float(q.used.float().mean())
    return result


def _l2_step(x: torch.Tensor, best: torch.Tensor, eps: float, frac: float, gen: torch.Generator) -> torch.Tensor:
    """One L2 proposal per row: a new bump in window 1 (absorbing its old mass and window 2's), window 2 emptied,
    the whole perturbation rescaled onto the L2 sphere of radius eps."""
    n, c, h, w = x.shape
    dev = x.device
    s = max(int(round((frac * h * w) ** 0.5)), 3)
    s = min(s + (s % 2 == 0), h - 1 if (h - 1) % 2 else h - 2, w - 1 if (w - 1) % 2 else w - 2)
    s = max(s, 1)
    delta = best - x
    r1, c1 = _windows(n, h, w, s, gen, dev)
    r2, c2 = _windows(n, h, w, s, gen, dev)
    union = _mask(r1, c1, s, h, w) | _mask(r2, c2, s, h, w)
    norm_img = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    norm_union = (delta * union).pow(2).sum((2, 3), keepdim=True).sqrt()  # per channel
    old1 = _crop(delta, r1, c1, s)
    old1 = old1 / (old1.pow(2).sum((2, 3), keepdim=True).sqrt() + 1e-10)
    new = _l2_block(s, n, c, gen, dev) + old1
    room = ((eps ** 2 - norm_img ** 2).clamp_min(0) / c + norm_union ** 2).sqrt()
    new = new / new.pow(2).sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12) * room
    delta = torch.where(_mask(r2, c2, s, h, w), torch.zeros_like(delta), delta)
    delta = _paste(delta, new, r1, c1)
    delta = delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1) * eps
    return (x + delta).clamp(0, 1)
