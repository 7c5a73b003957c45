"""JPEG re-encoding as a defence, written in torch so that it runs batched on the model's device.

The lossy core of baseline JPEG (ITU-T T.81): RGB -> YCbCr, 4:2:0 chroma subsampling, 8x8 DCT,
quantisation by the standard Annex K tables scaled to ``quality`` as libjpeg does, then the decoder's
inverse and a rounding to 8 bits. The rounding makes it non-differentiable (its gradient is zero almost
everywhere): :func:`jpeg_smooth` replaces each rounding r(x) by r(x) + (x - r(x))^3, the differentiable
approximation of Shin & Song ("JPEG-resistant adversarial images", NeurIPS MLSec workshop 2017), which the
adaptive mode uses for the backward pass (BPDA, Athalye et al. 2018). Defence after Dziugaite et al. 2016
and Guo et al. (ICLR 2018).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F

_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87,
         80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92,
         95, 98, 112, 100, 103, 99]
_CHROMA = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99,
           99, 99, 99] + [99] * 32


def tables(quality: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The luminance and chrominance quantisation tables at ``quality`` (libjpeg's scaling, entries in [1, 255])."""
    if not isinstance(quality, int) or isinstance(quality, bool) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer in [1, 100]; got {quality!r}")
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    out = []
    for base in (_LUMA, _CHROMA):
        t = torch.floor((torch.tensor(base, dtype=torch.float64) * scale + 50) / 100).clamp(1, 255)
        out.append(t.view(8, 8).float())
    return out[0], out[1]


@lru_cache(maxsize=4)
def _dct(device: str) -> torch.Tensor:
    k = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * k[None] + 1) * k[:, None] * math.pi / 16) * 0.5
    d[0] /= math.sqrt(2)
    return d.float().to(device)


def _blocks(c: torch.Tensor) -> torch.Tensor:  # (B, H, W) -> (B, H/8, W/8, 8, 8)
    b, h, w = c.shape
    return c.view(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)


def _unblocks(c: torch.Tensor) -> torch.Tensor:
    b, hb, wb = c.shape[:3]
    return c.permute(0, 1, 3, 2, 4).reshape(b, hb * 8, wb * 8)


def _codec(images: torch.Tensor, quality: int, rnd: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"jpeg needs (B, 3, H, W) RGB images; got {tuple(images.shape)}")
    ql, qc = (t.to(images.device) for t in tables(quality))
    d = _dct(str(images.device))
    b, _, h, w = images.shape
    ph, pw = -h % 16, -w % 16  # whole MCUs (16 x 16 with 4:2:0), edges replicated as encoders do
    x = F.pad(images, (0, pw, 0, ph), mode="replicate") * 255 if ph or pw else images * 255
    r, g, bl = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = -0.168736 * r - 0.331264 * g + 0.5 * bl + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * bl + 128
    chroma = F.avg_pool2d(torch.stack([cb, cr], 1), 2)
    out = []
    for plane, q in ((y, ql), (chroma[:, 0], qc), (chroma[:, 1], qc)):
        blk = _blocks(plane - 128)
        coef = d @ blk @ d.T
        coef = rnd(coef / q) * q
        out.append(_unblocks(d.T @ coef @ d) + 128)
    y2 = out[0]
    cb2, cr2 = (F.interpolate(c[:, None], scale_factor=2, mode="nearest")[:, 0] - 128 for c in out[1:])
    rgb = torch.stack([y2 + 1.402 * cr2, y2 - 0.344136 * cb2 - 0.714136 * cr2, y2 + 1.772 * cb2], 1)
    rgb = rnd(rgb.clamp(0, 255)) / 255
    return rgb[..., :h, :w]


def jpeg(images: torch.Tensor, *, quality: int = 75, generator: torch.Generator | None = None) -> torch.Tensor:
    """The images JPEG-encoded at ``quality`` and decoded again (values on the 8-bit grid)."""
    return _codec(images, quality, torch.round)


def _soft_round(x: torch.Tensor) -> torch.Tensor:
    r = torch.round(x)
    return r + (x - r) ** 3


def jpeg_smooth(images: torch.Tensor, *, quality: int = 75, generator: torch.Generator | None = None) -> torch.Tensor:
    """A differentiable stand-in for :func:`jpeg` (cubic rounding, Shin & Song 2017): for gradients only."""
    return _codec(images, quality, _soft_round)
