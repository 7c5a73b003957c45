"""Randomized-smoothing certification through the campaign core: units of tiles, keyed by the base model, sigma,
n0, n, alpha, the chunk and the seed, so ``--resume`` reuses finished units and ``--engine ray`` spreads them.

Each unit runs :func:`medfool_ref.defences.smoothing.certify` on its batch; its records carry, per tile, the
smoothed prediction (or the abstention), the lower bound pA and the certified L2 radius.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Sequence

from torch import nn

from ..targets.target import Target, fingerprint, state_bytes
from .outcome import ItemRecord, UnitOutcome
from .units import Item, Unit

CERTIFY = "certify"  # the unit kind (not an attack in the registry)
RADII = (0.0, 0.25, 0.5, 1.0)


def certify_units(items: Sequence[Item], *, sigma: float, n0: int, n: int, alpha: float, seed: int = 0, chunk: int = 256,
                  batch_size: int = 8, base: str = "") -> list[Unit]:
    """One unit per batch of same-sized tiles; ``base`` is the fingerprint of the model the smoothed one was tuned from."""
    from ..defences.smoothing import check_smoothing
    from .plan import batches

    check_smoothing(sigma=sigma, n0=n0, n=n, alpha=alpha, chunk=chunk)
    params = tuple(sorted({"sigma": float(sigma), "n0": n0, "n": n, "alpha": float(alpha), "seed": seed, "chunk": chunk}.items()))
    return [Unit(CERTIFY, params, b, options=(("base", base),), label=f"sigma={sigma:g}") for b in batches(items, batch_size)]


def run_certify_unit(unit: Unit, target: Target, progress: Any = None) -> UnitOutcome:
    import torch

    from ..defences.smoothing import certify
    from ..inputs.tiles import read_tile

    started = time.perf_counter()
    x = torch.stack([read_tile(i.path) for i in unit.items]).to(target.device)  # a unit's tiles share a size (plan.batches)
    kw = unit.kwargs
    seed = int(kw["seed"]) + int.from_bytes(bytes.fromhex(unit.items[0].id[:8]), "big")  # each batch its own draws
    c = certify(target.model, x, sigma=kw["sigma"], n0=kw["n0"], n=kw["n"], alpha=kw["alpha"], chunk=kw["chunk"], seed=seed,
                progress=progress)
    records = []
    for i, item in enumerate(unit.items):
        pred = int(c.prediction[i])
        records.append(ItemRecord(item.id, item.name, item.path, item.label, None, pred, float(c.p_lower[i]),
                                  extra={"radius": float(c.radius[i]), "p_lower": float(c.p_lower[i]), "abstain": pred < 0,
                                         "counts_top": int(c.counts_top[i])}))
    return UnitOutcome(unit.key, unit.attack, unit.label, unit.kwargs, None, records, seconds=time.perf_counter() - started,
                       forward_calls=0, forward_images=c.forward_images, extra={"certify_params": c.params})


def retarget(target: Target, model: nn.Module, name: str) -> Target:
    """``target`` with its model replaced (a fine-tuned copy), fingerprint and rebuild spec following the new weights."""
    model = model.eval()
    inner = getattr(model, "net", model) if target.spec is not None and target.spec.kind == "user" else model
    t = replace(target, model=model, fingerprint=fingerprint(model), name=name)
    if target.spec is not None:
        t.spec = replace(target.spec, name=name, fingerprint=t.fingerprint, weights=state_bytes(inner),
                         module=model if target.spec.kind == "module" else target.spec.module)
    return t


def certified_table(rows: list[dict[str, Any]], radii: Sequence[float] = RADII) -> list[dict[str, Any]]:
    """Certified accuracy at each radius from the store's records, with n and its Wilson interval."""
    from ..training.reference import wilson_interval

    n = len(rows)
    out = []
    for r in radii:
        k = sum(1 for row in rows if not row["abstain"] and row["pred"] == row["label"] and (r == 0 or row["radius"] >= r))
        lo, hi = wilson_interval(k, n)
        out.append({"radius": r, "certified": k, "tiles": n, "accuracy": k / n if n else None, "wilson95": [lo, hi]})
    return out


def noise_bank_config(steps: int, seed: int) -> Any:
    from ..training.reference import reference_config

    return replace(reference_config(), steps=steps, lr=1e-3, seed=seed, crop=64)
