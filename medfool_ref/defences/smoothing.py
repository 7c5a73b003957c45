"""Randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019): a certified L2 radius per tile.

The smoothed classifier g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I), pixels in [0, 1]. CERTIFY
draws n0 noisy copies to pick the top class cA, then n fresh ones; the one-sided Clopper-Pearson lower
bound pA on P(f(x + e) = cA) at confidence 1 - alpha gives the radius sigma * Phi^-1(pA), or an abstention
when pA < 0.5. Draws are batched over tiles and noise samples in chunks of at most ``chunk`` images on the
model's device, so n may reach 100,000 per tile in bounded memory. Torch only (the binomial bound is
solved by bisection on the exact binomial tail; the tests check it against scipy's beta quantile).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

ABSTAIN = -1


def check_smoothing(*, sigma: float, n0: int, n: int, alpha: float, chunk: int = 256) -> None:
    """Refuse parameters CERTIFY cannot use, all at once in one line (ValueError)."""
    problems = []
    if not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        problems.append(f"sigma={sigma} must be a finite number > 0")
    if not isinstance(n0, int) or n0 < 1:
        problems.append(f"n0={n0} must be an integer >= 1")
    if not isinstance(n, int) or n < 1:
        problems.append(f"n={n} must be an integer >= 1")
    elif isinstance(n0, int) and n0 > n:
        problems.append(f"n0={n0} must not exceed n={n} (n0 picks the class, n certifies it)")
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or not 0 < alpha < 1:
        problems.append(f"alpha={alpha} must be in (0, 1)")
    if not isinstance(chunk, int) or chunk < 1:
        problems.append(f"chunk={chunk} must be an integer >= 1")
    if problems:
        raise ValueError("; ".join(problems))


@torch.no_grad()
def sample_counts(model: nn.Module, x: torch.Tensor, *, sigma: float, n: int, chunk: int, generator: torch.Generator,
                  num_classes: int | None = None, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """(B, classes) counts of f's top class over ``n`` Gaussian draws per tile; at most ``chunk`` images per forward."""
    b = x.shape[0]
    per = max(1, chunk // b)  # draws per tile in one forward
    counts: torch.Tensor | None = None
    done = 0
    while done < n:
        k = min(per, n - done)
        noisy = x.unsqueeze(1) + sigma * torch.randn((b, k, *x.shape[1:]), device=x.device, dtype=x.dtype, generator=generator)
        logits = model(noisy.flatten(0, 1))
        pred = logits.argmax(1).view(b, k)
        if counts is None:
            counts = torch.zeros(b, num_classes or logits.shape[1], dtype=torch.long, device=x.device)
        counts.scatter_add_(1, pred, torch.ones_like(pred))
        done += k
        if progress is not None:
            progress(done, n)
    assert counts is not None
    return counts


def clopper_pearson_lower(k: torch.Tensor, n: int, alpha: float, iterations: int = 60) -> torch.Tensor:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial p from k successes in n trials.

    The bound is the p at which P(Bin(n, p) >= k) = alpha, found by bisection on the exact tail (float64,
    log-space); 0 when k = 0 and alpha^(1/n) when k = n (closed forms)."""
    k = k.to(torch.float64).flatten()
    j = torch.arange(n + 1, dtype=torch.float64, device=k.device)
    log_binom = torch.lgamma(torch.tensor(n + 1.0, dtype=torch.float64, device=k.device)) - torch.lgamma(j + 1) - torch.lgamma(n - j + 1)
    tail = j.unsqueeze(0) >= k.unsqueeze(1)  # (B, n+1): the terms j >= k
    lo = torch.zeros_like(k)
    hi = (k / n).clamp(max=1.0)
    log_alpha = math.log(alpha)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        p = mid.clamp(1e-300, 1 - 1e-16).unsqueeze(1)
        terms = log_binom + j * torch.log(p) + (n - j) * torch.log1p(-p)
        log_tail = torch.logsumexp(terms.masked_fill(~tail, -math.inf), dim=1)
        up = log_tail < log_alpha  # tail too small: p must be larger
        lo = torch.where(up, mid, lo)
        hi = torch.where(up, hi, mid)
    out = (lo + hi) / 2
    out = torch.where(k <= 0, torch.zeros_like(out), out)
    return torch.where(k >= n, torch.full_like(out, alpha ** (1 / n)), out)


@dataclass
class Certificate:
    """Per tile: the smoothed prediction (ABSTAIN = -1), the lower bound pA, the certified L2 radius (0 when abstaining)."""

    prediction: torch.Tensor
    p_lower: torch.Tensor
    radius: torch.Tensor
    counts_top: torch.Tensor  # how many of the n draws gave cA
    params: dict[str, object] = field(default_factory=dict)
    forward_images: int = 0
    seconds: float = 0.0


def certify(model: nn.Module, x: torch.Tensor, *, sigma: float = 0.25, n0: int = 32, n: int = 256, alpha: float = 0.001,
            chunk: int = 256, seed: int = 0, progress: Callable[[int, int], None] | None = None) -> Certificate:
    """CERTIFY of Cohen et al. (2019), batched over tiles and draws; ``x`` is (B, 3, H, W) in [0, 1]."""
    check_smoothing(sigma=sigma, n0=n0, n=n, alpha=alpha, chunk=chunk)
    started = time.perf_counter()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    c0 = sample_counts(model, x, sigma=sigma, n=n0, chunk=chunk, generator=gen)
    top = c0.argmax(1)
    total = n0 + n
    counts = sample_counts(model, x, sigma=sigma, n=n, chunk=chunk, generator=gen, num_classes=c0.shape[1],
                           progress=None if progress is None else (lambda d, _n: progress(n0 + d, total)))
    k = counts.gather(1, top[:, None]).squeeze(1)
    p_lower = clopper_pearson_lower(k.cpu(), n, alpha).to(x.device)
    certified = p_lower > 0.5
    radius = torch.where(certified, sigma * torch.special.ndtri(p_lower.clamp(max=1 - 1e-12)), torch.zeros_like(p_lower))
    prediction = torch.where(certified, top, torch.full_like(top, ABSTAIN))
    return Certificate(prediction, p_lower.float(), radius.float(), k, {"sigma": sigma, "n0": n0, "n": n, "alpha": alpha,
                       "chunk": chunk, "seed": seed}, forward_images=x.shape[0] * total, seconds=time.perf_counter() - started)


class SmoothedSoft(nn.Module):
    """The smoothed classifier's soft version for attacks: log of the softmax averaged over ``draws`` noise samples
    (Salman et al. 2019's SmoothAdv objective); each call draws fresh noise, so an attack on it is EOT over the noise."""

    def __init__(self, model: nn.Module, sigma: float, draws: int = 8) -> None:
        super().__init__()
        self.model, self.sigma, self.draws = model, float(sigma), int(draws)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        noisy = x.unsqueeze(1) + self.sigma * torch.randn((b, self.draws, *x.shape[1:]), device=x.device, dtype=x.dtype)
        p = self.model(noisy.flatten(0, 1)).softmax(1).view(b, self.draws, -1).mean(1)
        return p.clamp_min(1e-12).log()


def noise_hook(sigma: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """A training-loop batch hook adding N(0, sigma^2) noise to each augmented crop (Gaussian data augmentation,
    the base-classifier training of Cohen et al.); labels unchanged."""
    def hook(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return x + sigma * torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=gen), y
    return hook


def certified_accuracy(prediction: torch.Tensor, radius: torch.Tensor, labels: torch.Tensor, r: float) -> tuple[int, int]:
    """(tiles certified correct at radius >= r (r = 0: correct and not abstaining), tiles)."""
    ok = (prediction == labels) & (prediction != ABSTAIN) & ((radius >= r) if r > 0 else torch.ones_like(radius, dtype=torch.bool))
    return int(ok.sum()), int(labels.numel())
