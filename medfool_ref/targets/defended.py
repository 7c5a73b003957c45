"""A target with a defence chain in front of its model (``--defence``): the defended system as the campaign sees it.

The chain is carried as canonical ``NAME:key=value`` texts (every parameter spelled out), so units are keyed by
the defence, its parameters and the attack mode (:attr:`DefendedTarget.run_fingerprint`), and a cluster's worker
rebuilds the same system from the :class:`DefendedSpec` (``targets.rebuild``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

from ..defences.specs import parse_all
from ..defences.system import Defended
from .target import Target, TargetSpec


@dataclass(frozen=True)
class DefendedSpec(TargetSpec):
    defence: tuple[str, ...] = ()
    adaptive: bool = True
    draws: int = 8


@dataclass
class DefendedTarget(Target):
    defence: tuple[str, ...] = ()  # canonical NAME:k=v texts, in the order applied
    adaptive: bool = True  # attacked with BPDA/EOT (True) or plainly through the real chain
    draws: int = 8  # EOT draws per tile for a randomised defence in the adaptive mode

    @property
    def run_fingerprint(self) -> str:
        """The model's run fingerprint with the chain, every parameter, the attack mode and the EOT draws."""
        mode = f"adaptive,draws={self.draws}" if self.adaptive else "plain"
        return hashlib.sha256(f"{super().run_fingerprint}|defence={';'.join(self.defence)}|{mode}".encode()).hexdigest()


def base_spec(spec: TargetSpec) -> TargetSpec:
    return TargetSpec(**{f.name: getattr(spec, f.name) for f in fields(TargetSpec)})


def canonical(texts: list[str]) -> tuple[str, ...]:
    """Each ``--defence`` text with every parameter filled in: ``jpeg`` -> ``jpeg:quality=75``."""
    return tuple(f"{s.name}:" + ",".join(f"{k}={v}" for k, v in sorted(p.items())) for s, p in parse_all(texts))


def with_defences(target: Target, texts: list[str], *, adaptive: bool = True, draws: int = 8, seed: int = 0) -> DefendedTarget:
    """A new target: ``target``'s model behind the chain (attacked adaptively or plainly); the original is untouched."""
    if isinstance(target, DefendedTarget):
        raise ValueError("the target already has a defence chain")
    chain = parse_all(texts)
    names = canonical(texts)
    kept = {f.name: getattr(target, f.name) for f in fields(Target)}
    kept["model"] = Defended(target.model, chain, adaptive=adaptive, draws=draws, seed=seed).eval()
    kept["spec"] = None if target.spec is None else DefendedSpec(**{f.name: getattr(target.spec, f.name) for f in fields(TargetSpec)},
                                                                 defence=names, adaptive=adaptive, draws=draws)
    return DefendedTarget(**kept, defence=names, adaptive=adaptive, draws=draws)
