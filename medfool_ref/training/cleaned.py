"""Retraining after sanitisation: does removing the crops a sanitiser flags remove the backdoor?

The question Tran, Li & Madry (NeurIPS 2018) answer for spectral signatures: retrain on the set with the flagged
samples removed and measure the attack again. Here the retraining is the one training loop with the same recipe
(config, steps, seed) as the model being judged, and it stands beside a control: the same number of crops removed
at random. Measured on crops of held-out tiles: clean accuracy and the attack success rate (triggered crops of the
other classes classified as the target), each as k/n with a 95% Wilson interval.
"""

from __future__ import annotations

from typing import Any

import torch

from ..attacks.backdoor import apply_trigger
from ..reports.intervals import interval
from ..targets.tilenet import TileClassifier
from .loop import CropBank, TrainConfig, train


def _mask(name: str, mask: object, n: int) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != (n,):
        shape = list(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{name} must be a boolean tensor of shape [{n}] (one flag per crop); got {shape}")
    return mask.cpu()


def subset(bank: CropBank, keep: torch.Tensor) -> CropBank:
    """The crops where ``keep`` is True (same tiles list)."""
    keep = _mask("keep", keep, bank.labels.shape[0])
    return CropBank(bank.images[keep], bank.labels[keep], bank.tile_of[keep], list(bank.tiles))


@torch.no_grad()
def backdoor_metrics(model: TileClassifier, held: CropBank, *, target: int, colour: torch.Tensor,
                     alpha: torch.Tensor) -> dict[str, Any]:
    """Clean accuracy on all held-out crops and the all-to-one attack success rate on the triggered crops of the
    other classes, each ``{"k", "n", "lo", "hi", "few"}`` (a 95% Wilson interval)."""
    n_classes = len(getattr(model, "classes", ())) or None
    if not isinstance(target, int) or isinstance(target, bool) or target < 0 or (n_classes and target >= n_classes):
        raise ValueError(f"target={target!r} must be a class index of the model")
    device = next(model.parameters()).device
    x = held.images.to(device).float().div(255)
    truth = held.labels.to(device)
    other = truth != target
    if not bool(other.any()):
        raise ValueError("the held-out crops hold no class other than the target: no attack success rate to measure")
    clean = model(x).argmax(1)
    trig = model(apply_trigger(x[other], colour.to(device), alpha.to(device))).argmax(1)
    return {"clean_accuracy": interval(int((clean == truth).sum()), int(truth.numel())),
            "attack_success_rate": interval(int((trig == target).sum()), int(other.sum()))}


def retrain_without(bank: CropBank, remove: torch.Tensor, *, config: TrainConfig, held: CropBank, target: int,
                    colour: torch.Tensor, alpha: torch.Tensor, poison: torch.Tensor | None = None,
                    device: torch.device | str = "cpu") -> dict[str, Any]:
    """Train with ``config`` on the crops not in ``remove`` and measure the model (see :func:`backdoor_metrics`);
    with ``poison`` (the true poison mask, where known) also how many poisoned crops were removed and remain."""
    n = bank.labels.shape[0]
    remove = _mask("remove", remove, n)
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig; got {type(config).__name__}")
    if int(remove.sum()) >= n:
        raise ValueError("remove flags every crop: nothing left to train on")
    model = train(subset(bank, ~remove), config, device=device)
    out: dict[str, Any] = {"removed": int(remove.sum()), "trained_on": n - int(remove.sum()),
                           **backdoor_metrics(model, held, target=target, colour=colour, alpha=alpha)}
    if poison is not None:
        poison = _mask("poison", poison, n)
        out["poison_removed"] = int((remove & poison).sum())
        out["poison_left"] = int((~remove & poison).sum())
    return out


def random_removal(flagged: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """A control for a sanitiser: as many crops as ``flagged`` holds, drawn uniformly at random (seeded)."""
    if not isinstance(flagged, torch.Tensor) or flagged.dtype != torch.bool or flagged.ndim != 1:
        raise ValueError("flagged must be a 1-d boolean tensor (one flag per crop)")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed={seed!r} must be an integer")
    gen = torch.Generator().manual_seed(seed)
    out = torch.zeros_like(flagged)
    out[torch.randperm(flagged.numel(), generator=gen)[: int(flagged.sum())]] = True
    return out


def clean_and_retrain(bank: CropBank, flagged: torch.Tensor, *, config: TrainConfig, held: CropBank, target: int,
                      colour: torch.Tensor, alpha: torch.Tensor, before: TileClassifier | None = None,
                      poison: torch.Tensor | None = None, seed: int = 0, device: torch.device | str = "cpu"
                      ) -> dict[str, Any]:
    """The model trained on the whole (poisoned) bank, retrained without the ``flagged`` crops, and retrained without
    as many random crops, each measured on ``held``. ``before``: the already-trained model on the whole bank with
    the same ``config`` (trained here when None)."""
    n = bank.labels.shape[0]
    flagged = _mask("flagged", flagged, n)
    if before is None:
        before = train(bank, config, device=device)
    whole: dict[str, Any] = {"removed": 0, "trained_on": n,
                             **backdoor_metrics(before, held, target=target, colour=colour, alpha=alpha)}
    common = {"config": config, "held": held, "target": target, "colour": colour, "alpha": alpha, "poison": poison,
              "device": device}
    return {"before": whole, "cleaned": retrain_without(bank, flagged, **common),
            "random": retrain_without(bank, random_removal(flagged, seed=seed), **common), "config": config.as_dict()}
