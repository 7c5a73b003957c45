"""A target with a defence chain in front of its model (``--defence``): the defended system as the campaign sees it.

The chain is carried as canonical ``NAME:key=value`` texts (every parameter spelled out), so units are keyed by
the defence, its parameters and the attack mode (:attr:`Target.run_fingerprint`), and a cluster's worker rebuilds
the same system from the :class:`TargetSpec` (``targets.rebuild``).
"""

from __future__ import annotations

from dataclasses import replace

from ..defences.specs import parse_all
from ..defences.system import Defended
from .target import Target


def canonical(texts: list[str]) -> tuple[str, ...]:
    """Each ``--defence`` text with every parameter filled in: ``jpeg`` -> ``jpeg:quality=75``."""
    return tuple(f"{s.name}:" + ",".join(f"{k}={v}" for k, v in sorted(p.items())) for s, p in parse_all(texts))


def with_defences(target: Target, texts: list[str], *, adaptive: bool = True, draws: int = 8, seed: int = 0) -> Target:
    """A new target: ``target``'s model behind the chain (attacked adaptively or plainly); the original is untouched."""
    if target.defence:
        raise ValueError("the target already has a defence chain")
    chain = parse_all(texts)
    names = canonical(texts)
    out = replace(target, model=Defended(target.model, chain, adaptive=adaptive, draws=draws, seed=seed).eval(), defence=names,
                  adaptive=adaptive, draws=draws)
    if target.spec is not None:
        out.spec = replace(target.spec, defence=names, adaptive=adaptive, draws=draws)
    return out
