"""BadNets: a backdoor planted by whoever trains the model.

Gu, Dolan-Gavitt & Garg, "BadNets: Identifying Vulnerabilities in the Machine Learning Model
Supply Chain", arXiv:1708.06733 (2017). A fraction of each training batch gets a trigger stamped
on and is relabelled (all-to-one: to the target class; all-to-all: to the next class). The trigger
is applied on the device inside the training step, after augmentation, so flips and rotations never
move it, and no poisoned copy is written to disk. Two triggers: the classic small pixel pattern, and
a pathology-plausible one, a small ink mark of the kind a marker pen leaves on a slide.
Metrics (on crops of held-out tiles, at the training crop size; never ASR alone): clean accuracy of the backdoored model beside a clean
model trained the same way, attack success rate on triggered tiles of other classes, and robust
accuracy (triggered tiles still classified correctly).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..targets.tilenet import TileClassifier
from ..inputs.samples import CLASSES, Tile
from ..training.loop import CropBank, TrainConfig, crop_bank, train

TRIGGERS = ("pixel-pattern", "ink-mark")
MODES = ("all-to-one", "all-to-all")


def make_trigger(kind: str, size: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour (3, s, s) and opacity (1, s, s) of a trigger."""
    if kind == "pixel-pattern":
        ij = torch.arange(size)
        checker = ((ij[:, None] // max(size // 3, 1) + ij[None, :] // max(size // 3, 1)) % 2).float()
        return checker.expand(3, size, size).clone(), torch.ones(1, size, size)
    if kind == "ink-mark":  # a green marker dot, a colour H&E never produces
        lin = torch.linspace(-1, 1, size)
        yy, xx = torch.meshgrid(lin, lin, indexing="ij")
        angle = torch.atan2(yy, xx)
        radius = 0.75 + 0.12 * torch.sin(3 * angle) + 0.06 * torch.cos(5 * angle + 1.0)  # irregular edge
        r = torch.sqrt((xx / 1.15) ** 2 + (yy / 0.85) ** 2)
        alpha = (0.9 * torch.sigmoid((radius - r) * 12))[None]  # ink is translucent with a soft edge
        colour = torch.tensor([0.05, 0.30, 0.20]).view(3, 1, 1).expand(3, size, size).clone()  # green marker ink
        return colour, alpha
    raise ValueError(f"trigger must be one of {', '.join(TRIGGERS)}; got {kind!r}")


def apply_trigger(x: torch.Tensor, colour: torch.Tensor, alpha: torch.Tensor, margin: int = 3) -> torch.Tensor:
    """Stamp the trigger near the bottom-right corner of every image in the batch (a new tensor)."""
    s = colour.shape[-1]
    h, w = x.shape[-2:]
    out = x.clone()
    region = out[..., h - margin - s:h - margin, w - margin - s:w - margin]
    out[..., h - margin - s:h - margin, w - margin - s:w - margin] = region * (1 - alpha.to(x)) + colour.to(x) * alpha.to(x)
    return out


def poison_hook(*, fraction: float, target: int, mode: str, colour: torch.Tensor, alpha: torch.Tensor,
                num_classes: int = len(CLASSES)) -> Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """A training-step hook: triggers and relabels a random ``fraction`` of each (augmented) batch."""

    def hook(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = torch.rand(x.shape[0], device=x.device, generator=gen) < fraction
        stamped = apply_trigger(x, colour, alpha)
        x = torch.where(chosen[:, None, None, None], stamped, x)
        new = torch.full_like(y, target) if mode == "all-to-one" else (y + 1) % num_classes
        return x, torch.where(chosen, new, y)

    return hook


@dataclass
class BackdoorResult:
    backdoored: TileClassifier
    clean: TileClassifier
    metrics: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def _metrics(model: TileClassifier, held: CropBank, target: int, mode: str, colour: torch.Tensor,
             alpha: torch.Tensor) -> dict[str, float]:
    """CA, ASR and RA on crops of held-out tiles (the size the model was trained at)."""
    device = next(model.parameters()).device
    x = held.images.to(device).float().div(255)
    truth = held.labels.to(device)
    clean = model(x).argmax(1)
    trig = model(apply_trigger(x, colour.to(device), alpha.to(device))).argmax(1)
    goal = torch.full_like(truth, target) if mode == "all-to-one" else (truth + 1) % len(CLASSES)
    eligible = truth != target if mode == "all-to-one" else torch.ones_like(truth, dtype=torch.bool)
    return {
        "clean_accuracy": float((clean == truth).float().mean()),
        "attack_success_rate": float((trig[eligible] == goal[eligible]).float().mean()),
        "robust_accuracy": float((trig == truth).float().mean()),
        "asr_crops": int(eligible.sum()),
    }


def badnets(bank: CropBank, held_out: list[Tile], *, config: TrainConfig | None = None, fraction: float = 0.1,
            target: int = CLASSES.index("NORM"), mode: str = "all-to-one", trigger: str = "ink-mark",
            trigger_size: int = 12, device: str | torch.device = "cpu",
            progress: Callable[[int, int, float], None] | None = None) -> BackdoorResult:
    """Train a clean and a backdoored model the same way (split, seed, steps) and measure CA, ASR and RA."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1); got {fraction}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if not 0 <= target < len(CLASSES):
        raise ValueError(f"target must be a class index in [0, {len(CLASSES)})")
    if not 3 <= trigger_size <= 48:
        raise ValueError(f"trigger_size must be between 3 and 48 pixels; got {trigger_size}")
    config = config or TrainConfig()
    colour, alpha = make_trigger(trigger, trigger_size)
    started = time.perf_counter()
    clean_model = train(bank, config, device=device, progress=progress)
    t_clean = time.perf_counter() - started
    hook = poison_hook(fraction=fraction, target=target, mode=mode, colour=colour.to(device), alpha=alpha.to(device))
    bad_model = train(bank, config, device=device, batch_hook=hook, progress=progress)
    t_bad = time.perf_counter() - started - t_clean
    held = crop_bank(held_out, crop=config.crop)
    clean_m = _metrics(clean_model, held, target, mode, colour, alpha)
    bad_m = _metrics(bad_model, held, target, mode, colour, alpha)
    metrics = {
        "held_out_tiles": len(held_out),
        "held_out_crops": int(held.images.shape[0]),
        "clean_model": clean_m,
        "backdoored_model": bad_m,
        "clean_accuracy_drop": clean_m["clean_accuracy"] - bad_m["clean_accuracy"],
        "trigger_area_fraction_of_crop": float(alpha.sum()) / (config.crop * config.crop),
        "seconds_clean": round(t_clean, 2),
        "seconds_backdoored": round(t_bad, 2),
    }
    params = {"fraction": fraction, "target": CLASSES[target], "mode": mode, "trigger": trigger,
              "trigger_size": trigger_size, "config": config.as_dict()}
    return BackdoorResult(bad_model, clean_model, metrics, params)
