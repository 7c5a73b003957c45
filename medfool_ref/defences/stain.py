"""Stain normalisation as an input-restoration defence: Macenko (ISBI 2009) and Reinhard (IEEE CG&A 2001), in torch.

Both estimate per-tile statistics and map the tile onto a reference H&E appearance. The estimation
(eigenvectors, percentiles, means) runs without gradients, as a pre-processing step would; the mapping
it parameterises is differentiable, so an attacker's gradient flows through the application (the
adaptive and the plain attack see the same function). Batched: one eigen-decomposition per tile, all
at once; tiles with too little tissue are passed through unchanged.
"""

from __future__ import annotations

import torch

# Macenko's reference stain vectors (H, E columns) and their 99th-percentile concentrations, the values
# used by Macenko et al.'s reference implementation and its ports (a fact, not code)
HE_REF = ((0.5626, 0.2159), (0.7201, 0.8012), (0.4062, 0.5581))
MAX_C_REF = (1.9705, 1.0308)
IO = 240.0  # transmitted light intensity
BETA, ALPHA = 0.15, 1.0  # OD threshold for tissue; angle percentile (%)
# Reinhard target: mean and std of l-alpha-beta (log10 LMS) over the sample tile crc-val-he-7k-sample/NORM-TCGA-CLTVRFTD.png
REINHARD_REF = ((-0.4257, -0.0513, 0.0241), (0.2131, 0.0317, 0.0103))

_RGB2LMS = ((0.3811, 0.5783, 0.0402), (0.1967, 0.7244, 0.0782), (0.0241, 0.1288, 0.8444))
_LMS2LAB = ((1 / 3 ** 0.5, 1 / 3 ** 0.5, 1 / 3 ** 0.5), (1 / 6 ** 0.5, 1 / 6 ** 0.5, -2 / 6 ** 0.5), (1 / 2 ** 0.5, -1 / 2 ** 0.5, 0.0))


def _t(rows: tuple, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(rows, dtype=like.dtype, device=like.device)


def to_lab(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> Reinhard's l-alpha-beta (log10 LMS, decorrelated), (B, 3, H, W)."""
    lms = torch.einsum("ij,bjhw->bihw", _t(_RGB2LMS, x), x.clamp_min(1 / 255))
    return torch.einsum("ij,bjhw->bihw", _t(_LMS2LAB, x), torch.log10(lms.clamp_min(1e-4)))


def from_lab(lab: torch.Tensor) -> torch.Tensor:
    lms = 10 ** torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_t(_LMS2LAB, lab)), lab)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_t(_RGB2LMS, lab)), lms).clamp(0, 1)


def reinhard(images: torch.Tensor) -> torch.Tensor:
    """Each tile's l-alpha-beta channel means and standard deviations moved to :data:`REINHARD_REF`."""
    lab = to_lab(images)
    with torch.no_grad():
        mu, sd = lab.mean((2, 3), keepdim=True), lab.std((2, 3), keepdim=True).clamp_min(1e-6)
    ref_mu, ref_sd = (_t(v, images).view(1, 3, 1, 1) for v in REINHARD_REF)
    return from_lab((lab - mu) / sd * ref_sd + ref_mu)


@torch.no_grad()
def macenko_stats(images: torch.Tensor, min_tissue: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per tile: the stain matrix (B, 3, 2; H then E), the 99th-percentile concentrations (B, 2), and whether
    the tile had enough tissue (optical density above BETA in every channel) to estimate them."""
    b = images.shape[0]
    od = (-torch.log((images * 255 + 1) / IO)).clamp_min(0).flatten(2).transpose(1, 2)  # (B, N, 3)
    mask = (od > BETA).all(2)  # (B, N)
    m = mask.to(od.dtype)
    count = m.sum(1).clamp_min(1)
    mu = (od * m[..., None]).sum(1) / count[:, None]
    cen = (od - mu[:, None]) * m[..., None]
    cov = cen.transpose(1, 2) @ cen / count[:, None, None]
    _, vec = torch.linalg.eigh(cov.double())
    plane = vec[..., 1:].to(od.dtype)  # the two largest eigenvectors, (B, 3, 2)
    plane = plane * torch.where(plane.sum(1, keepdim=True) < 0, -1.0, 1.0)
    proj = od @ plane  # (B, N, 2)
    phi = torch.atan2(proj[..., 1], proj[..., 0]).masked_fill(~mask, float("nan"))
    lo = torch.nanquantile(phi, ALPHA / 100, dim=1)
    hi = torch.nanquantile(phi, 1 - ALPHA / 100, dim=1)
    v_lo = (plane @ torch.stack([lo.cos(), lo.sin()], 1)[..., None])[..., 0]
    v_hi = (plane @ torch.stack([hi.cos(), hi.sin()], 1)[..., None])[..., 0]
    first = (v_lo[:, 0] > v_hi[:, 0])[:, None]
    he = torch.stack([torch.where(first, v_lo, v_hi), torch.where(first, v_hi, v_lo)], 2)  # (B, 3, 2)
    ok = (mask.sum(1) >= min_tissue) & torch.isfinite(he).all((1, 2))
    he = torch.where(ok.view(b, 1, 1), he, _t(HE_REF, od))  # a tile without tissue: the reference (then left as it was)
    conc = torch.linalg.pinv(he) @ od.transpose(1, 2)  # (B, 2, N)
    max_c = torch.quantile(conc, 0.99, dim=2)
    ok &= (max_c > 1e-3).all(1)
    return he, max_c.clamp_min(1e-3), ok


def macenko(images: torch.Tensor) -> torch.Tensor:
    """Each tile's stains separated (Macenko) and re-rendered with :data:`HE_REF` at :data:`MAX_C_REF`."""
    he, max_c, ok = macenko_stats(images.detach())
    b, _, h, w = images.shape
    od = -torch.log((images * 255 + 1) / IO).flatten(2)  # (B, 3, N), differentiable
    conc = torch.linalg.pinv(he) @ od * (_t(MAX_C_REF, images)[None, :, None] / max_c[..., None])
    out = (IO * torch.exp(-_t(HE_REF, images) @ conc) / 255).clamp(0, 1).view(b, 3, h, w)
    return torch.where(ok.view(b, 1, 1, 1), out, images)


def stain_normalise(images: torch.Tensor, *, method: str = "macenko", generator: torch.Generator | None = None) -> torch.Tensor:
    if method not in ("macenko", "reinhard"):
        raise ValueError(f"method must be macenko or reinhard; got {method!r}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"stain normalisation needs (B, 3, H, W) RGB images; got {tuple(images.shape)}")
    return macenko(images) if method == "macenko" else reinhard(images)
