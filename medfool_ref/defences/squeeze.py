"""Squeezers: bit-depth reduction and median filtering (Xu, Evans & Qi, "Feature Squeezing", NDSS 2018).

Bit-depth reduction rounds, so its gradient is zero almost everywhere (the adaptive mode passes it
straight through, BPDA). The median filter is a sorting network of element-wise min/max over the
window's shifted copies (Batcher's odd-even merge sort, Knuth TAOCP 5.3.4), batched over the whole tensor
and differentiable almost everywhere (the gradient reaches the pixel that was the median).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F


def bit_depth(images: torch.Tensor, *, bits: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each channel rounded to ``2**bits`` evenly spaced levels in [0, 1]."""
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an integer in [1, 8]; got {bits!r}")
    levels = 2 ** bits - 1
    return torch.round(images * levels) / levels


@lru_cache(maxsize=16)
def _comparators(n: int) -> tuple[tuple[int, int], ...]:
    """Batcher's odd-even merge sort network for n inputs (padded to a power of two; pairs past n dropped)."""
    size = 1
    while size < n:
        size *= 2
    out = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:
                        out.append((a, b))
            k //= 2
        p *= 2
    return tuple(out)


def median_filter(images: torch.Tensor, *, size: int = 3, generator: torch.Generator | None = None) -> torch.Tensor:
    """The median of each pixel's ``size`` x ``size`` neighbourhood, per channel (reflect padding; even sizes take
    the lower median)."""
    if not isinstance(size, int) or isinstance(size, bool) or not 2 <= size <= 9:
        raise ValueError(f"size must be an integer in [2, 9]; got {size!r}")
    lo, hi = (size - 1) // 2, size // 2
    x = F.pad(images, (lo, hi, lo, hi), mode="reflect")
    h, w = images.shape[-2:]
    v = [x[..., i:i + h, j:j + w] for i in range(size) for j in range(size)]
    for a, b in _comparators(len(v)):
        v[a], v[b] = torch.minimum(v[a], v[b]), torch.maximum(v[a], v[b])
    return v[(len(v) - 1) // 2]
