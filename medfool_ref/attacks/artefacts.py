"""Physical marks and preparation artefacts: marker ink, air bubbles, tissue folds and out-of-focus blur.

After the artefact stress tests of Wang et al. (J Pathol Inform 2021) and Schömig-Markiefka et al. (Mod Pathol 2021),
which generate such artefacts on tiles; here their placement and parameters are chosen against the model from a query
budget (black-box). Each kind is a differentiable renderer of a few parameters in the unit cube, applied to a batch:

- ``ink``: a marker stroke (slightly bent band) of blue, green, black or red ink, Beer-Lambert transmission;
- ``bubble``: an air bubble under the coverslip: magnified, brightened inside, a dark refracting rim;
- ``fold``: a tissue fold: a band where the section lies double (transmission squared, in part);
- ``blur``: an out-of-focus region (a disc blurred with sigma 1-4 px).

A quarter of the ``queries`` per tile are random placements, the rest a local search around the worst so far; the
baseline is the same number of random placements (a tile counts as fooled if any of them fools it).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from ._core import AttackResult, CountingModel, check_choice, check_int, finish, prepare, seeded_generator
from ._search import local_search, random_search
from .transforms import gaussian_blur

KINDS = ("ink", "bubble", "fold", "blur")
DIMS = {"ink": 7, "bubble": 5, "fold": 4, "blur": 4}
# transmission of marker inks (what a layer lets through, per RGB channel): blue, green, black, red
INKS = torch.tensor([[0.15, 0.30, 0.75], [0.20, 0.60, 0.35], [0.15, 0.15, 0.18], [0.85, 0.15, 0.20]])
MAX_BLUR_SIGMA = 4.0


def _frame(x: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres relative to (cx, cy), as fractions of the tile side: (N, H, W) each."""
    h, w = x.shape[-2:]
    v = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / max(h, w)
    u = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / max(h, w)
    return u[None, None, :] - cx[:, None, None], v[None, :, None] - cy[:, None, None]


def _soft(d: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Coverage of a shape from its signed inside distance ``d`` (fraction of the side), antialiased over ~1.5 px."""
    return ((d * max(x.shape[-2:])) / 1.5 + 0.5).clamp(0, 1)


def ink(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    dx, dy = _frame(x, p[:, 0], p[:, 1])
    theta = (math.pi * p[:, 2])[:, None, None]
    length = (0.3 + 0.7 * p[:, 3])[:, None, None]
    width = (0.015 + 0.045 * p[:, 4])[:, None, None]
    bend = ((p[:, 5] * 2 - 1) * 0.3)[:, None, None] * length
    along = dx * torch.cos(theta) + dy * torch.sin(theta)
    across = -dx * torch.sin(theta) + dy * torch.cos(theta)
    tc = (along / length + 0.5).clamp(0, 1)
    off = across - bend * 4 * tc * (1 - tc)
    past = (along.abs() - length / 2).clamp_min(0)
    m = _soft(width / 2 - (off.pow(2) + past.pow(2)).sqrt(), x)[:, None]
    colour = INKS.to(x)[(p[:, 6] * len(INKS)).long().clamp(0, len(INKS) - 1)][:, :, None, None]
    return x * (1 - 0.9 * m + 0.9 * m * colour)


def bubble(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    cx, cy = p[:, 0], p[:, 1]
    r = (0.1 + 0.25 * p[:, 2])[:, None, None]
    dx, dy = _frame(x, cx, cy)
    d = (dx.pow(2) + dy.pow(2)).sqrt() / r
    k = (0.3 * p[:, 4])[:, None, None] * (1 - d.pow(2)).clamp_min(0)  # magnifying lens inside the bubble
    side = max(x.shape[-2:])
    gx = (cx[:, None, None] + dx * (1 - k)) * side / x.shape[-1] * 2 - 1
    gy = (cy[:, None, None] + dy * (1 - k)) * side / x.shape[-2] * 2 - 1
    lens = F.grid_sample(x, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="reflection", align_corners=False)
    inside = _soft(r * (1 - d), x)[:, None]
    out = x * (1 - inside) + (lens + (1 - lens) * 0.15) * inside
    rim = torch.exp(-(((d - 1) * r) / 0.012).pow(2))[:, None]
    return out * (1 - (0.3 + 0.5 * p[:, 3]).view(-1, 1, 1, 1) * rim)


def fold(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    dx, dy = _frame(x, torch.full_like(p[:, 0], 0.5), torch.full_like(p[:, 0], 0.5))
    theta = (math.pi * p[:, 1])[:, None, None]
    across = -dx * torch.sin(theta) + dy * torch.cos(theta) - (p[:, 0] - 0.5)[:, None, None]
    width = (0.05 + 0.2 * p[:, 2])[:, None, None]
    m = _soft(width / 2 - across.abs(), x)[:, None]
    return x.clamp_min(1e-3) ** (1 + (0.6 + 0.4 * p[:, 3]).view(-1, 1, 1, 1) * m)


def blur(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    dx, dy = _frame(x, p[:, 0], p[:, 1])
    r = (0.2 + 0.5 * p[:, 2])[:, None, None]
    m = ((r - (dx.pow(2) + dy.pow(2)).sqrt()) / 0.05 + 0.5).clamp(0, 1)[:, None]  # a soft-edged out-of-focus disc
    blurred = gaussian_blur(x, 1 + (MAX_BLUR_SIGMA - 1) * p[:, 3], radius=math.ceil(3 * MAX_BLUR_SIGMA))
    return x * (1 - m) + blurred * m


RENDER = {"ink": ink, "bubble": bubble, "fold": fold, "blur": blur}


def physical_artefacts(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                       target: int | torch.Tensor | None = None, kind: str = "ink", queries: int = 32, seed: int | None = 0,
                       baseline: bool = True) -> AttackResult:
    """The worst ``kind`` artefact per tile (placement and parameters) found in ``queries`` model queries."""
    check_choice("kind", kind, KINDS)
    check_int("queries", queries, low=1, high=100_000)
    started = time.perf_counter()
    counted, x, y, t, logits0, _ = prepare(model, images, labels, target)
    render, dim = RENDER[kind], DIMS[kind]
    best, _ = local_search(counted, x, y, t, render, dim, queries, seeded_generator(seed, x.device))
    with torch.no_grad():
        adv = render(x, best).clamp(0, 1)
    extra: dict[str, object] = {"kind": kind}
    if baseline:
        bc = CountingModel(model)
        _, bm, frac = random_search(bc, x, y, t, render, dim, queries, seeded_generator((seed or 0) + 7919, x.device))
        extra.update({"random_baseline_success": (bm < 0).float(), "random_draw_success": frac,
                      "baseline_forward_images": bc.forward_images})
    params = {"kind": kind, "queries": queries, "seed": seed, "targeted": t is not None}
    return finish("physical-artefacts", counted, x, adv, y, t, logits0, queries, started, params, extra)
