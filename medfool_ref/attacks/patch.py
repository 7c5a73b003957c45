"""Universal adversarial patch with random placement, scale and rotation.

Brown, Mané, Roy, Abadi & Gilmer, "Adversarial Patch", arXiv:1712.09665 (2017). One patch is
trained over a batch of tiles to push every tile to a target class wherever it lands. Placement,
scale and rotation are drawn per image and applied to the patch and its mask together in one
``grid_sample``. Its effect is always measured beside occlusion controls (a grey and a random-noise
patch of the same size at the same places), so that fooling is told apart from covering tissue.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._core import AttackResult, Progress, check_int, check_positive, finish, prepare, seeded_generator


@dataclass
class Placement:
    theta: torch.Tensor  # (N, 2, 3): image coordinates -> patch coordinates


def place(n: int, size: tuple[int, int], area: float, gen: torch.Generator, device: torch.device, *,
          scale_jitter: float = 0.2, max_rotation_deg: float = 180.0, centre: bool = False) -> Placement:
    """Random placements keeping the (rotated) patch inside the image; its area is ``area`` x scale^2 of the image."""
    h, w = size
    scale = 1 + (torch.rand(n, device=device, generator=gen) * 2 - 1) * scale_jitter
    side = math.sqrt(area * h * w) * scale  # pixels
    half_x, half_y = side / w, side / h  # half-size in normalised units (the image spans 2)
    angle = (torch.rand(n, device=device, generator=gen) * 2 - 1) * math.radians(max_rotation_deg)
    reach_x = (1 - half_x * math.sqrt(2)).clamp(min=0)
    reach_y = (1 - half_y * math.sqrt(2)).clamp(min=0)
    if centre:
        cx = cy = torch.zeros(n, device=device)
    else:
        cx = (torch.rand(n, device=device, generator=gen) * 2 - 1) * reach_x
        cy = (torch.rand(n, device=device, generator=gen) * 2 - 1) * reach_y
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3, device=device)
    # patch coords = R(-angle) (q - c) / half
    theta[:, 0, 0] = cos / half_x
    theta[:, 0, 1] = sin * (h / w) / half_x
    theta[:, 1, 0] = -sin * (w / h) / half_y
    theta[:, 1, 1] = cos / half_y
    theta[:, 0, 2] = -(theta[:, 0, 0] * cx + theta[:, 0, 1] * cy)
    theta[:, 1, 2] = -(theta[:, 1, 0] * cx + theta[:, 1, 1] * cy)
    return Placement(theta)


def apply_patch(images: torch.Tensor, patch: torch.Tensor, placement: Placement) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste ``patch`` (C, S, S) onto each image at its placement; return patched images and masks (N, 1, H, W)."""
    n, c, h, w = images.shape
    rgba = torch.cat([patch, torch.ones_like(patch[:1])], dim=0)[None].expand(n, -1, -1, -1)
    grid = F.affine_grid(placement.theta.to(images), [n, c + 1, h, w], align_corners=False)
    warped = F.grid_sample(rgba, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mask = warped[:, c:].clamp(0, 1)
    return images * (1 - mask) + warped[:, :c] * mask, mask


def train_patch(model: nn.Module, images: torch.Tensor, *, target: int, area: float = 0.1, steps: int = 100,
                lr: float = 0.05, resolution: int = 48, seed: int | None = 0, scale_jitter: float = 0.2,
                max_rotation_deg: float = 180.0, init: str = "uniform", progress: Progress | None = None
                ) -> tuple[torch.Tensor, int, int]:
    """Optimise a universal patch (Adam on the targeted loss) over random placements on ``images``.

    Returns the patch (C, resolution, resolution) and the forward/backward image counts.
    """
    gen = seeded_generator(seed, images.device)
    c, h, w = images.shape[1:]
    patch = torch.rand(c, resolution, resolution, device=images.device, generator=gen)
    if init == "grey":
        patch = torch.full_like(patch, 0.5)
    patch.requires_grad_(True)
    opt = torch.optim.Adam([patch], lr=lr)
    goal = torch.full((images.shape[0],), target, device=images.device, dtype=torch.long)
    for i in range(steps):
        where = place(images.shape[0], (h, w), area, gen, images.device, scale_jitter=scale_jitter, max_rotation_deg=max_rotation_deg)
        patched, _ = apply_patch(images, patch, where)
        loss = F.cross_entropy(model(patched), goal)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            patch.clamp_(0, 1)
        if progress is not None:
            progress(i + 1, steps)
    n = images.shape[0] * steps
    return patch.detach(), n, n


@torch.no_grad()
def placement_success(model: nn.Module, images: torch.Tensor, patch: torch.Tensor, *, target: int, area: float,
                      draws: int = 8, seed: int = 12345, scale_jitter: float = 0.2, max_rotation_deg: float = 180.0
                      ) -> dict[str, float]:
    """Targeted success of the patch and of grey / random-noise patches of the same size at the same fresh placements."""
    gen = seeded_generator(seed, images.device)
    n = images.shape[0]
    reps = images.repeat(draws, 1, 1, 1)
    where = place(reps.shape[0], tuple(images.shape[-2:]), area, gen, images.device, scale_jitter=scale_jitter,
                  max_rotation_deg=max_rotation_deg)
    noise = torch.rand(patch.shape, device=images.device, generator=gen)
    out: dict[str, float] = {}
    for name, p in (("adversarial", patch), ("grey", torch.full_like(patch, 0.5)), ("noise", noise)):
        patched, mask = apply_patch(reps, p, where)
        out[name] = float((model(patched).argmax(1) == target).float().mean())
        out["measured_area"] = float(mask.mean())
    out["draws_per_image"] = draws
    out["images"] = n
    return out


def adversarial_patch(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                      target: int | torch.Tensor | None = None, area: float = 0.1, steps: int = 100, lr: float = 0.05,
                      resolution: int = 48, seed: int | None = 0, eval_draws: int = 8,
                      progress: Progress | None = None) -> AttackResult:
    """Train a universal patch on ``images`` and apply it at one random placement per image.

    ``target`` is required (patches are targeted). The result's extra fields hold the patch and the
    success under fresh placements beside the grey and noise controls.
    """
    if target is None:
        raise ValueError("target is required: an adversarial patch pushes tiles to a chosen class")
    check_positive("area", area, upper=0.5)
    check_int("steps", steps, low=1, high=1_000_000)
    check_int("resolution", resolution, low=4, high=1024)
    check_positive("lr", lr, upper=10.0)
    started = time.perf_counter()
    counted, x, y, t, logits0, _ = prepare(model, images, labels, target)
    assert t is not None
    if bool((t != t[0]).any()):
        raise ValueError("a universal patch has one target class for the whole batch")
    tgt = int(t[0])
    patch, fwd, bwd = train_patch(model, x, target=tgt, area=area, steps=steps, lr=lr, resolution=resolution,
                                  seed=seed, progress=progress)
    counted.forward_calls += steps
    counted.forward_images += fwd
    counted.backward_calls += steps
    counted.backward_images += bwd
    gen = seeded_generator((seed or 0) + 7, x.device)
    adv, _ = apply_patch(x, patch, place(x.shape[0], tuple(x.shape[-2:]), area, gen, x.device))
    params = {"area": area, "steps": steps, "lr": lr, "resolution": resolution, "seed": seed, "target": tgt}
    result = finish("patch", counted, x, adv.detach(), y, t, logits0, steps, started, params)
    result.extra["patch"] = patch
    result.extra["placements"] = placement_success(model, x, patch, target=tgt, area=area, draws=eval_draws,
                                                   seed=(seed or 0) + 99_991)
    return result
