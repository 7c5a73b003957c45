"""A pathology-plausible distribution of tile transformations, sampled and applied as batch tensors.

What a tile can go through between an attacker and the model: the 8 flips/rotations of a square
tile, small rotations, rescaling and shifts (re-tiling, rescanning), H&E stain variation (jitter in
haematoxylin-eosin-DAB optical-density space, Ruifrok & Johnston's stain vectors), slight blur and
sensor noise. All parameters are drawn at once as tensors and applied with one ``grid_sample``,
one grouped convolution and elementwise operations: differentiable, no per-image Python loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB) in optical density
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64)
_RGB_FROM_HED = _RGB_FROM_HED / _RGB_FROM_HED.norm(dim=1, keepdim=True)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)


@dataclass(frozen=True)
class TransformConfig:
    dihedral: bool = True
    max_rotation_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_shift: float = 0.05  # fraction of the half-width
    stain_scale: float = 0.05  # multiplicative jitter of each stain's optical density
    stain_shift: float = 0.02  # additive jitter of each stain's optical density
    max_blur_sigma: float = 1.0  # pixels
    max_noise: float = 0.02  # standard deviation on [0, 1] intensities

    @staticmethod
    def identity() -> "TransformConfig":
        return TransformConfig(False, 0.0, (1.0, 1.0), 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass
class TransformBatch:
    """Sampled parameters for N images."""

    theta: torch.Tensor  # (N, 2, 3) affine matrices for grid_sample
    stain_scale: torch.Tensor  # (N, 3)
    stain_shift: torch.Tensor  # (N, 3)
    blur_sigma: torch.Tensor  # (N,)
    noise_std: torch.Tensor  # (N,)
    noise: torch.Tensor | None  # (N, C, H, W) drawn lazily for the image size
    identity: bool
    geometric: bool = True  # False: the config has no flip, rotation, scaling or shift (skip the resampling)
    stain: bool = True  # False: no stain jitter configured
    blur: bool = True  # False: no blur configured


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, device=device, generator=gen)


def sample(n: int, config: TransformConfig, gen: torch.Generator, device: torch.device | str = "cpu",
           image_shape: tuple[int, int, int] | None = None) -> TransformBatch:
    """Draw transformation parameters for ``n`` images from ``gen``."""
    device = torch.device(device)
    angle = _uniform(n, -1, 1, gen, device) * math.radians(config.max_rotation_deg)
    if config.dihedral:
        angle = angle + torch.randint(0, 4, (n,), device=device, generator=gen) * (math.pi / 2)
        flip = torch.where(torch.rand(n, device=device, generator=gen) < 0.5, -1.0, 1.0)
    else:
        flip = torch.ones(n, device=device)
    scale = _uniform(n, *config.scale_range, gen, device)
    shift = (torch.rand(n, 2, device=device, generator=gen) * 2 - 1) * config.max_shift
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = cos * flip
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * flip
    theta[:, 1, 1] = cos
    theta[:, :, 2] = shift
    stain_scale = 1 + (torch.rand(n, 3, device=device, generator=gen) * 2 - 1) * config.stain_scale
    stain_shift = (torch.rand(n, 3, device=device, generator=gen) * 2 - 1) * config.stain_shift
    blur = torch.rand(n, device=device, generator=gen) * config.max_blur_sigma
    noise_std = torch.rand(n, device=device, generator=gen) * config.max_noise
    noise = None
    if image_shape is not None and config.max_noise > 0:
        noise = torch.randn((n, *image_shape), device=device, generator=gen)
    ident = config == TransformConfig.identity()
    geometric = config.dihedral or config.max_rotation_deg > 0 or config.scale_range != (1.0, 1.0) or config.max_shift > 0
    return TransformBatch(theta, stain_scale, stain_shift, blur, noise_std, noise, ident, geometric,
                          config.stain_scale > 0 or config.stain_shift > 0, config.max_blur_sigma > 0)


def stain_jitter(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Scale and shift each stain's optical density (HED space) and convert back to RGB."""
    # od' = ((od @ HED_FROM_RGB) * scale + shift) @ RGB_FROM_HED, folded into one 3x3 map per image
    # (composed in float64, so that no jitter is an identity to float32 precision)
    hed, rgb = _HED_FROM_RGB.to(scale.device), _RGB_FROM_HED.to(scale.device)
    a = torch.einsum("cd,nd,de->nce", hed, scale.double(), rgb).to(x)
    b = (shift.double() @ rgb).to(x)
    od = -torch.log(x.clamp(min=1e-3))  # (N, 3, H, W)
    od2 = torch.einsum("nchw,nce->nehw", od, a) + b[:, :, None, None]
    return torch.exp(-od2).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Blur each image with its own sigma in one grouped convolution (sigma 0 leaves it unchanged)."""
    n, c, h, w = x.shape
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.clamp(min=1e-3).view(n, 1)
    k1 = torch.exp(-0.5 * (offsets.view(1, -1) / s) ** 2)
    k1 = k1 / k1.sum(dim=1, keepdim=True)  # (n, 2r+1); sigma ~0 gives a delta kernel
    kernel = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(c, dim=0)[:, None]  # (n*c, 1, k, k)
    padded = F.pad(x.reshape(1, n * c, h, w), (radius,) * 4, mode="reflect")
    return F.conv2d(padded, kernel, groups=n * c).reshape(n, c, h, w)


def apply(x: torch.Tensor, t: TransformBatch) -> torch.Tensor:
    """Apply sampled transformations to a batch (N must match), differentiably."""
    if t.identity:
        return x
    out = x
    if t.geometric:
        grid = F.affine_grid(t.theta.to(x), list(x.shape), align_corners=False)
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if t.stain:
        out = stain_jitter(out, t.stain_scale.to(x), t.stain_shift.to(x))
    if t.blur:
        out = gaussian_blur(out, t.blur_sigma.to(x))
    if t.noise is not None:
        out = out + t.noise.to(x) * t.noise_std.to(x).view(-1, 1, 1, 1)
    return out.clamp(0, 1)
