"""White-balance shift: the worst camera colour temperature and tint within a stated plausible range.

After Afifi & Brown, "What Else Can Fool Deep Learning? Addressing Color Constancy Errors on Deep Neural Network
Performance" (ICCV 2019), who render images as if white-balanced for the wrong illuminant. Here a tile is treated as
white-balanced for ``reference_k`` kelvin and re-rendered as if the scanner or camera had assumed another colour
temperature: von Kries per-channel gains on linear sRGB, from the Planckian locus (Kim et al.'s cubic approximation of
its chromaticity, 1667-25000 K) converted to linear sRGB, times a green-magenta ``tint`` gain; gains are normalised to
keep the mean luminance. The default range, 2850-7500 K, spans the camera presets Afifi & Brown render (tungsten to
shade); the default searches a narrower 4500-8000 K, tint +-3%, closer to what a scanner's calibration could drift by.
Black-box: a budget of ``queries`` model calls per tile, about half on a grid over the range (its corners included),
the rest on a local search around the worst grid point; the baseline is the same number of random settings from the
same range (a tile counts as fooled if any of them fools it).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ._core import AttackResult, CountingModel, Progress, check_int, check_positive, finish, prepare, seeded_generator
from ._search import grid_search, local_search, random_search

_XYZ_TO_SRGB = torch.tensor([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]], dtype=torch.float64)
LOCUS = (1667.0, 25000.0)  # kelvin: where the approximation holds


def planckian_rgb(kelvin: torch.Tensor) -> torch.Tensor:
    """Linear sRGB (N, 3) of a blackbody at ``kelvin`` (N,), green = 1 (Kim et al. 2002's locus approximation)."""
    t = kelvin.double()
    x = torch.where(t <= 4000, -0.2661239e9 / t**3 - 0.2343589e6 / t**2 + 0.8776956e3 / t + 0.179910,
                    -3.0258469e9 / t**3 + 2.1070379e6 / t**2 + 0.2226347e3 / t + 0.240390)
    y = torch.where(t <= 2222, -1.1063814 * x**3 - 1.34811020 * x**2 + 2.18555832 * x - 0.20219683,
                    torch.where(t <= 4000, -0.9549476 * x**3 - 1.37418593 * x**2 + 2.09137015 * x - 0.16748867,
                                3.0817580 * x**3 - 5.87338670 * x**2 + 3.75112997 * x - 0.37001483))
    xyz = torch.stack([x / y, torch.ones_like(x), (1 - x - y) / y], dim=1)
    rgb = xyz @ _XYZ_TO_SRGB.T.to(xyz.device)
    return rgb / rgb[:, 1:2]


def gains(kelvin: torch.Tensor, tint: torch.Tensor, reference_k: float) -> torch.Tensor:
    """(N, 3) von Kries gains on linear sRGB: a tile balanced for ``reference_k`` rendered as if balanced for ``kelvin``
    (lower kelvin: bluer; higher: warmer), the green channel times ``tint``; normalised to keep luminance."""
    ref = planckian_rgb(torch.full_like(kelvin, reference_k, dtype=torch.float64))
    g = ref / planckian_rgb(kelvin)
    g[:, 1] = g[:, 1] * tint.double()
    lum = torch.tensor([0.2126, 0.7152, 0.0722], dtype=torch.float64, device=g.device)
    return (g / (g @ lum)[:, None]).float()


def _linear(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055).clamp_min(0) ** 2.4)


def _encode(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def rebalance(x: torch.Tensor, kelvin: torch.Tensor, tint: torch.Tensor, reference_k: float = 6500.0) -> torch.Tensor:
    """Tiles (N, 3, H, W) in sRGB re-rendered with the white balance of ``kelvin`` (N,) and ``tint`` (N,)."""
    g = gains(kelvin.to(x.device), tint.to(x.device), reference_k).to(x)
    return _encode(_linear(x) * g[:, :, None, None]).clamp(0, 1)


def white_balance(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                  target: int | torch.Tensor | None = None, min_kelvin: float = 4500.0, max_kelvin: float = 8000.0,
                  max_tint: float = 0.03, reference_k: float = 6500.0, queries: int = 24, seed: int | None = 0,
                  baseline: bool = True) -> AttackResult:
    """The worst white balance per tile, colour temperature in [``min_kelvin``, ``max_kelvin``] (searched uniformly in
    mired) and green gain in ``1 +- max_tint``, from ``queries`` model queries per tile."""
    for name, v in (("min_kelvin", min_kelvin), ("max_kelvin", max_kelvin), ("reference_k", reference_k)):
        check_positive(name, v)
        if not LOCUS[0] <= v <= LOCUS[1]:
            raise ValueError(f"{name} must lie on the modelled Planckian locus, {LOCUS[0]:g}-{LOCUS[1]:g} K; got {v:g}")
    if min_kelvin >= max_kelvin:
        raise ValueError(f"min_kelvin must be below max_kelvin; got {min_kelvin:g} >= {max_kelvin:g}")
    check_positive("max_tint", max_tint, upper=0.5, allow_zero=True)
    check_int("queries", queries, low=1, high=100_000)
    started = time.perf_counter()
    counted, x, y, t, logits0, _ = prepare(model, images, labels, target)
    lo, hi = 1e6 / max_kelvin, 1e6 / min_kelvin  # mired

    def settings(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 1e6 / (lo + (hi - lo) * p[:, 0]), 1 + (p[:, 1] * 2 - 1) * max_tint

    def render(xs: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return rebalance(xs, *settings(p), reference_k)

    tints = 3 if queries >= 9 and max_tint > 0 else 2 if queries >= 4 and max_tint > 0 else 1
    temps = max(1, queries // (2 * tints))  # half the queries on a grid that includes the corners of the range
    grid = torch.cartesian_prod(torch.linspace(0, 1, temps, device=x.device) if temps > 1 else torch.full((1,), 0.5, device=x.device),
                                torch.linspace(0, 1, tints, device=x.device) if tints > 1 else torch.full((1,), 0.5, device=x.device))
    start = grid_search(counted, x, y, t, render, grid)
    best, _ = local_search(counted, x, y, t, render, 2, queries - grid.shape[0], seeded_generator(seed, x.device), start=start,
                           sigma=0.5 / temps)
    with torch.no_grad():
        adv = render(x, best)
    kelvin, tint = settings(best)
    extra: dict[str, object] = {"kelvin": kelvin, "tint": tint}
    if baseline:
        bc = CountingModel(model)
        _, bm, frac = random_search(bc, x, y, t, render, 2, queries, seeded_generator((seed or 0) + 7919, x.device))
        extra.update({"random_baseline_success": (bm < 0).float(), "random_draw_success": frac,
                      "baseline_forward_images": bc.forward_images})
    params = {"min_kelvin": min_kelvin, "max_kelvin": max_kelvin, "max_tint": max_tint, "reference_k": reference_k,
              "queries": queries, "seed": seed, "targeted": t is not None}
    return finish("white-balance-shift", counted, x, adv, y, t, logits0, queries, started, params, extra)
