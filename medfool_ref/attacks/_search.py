"""Query-budget search over a few transformation parameters, shared by the natural-looking attacks.

An attack here is a ``render(x, p)`` that turns tiles ``x`` (N, C, H, W) and parameters ``p`` (N, P) in the unit
cube into transformed tiles; the search only chooses ``p``. The margin (true-class logit minus the best other one,
or best other minus the target's) is below zero exactly when the model is fooled. Candidates of all tiles are
scored together in chunks; no per-tile Python loop.
"""

from __future__ import annotations

from typing import Callable

import torch

from ._core import CountingModel

Render = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def margin(logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Per row: < 0 when the prediction is not ``labels`` (untargeted) or is ``target`` (targeted)."""
    ref = target if target is not None else labels
    own = logits.gather(1, ref[:, None])[:, 0]
    other = logits.scatter(1, ref[:, None], float("-inf")).amax(1)
    return other - own if target is not None else own - other


@torch.no_grad()
def score(counted: CountingModel, x: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None, render: Render,
          params: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Margins (B, K) of the K candidate parameter sets ``params`` (B, K, P) of each tile."""
    b, k, _ = params.shape
    flat = params.reshape(b * k, -1)
    idx = torch.arange(b, device=x.device).repeat_interleave(k)
    out = []
    for s in range(0, b * k, chunk):
        i = idx[s:s + chunk]
        logits = counted(render(x[i], flat[s:s + chunk]))
        out.append(margin(logits, labels[i], None if target is None else target[i]))
    return torch.cat(out).view(b, k)


def random_search(counted: CountingModel, x: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None, render: Render,
                  dim: int, queries: int, gen: torch.Generator, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``queries`` uniform draws per tile: (the draw with the lowest margin, its margin, the fraction of draws that fool)."""
    p = torch.rand(x.shape[0], queries, dim, device=x.device, generator=gen)
    m = score(counted, x, labels, target, render, p, chunk)
    best = m.argmin(1)
    rows = torch.arange(x.shape[0], device=x.device)
    return p[rows, best], m[rows, best], (m < 0).float().mean(1)


def grid_search(counted: CountingModel, x: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None, render: Render,
                grid: torch.Tensor, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The same candidate grid (G, P) for every tile: the best point and its margin."""
    m = score(counted, x, labels, target, render, grid.expand(x.shape[0], -1, -1), chunk)
    j = m.argmin(1)
    return grid[j], m[torch.arange(x.shape[0], device=x.device), j]


def local_search(counted: CountingModel, x: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None, render: Render,
                 dim: int, queries: int, gen: torch.Generator, *, explore: float = 0.25, population: int = 8,
                 sigma: float = 0.2, chunk: int = 64, start: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random exploration with a share ``explore`` of the queries (or a given ``start``: best points and margins,
    already paid for), then a (1+lambda) evolution strategy around each tile's best with a shrinking step (halved
    when a generation finds nothing better). Exactly ``queries`` model queries per tile (beyond ``start``'s).
    Returns the best parameters and their margins."""
    if start is None:
        first = max(1, min(queries, round(queries * explore)))
        best, best_m, _ = random_search(counted, x, labels, target, render, dim, first, gen, chunk)
    else:
        (best, best_m), first = start, 0
    left = queries - first
    step = torch.full((x.shape[0], 1), sigma, device=x.device)
    rows = torch.arange(x.shape[0], device=x.device)
    while left > 0:
        k = min(population, left)
        cand = (best[:, None] + step[:, :, None] * torch.randn(x.shape[0], k, dim, device=x.device, generator=gen)).clamp(0, 1)
        m = score(counted, x, labels, target, render, cand, chunk)
        j = m.argmin(1)
        better = m[rows, j] < best_m
        best = torch.where(better[:, None], cand[rows, j], best)
        best_m = torch.where(better, m[rows, j], best_m)
        step = torch.where(better[:, None], step, (step * 0.5).clamp_min(0.02))
        left -= k
    return best, best_m
