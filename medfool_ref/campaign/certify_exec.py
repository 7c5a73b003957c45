"""Running one certification unit (``campaign/certify.py`` plans them); imported by the executor only."""

from __future__ import annotations

import time
from typing import Any

from ..targets.target import Target
from .outcome import ItemRecord, UnitOutcome
from .units import Unit


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
