"""Gradient-free controls for the evaluation-validity checks (Carlini et al. 2019, "On Evaluating Adversarial
Robustness"; AutoAttack's flags): a white-box attack must beat them, tile by tile, or its gradients lie.

- :func:`random_noise`: ``draws`` random corners of the L-inf ball per tile (uniform signs), all scored in batches;
- :func:`random_search`: a score-based random search over the corners of the L-inf ball in the manner of the
  Square Attack (Andriushchenko et al., ECCV 2020): vertical-stripe start, then at each step one random square
  window per tile gets fresh signs, kept when the margin loss drops; all tiles step together.

Neither reads a gradient, so a model that masks its gradients (a rounding layer, a non-differentiable defence)
cannot hide from them. Untargeted only. Not in the registry (and kept out of attacks/, whose files fingerprint the recorded
runs): the audit's validity checks run them themselves, on a small subset.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ..attacks._core import AttackResult, check_int, check_positive, finish, is_success, prepare, seeded_generator


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return true - other


@torch.no_grad()
def random_noise(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *, eps: float = 8 / 255,
                 draws: int = 64, chunk: int = 64, seed: int = 0) -> AttackResult:
    """The first of ``draws`` random sign corners x + eps * s that fools each tile (else the last draw)."""
    check_positive("eps", eps, upper=1.0)
    check_int("draws", draws)
    started = time.perf_counter()
    counted, x, y, _, logits0, _ = prepare(model, images, labels, None)
    gen = seeded_generator(seed, x.device)
    b = x.shape[0]
    adv, done = x.clone(), torch.zeros(b, dtype=torch.bool, device=x.device)
    per = max(1, chunk // max(b, 1))
    for start in range(0, draws, per):
        k = min(per, draws - start)
        signs = torch.randint(0, 2, (k, *x.shape), generator=gen, device=x.device).to(x.dtype) * 2 - 1
        cand = (x[None] + eps * signs).clamp(0, 1)
        ok = is_success(counted(cand.flatten(0, 1)).argmax(1).view(k, b), y[None], None) & ~done[None]
        first = ok.float().argmax(0)
        hit = ok.any(0)
        adv = torch.where(hit.view(b, 1, 1, 1), cand[first, torch.arange(b)], torch.where(done.view(b, 1, 1, 1), adv, cand[-1]))
        done |= hit
        if bool(done.all()):
            break
    return finish("random-noise", counted, x, adv, y, None, logits0, draws, started, {"eps": eps, "draws": draws, "seed": seed})


@torch.no_grad()
def random_search(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *, eps: float = 8 / 255,
                  queries: int = 300, p_init: float = 0.1, seed: int = 0) -> AttackResult:
    """Square-style random search on the margin loss within the L-inf ball, ``queries`` model calls per tile."""
    check_positive("eps", eps, upper=1.0)
    check_int("queries", queries)
    check_positive("p_init", p_init, upper=1.0)
    started = time.perf_counter()
    counted, x, y, _, logits0, _ = prepare(model, images, labels, None)
    gen = seeded_generator(seed, x.device)
    b, c, h, w = x.shape
    stripes = torch.randint(0, 2, (b, c, 1, w), generator=gen, device=x.device).to(x.dtype) * 2 - 1
    adv = (x + eps * stripes).clamp(0, 1)
    loss = _margin(counted(adv), y)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    it = 0
    for it in range(1, queries):
        active = loss > 0
        if not bool(active.any()):
            break
        frac = p_init / 2 ** min(10, int(10 * it / queries))  # the window's share of the tile shrinks as the search goes
        side = max(1, min(h, round((frac * h * w) ** 0.5)))
        top = torch.randint(0, h - side + 1, (b,), generator=gen, device=x.device)
        left = torch.randint(0, w - side + 1, (b,), generator=gen, device=x.device)
        inside = (((rows[None] >= top[:, None]) & (rows[None] < top[:, None] + side))[:, :, None]
                  & ((cols[None] >= left[:, None]) & (cols[None] < left[:, None] + side))[:, None, :])[:, None]
        signs = torch.randint(0, 2, (b, c, 1, 1), generator=gen, device=x.device).to(x.dtype) * 2 - 1
        cand = torch.where(inside, (x + eps * signs).clamp(0, 1), adv)
        new = _margin(counted(cand), y)
        better = (new < loss) & active
        adv = torch.where(better.view(b, 1, 1, 1), cand, adv)
        loss = torch.where(better, new, loss)
    return finish("random-search", counted, x, adv, y, None, logits0, it, started,
                  {"eps": eps, "queries": queries, "p_init": p_init, "seed": seed})
