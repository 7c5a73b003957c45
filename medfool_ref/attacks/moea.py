"""A multi-objective evolutionary, query-only attack (the survey's MOEA-APGA), in NSGA-II form.

Deng et al., IEEE DSC 2019 (catalog paper ``deng2019multiobjective``, the 'likely' source) treats attack success and perturbation size as two objectives of one
evolutionary search that reads only the model's output probabilities. Here each candidate is a low-resolution perturbation
(``grid`` x ``grid`` per channel, bilinearly upsampled, within +-``eps_max``); the two objectives, both minimised,
are the margin (the best other class's log-probability minus the target's, or for an untargeted run the true
class's minus the best other one's: below zero means fooled) and the L2 norm of the applied perturbation.
Selection is Deb et al.'s NSGA-II (IEEE TEVC 6(2), 2002): non-dominated sorting and crowding distance over
parents and offspring, binary tournaments, uniform crossover and Gaussian mutation. The populations of all tiles
evolve at once; each tile keeps its Pareto front, and its answer is the smallest successful perturbation on it.
``random_search`` draws as many candidates from the initial distribution: the control at equal queries.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from ._core import AttackResult, Progress, check_int, check_positive, finish, prepare, seeded_generator


def _upsample(z: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return F.interpolate(z, size=(h, w), mode="bilinear", align_corners=False)


def _objectives(counted: nn.Module, x: torch.Tensor, z: torch.Tensor, goal: torch.Tensor, targeted: bool, chunk: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Margin, L2 norm and adversarial images of candidates z (B, P, C, g, g) for images x (B, C, H, W)."""
    b, p = z.shape[:2]
    h, w = x.shape[-2:]
    adv = (x[:, None] + _upsample(z.flatten(0, 1), h, w).view(b, p, *x.shape[1:])).clamp(0, 1).flatten(0, 1)
    g = goal[:, None].expand(b, p).reshape(-1)
    margins = []
    with torch.inference_mode():
        for s in range(0, adv.shape[0], chunk):
            logp = counted(adv[s:s + chunk]).float().log_softmax(1)
            own = logp.gather(1, g[s:s + chunk, None])[:, 0]
            other = logp.scatter(1, g[s:s + chunk, None], float("-inf")).amax(1)
            margins.append(other - own if targeted else own - other)
    norm = (adv - x.repeat_interleave(p, 0)).flatten(1).norm(dim=1)
    return torch.cat(margins).view(b, p), norm.view(b, p), adv.view(b, p, *x.shape[1:])


def pareto_ranks(f: torch.Tensor) -> torch.Tensor:
    """Non-dominated sorting of objectives f (B, N, M) (minimised): rank 0 is each row's Pareto front."""
    le = (f[:, :, None, :] <= f[:, None, :, :]).all(-1)
    lt = (f[:, :, None, :] < f[:, None, :, :]).any(-1)
    dominates = le & lt  # [b, i, j]: i dominates j
    ranks = torch.full(f.shape[:2], -1, dtype=torch.long, device=f.device)
    remaining = torch.ones(f.shape[:2], dtype=torch.bool, device=f.device)
    level = 0
    while bool(remaining.any()):
        dominated = (dominates & remaining[:, :, None]).any(1)
        front = remaining & ~dominated
        ranks[front] = level
        remaining &= ~front
        level += 1
    return ranks


def crowding(f: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """NSGA-II crowding distance within each front (boundary points: infinity)."""
    b, n, m = f.shape
    dist = torch.zeros(b, n, device=f.device)
    for k in range(m):
        v = f[:, :, k]
        span = (v.amax(1, keepdim=True) - v.amin(1, keepdim=True)).clamp_min(1e-12)
        vn = (v - v.amin(1, keepdim=True)) / span
        order = torch.argsort(ranks.float() * 4 + vn, dim=1)  # by front, then by value
        r, s = ranks.gather(1, order), vn.gather(1, order)
        prev_same = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=f.device), r[:, 1:] == r[:, :-1]], 1)
        next_same = torch.cat([r[:, :-1] == r[:, 1:], torch.zeros(b, 1, dtype=torch.bool, device=f.device)], 1)
        gap = torch.cat([s[:, 1:], s[:, -1:]], 1) - torch.cat([s[:, :1], s[:, :-1]], 1)
        d = torch.where(prev_same & next_same, gap, torch.full_like(gap, float("inf")))
        dist.scatter_add_(1, order, d)
    return dist


def moea_apga(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
              target: int | torch.Tensor | None = None, population: int = 20, generations: int = 15,
              eps_max: float = 16 / 255, grid: int = 8, mutation: float = 0.25, seed: int | None = 0, chunk: int = 256,
              progress: Progress | None = None) -> AttackResult:
    """NSGA-II over low-resolution perturbations: margin and L2 norm as two objectives, probabilities only.

    Queries per tile: ``population`` x (``generations`` + 1) plus the clean and the final pass.
    """
    check_int("population", population, low=4, high=10_000)
    check_int("generations", generations, low=0, high=10_000)
    check_int("grid", grid, low=1, high=512)
    check_int("chunk", chunk, low=1, high=1_000_000)
    check_positive("eps_max", eps_max, upper=1.0)
    check_positive("mutation", mutation, upper=10.0)
    started = time.perf_counter()
    counted, x, y, t, logits0, _ = prepare(model, images, labels, target)
    b, c = x.shape[:2]
    dev = x.device
    gen = seeded_generator(seed, dev)
    goal, targeted = (t, True) if t is not None else (y, False)
    shape = (b, population, c, grid, grid)
    z = (torch.rand(shape, device=dev, generator=gen) * 2 - 1) * eps_max
    m, n, _ = _objectives(counted, x, z, goal, targeted, chunk)
    rows = torch.arange(b, device=dev)[:, None]
    for g_i in range(generations):
        f = torch.stack([m, n], -1)
        r0 = pareto_ranks(f)
        key = r0.float() + 0.999 / (1 + crowding(f, r0))
        # binary tournaments (lower key wins), uniform crossover, Gaussian mutation
        a, bb = (torch.randint(0, population, (2, b, population, 2), device=dev, generator=gen))
        pick = lambda i: torch.where(key.gather(1, a[..., i]) <= key.gather(1, bb[..., i]), a[..., i], bb[..., i])  # noqa: E731
        p1, p2 = z[rows, pick(0)], z[rows, pick(1)]
        mix = torch.rand(shape, device=dev, generator=gen) < 0.5
        child = torch.where(mix, p1, p2) + torch.randn(shape, device=dev, generator=gen) * mutation * eps_max
        child = child * (torch.rand((b, population, 1, 1, 1), device=dev, generator=gen) * 0.5 + 0.75)  # random shrink
        child = child.clamp(-eps_max, eps_max)
        cm, cn, _ = _objectives(counted, x, child, goal, targeted, chunk)
        # environmental selection over parents and offspring
        zz, mm, nn_ = torch.cat([z, child], 1), torch.cat([m, cm], 1), torch.cat([n, cn], 1)
        ff = torch.stack([mm, nn_], -1)
        ranks = pareto_ranks(ff)
        keep = torch.argsort(ranks.float() + 0.999 / (1 + crowding(ff, ranks)), dim=1)[:, :population]
        z, m, n = zz[rows, keep], mm.gather(1, keep), nn_.gather(1, keep)
        if progress is not None:
            progress(g_i + 1, generations)
    return _answer("moea-apga", counted, x, y, t, logits0, z, m, n, generations, started,
                   {"population": population, "generations": generations, "eps_max": eps_max, "grid": grid,
                    "mutation": mutation, "seed": seed, "targeted": targeted})


def _answer(name: str, counted: nn.Module, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None, logits0: torch.Tensor,
            z: torch.Tensor, m: torch.Tensor, n: torch.Tensor, iterations: int, started: float, params: dict) -> AttackResult:
    """Per tile: the smallest-norm candidate with margin < 0, else the candidate of smallest margin."""
    ok = m < 0
    score = torch.where(ok, n - n.amax() - 1, m + n.amax() + 1)  # any success before any failure
    best = score.argmin(1)
    rows = torch.arange(x.shape[0], device=x.device)
    delta = _upsample(z[rows, best], *x.shape[-2:])
    adv = (x + delta).clamp(0, 1)
    front = pareto_ranks(torch.stack([m, n], -1)) == 0
    result = finish(name, counted, x, adv, y, t, logits0, iterations, started, params)
    result.extra["queries_per_image"] = result.forward_images / max(x.shape[0], 1)
    result.extra["pareto_front_size"] = front.sum(1).float()
    result.extra["best_margin"] = m[rows, best]
    return result


def random_search(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                  target: int | torch.Tensor | None = None, queries: int = 320, eps_max: float = 16 / 255, grid: int = 8,
                  seed: int | None = 0, chunk: int = 256) -> AttackResult:
    """The control at equal queries: ``queries`` candidates per tile from the same initial distribution, the same answer rule."""
    check_int("queries", queries, low=1, high=10_000_000)
    check_positive("eps_max", eps_max, upper=1.0)
    started = time.perf_counter()
    counted, x, y, t, logits0, _ = prepare(model, images, labels, target)
    gen = seeded_generator(seed, x.device)
    goal, targeted = (t, True) if t is not None else (y, False)
    z = (torch.rand((x.shape[0], queries, x.shape[1], grid, grid), device=x.device, generator=gen) * 2 - 1) * eps_max
    m, n, _ = _objectives(counted, x, z, goal, targeted, chunk)
    return _answer("moea-random-search", counted, x, y, t, logits0, z, m, n, 1, started,
                   {"queries": queries, "eps_max": eps_max, "grid": grid, "seed": seed, "targeted": targeted})
