"""One-pixel (and k-pixel) attack by differential evolution, kept on the device for a batch of images.

Su, Vargas & Sakurai, "One Pixel Attack for Fooling Deep Neural Networks", IEEE TEVC 23(5), 2019.
Each candidate is k (row, column, R, G, B) tuples; the population of every image evolves at once
with the paper's DE/rand/1 mutation (F = 0.5, no crossover) and greedy selection. Only output
probabilities are used (black box). Candidates are painted with one scatter and scored in chunks
under ``inference_mode``; colours are 8-bit. An image stops evolving once a candidate fools the model.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ._core import AttackResult, Progress, check_int, check_positive, finish, prepare, seeded_generator


def paint(images: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Paint candidates onto their images: images (N, C, H, W), candidates (N, k, 2 + C) -> (N, C, H, W)."""
    n, c, h, w = images.shape
    rows = candidates[..., 0].round().long().clamp(0, h - 1)
    cols = candidates[..., 1].round().long().clamp(0, w - 1)
    colours = (candidates[..., 2:].round().clamp(0, 255) / 255).to(images.dtype)  # (N, k, C)
    flat = images.reshape(n, c, h * w).clone()
    index = (rows * w + cols)[:, None, :].expand(n, c, rows.shape[1])
    flat.scatter_(2, index, colours.transpose(1, 2))
    return flat.view(n, c, h, w)


def one_pixel(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
              target: int | torch.Tensor | None = None, pixels: int = 1, population: int = 400, generations: int = 100,
              f: float = 0.5, seed: int | None = 0, chunk: int = 512, early_stop: bool = True,
              progress: Progress | None = None) -> AttackResult:
    """Differential evolution over ``pixels`` (row, col, colour) tuples; ``population`` x ``generations`` as in the paper."""
    check_int("pixels", pixels, low=1, high=10_000)
    check_int("population", population, low=4, high=100_000)
    check_int("generations", generations, low=0, high=100_000)
    check_int("chunk", chunk, low=1, high=1_000_000)
    check_positive("f", f, upper=2.0)
    started = time.perf_counter()
    counted, x, y, t, logits0, _ = prepare(model, images, labels, target)
    b, c, h, w = x.shape
    dev = x.device
    gen = seeded_generator(seed, dev)
    goal = t if t is not None else y
    lows = torch.tensor([0.0, 0.0] + [0.0] * c, device=dev)
    highs = torch.tensor([h - 1.0, w - 1.0] + [255.0] * c, device=dev)

    def score(img_idx: torch.Tensor, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fitness (lower is better) and success of candidates (M, k, 2+C) for images img_idx (M,)."""
        fit = torch.empty(cand.shape[0], device=dev)
        ok = torch.empty(cand.shape[0], dtype=torch.bool, device=dev)
        with torch.inference_mode():
            for s in range(0, cand.shape[0], chunk):
                sl = slice(s, s + chunk)
                probs = counted(paint(x[img_idx[sl]], cand[sl])).softmax(1)
                g = goal[img_idx[sl]]
                p_goal = probs.gather(1, g[:, None])[:, 0]
                pred = probs.argmax(1)
                if t is not None:
                    fit[sl], ok[sl] = -p_goal, pred == g
                else:
                    fit[sl], ok[sl] = p_goal, pred != g
        return fit, ok

    # initial population: uniform positions, colours ~ N(128, 127) as in the paper
    pos = torch.rand(b, population, pixels, 2, device=dev, generator=gen) * highs[:2]
    col = (128 + 127 * torch.randn(b, population, pixels, c, device=dev, generator=gen)).clamp(0, 255)
    pop = torch.cat([pos, col], dim=-1)  # (B, P, k, 2+C)
    img_of = torch.arange(b, device=dev)[:, None].expand(b, population)
    fit, ok = score(img_of.reshape(-1), pop.reshape(-1, pixels, 2 + c))
    fit, ok = fit.view(b, population), ok.view(b, population)
    active = ~ok.any(dim=1) if early_stop else torch.ones(b, dtype=torch.bool, device=dev)
    iterations = 0
    for g_i in range(generations):
        ids = active.nonzero()[:, 0]
        if ids.numel() == 0:
            break
        iterations = g_i + 1
        a = ids.numel()
        # DE/rand/1: three distinct partners per individual, none of them the individual itself
        keys = torch.rand(a, population, population, device=dev, generator=gen)
        keys.diagonal(dim1=1, dim2=2).fill_(2.0)
        r = keys.topk(3, dim=2, largest=False).indices  # (A, P, 3)
        sub = pop[ids]  # (A, P, k, 2+C)
        pick = lambda j: torch.gather(sub, 1, r[:, :, j, None, None].expand(-1, -1, pixels, 2 + c))  # noqa: E731
        trial = (pick(0) + f * (pick(1) - pick(2))).clamp(min=lows, max=highs)
        t_fit, t_ok = score(ids[:, None].expand(a, population).reshape(-1), trial.reshape(-1, pixels, 2 + c))
        t_fit, t_ok = t_fit.view(a, population), t_ok.view(a, population)
        better = t_fit <= fit[ids]
        pop[ids] = torch.where(better[:, :, None, None], trial, sub)
        fit[ids] = torch.where(better, t_fit, fit[ids])
        ok[ids] = torch.where(better, t_ok, ok[ids])
        if early_stop:
            active[ids] = ~ok[ids].any(dim=1)
        if progress is not None:
            progress(g_i + 1, generations)
    # best candidate per image: a successful one if any, else the fittest
    rank = fit - 2.0 * ok.float()
    best = rank.argmin(dim=1)
    winners = pop[torch.arange(b, device=dev), best]  # (B, k, 2+C)
    adv = paint(x, winners)
    params = {"pixels": pixels, "population": population, "generations": generations, "f": f, "seed": seed,
              "early_stop": early_stop, "targeted": t is not None}
    result = finish("one-pixel", counted, x, adv, y, t, logits0, iterations, started, params)
    result.extra["queries_per_image"] = result.forward_images / max(b, 1)
    return result
