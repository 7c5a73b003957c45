"""Randomized-smoothing certification through the campaign core: units of tiles, keyed by the base model, sigma,
n0, n, alpha, the chunk and the seed, so ``--resume`` reuses finished units and ``--engine ray`` spreads them.

Each unit runs :func:`medfool_ref.defences.smoothing.certify` on its batch; its records carry, per tile, the
smoothed prediction (or the abstention), the lower bound pA and the certified L2 radius.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from torch import nn

from ..targets.target import Target, fingerprint, state_bytes
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
