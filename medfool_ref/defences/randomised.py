"""Random resizing and padding (Xie et al., "Mitigating adversarial effects through randomization", ICLR 2018).

Each tile is shrunk by a factor drawn uniformly from [min_scale, 1] and placed at a random offset on a
white canvas of its own size (white: the slide's background), one draw per tile, all tiles in one
``grid_sample`` call. Differentiable for a fixed draw; its defence is the randomness, which the adaptive
mode answers with EOT (Athalye et al., ICML 2018).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_pad(images: torch.Tensor, *, min_scale: float = 0.85, generator: torch.Generator | None = None) -> torch.Tensor:
    if not 0 < min_scale <= 1:
        raise ValueError(f"min_scale must be in (0, 1]; got {min_scale}")
    b = images.shape[0]
    dev, dt = images.device, images.dtype
    u = torch.rand(b, 3, generator=generator, device=generator.device if generator is not None else dev).to(dev, dt)
    s = min_scale + (1 - min_scale) * u[:, 0]
    tx, ty = (1 - s) * (2 * u[:, 1] - 1), (1 - s) * (2 * u[:, 2] - 1)  # the shrunk tile stays inside the canvas
    theta = torch.zeros(b, 2, 3, device=dev, dtype=dt)
    theta[:, 0, 0], theta[:, 1, 1] = 1 / s, 1 / s
    theta[:, 0, 2], theta[:, 1, 2] = -tx / s, -ty / s
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    inside = F.grid_sample(torch.ones_like(images[:, :1]), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    moved = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return moved * inside + (1 - inside)
