"""The audit's worst case at one L-inf budget, on a model before and after hardening (``medfool harden``).

The same battery and rule as ``medfool audit``: a tile counts as robust when it is classified correctly and no
worst-case attack (FGSM, PGD, APGD-CE, DeepFool's saved tile within the budget, then APGD-T on what they left
standing) fooled it at that budget. Each model's audit has its own store under the output folder, so ``--resume``
reuses finished units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..inputs.items import Item
from ..targets.target import Target
from .audit import fooled_by_tile, run_audit
from .store import ResultsStore

WORST_CASE_PROBES = ("fgsm", "pgd", "apgd-ce", "apgd-t", "deepfool")


def worst_case(items: list[Item], target: Target, folder: Path, *, eps: float, overrides: dict[str, dict[str, Any]] | None = None,
               resume: bool = False, engine: Any = None) -> dict[str, Any]:
    """Clean and worst-case robust accuracy (counts over ``items``) at L-inf ``eps``."""
    store = ResultsStore(folder)
    plan = run_audit(items, target, store, probes=list(WORST_CASE_PROBES), linf=(eps,), l2=(), overrides=overrides,
                     batch_size=32, resume=resume, progress=False, engine=engine)
    clean = {r["item"]: r for r in store.items([u.key for u in plan.clean])}
    truth = {it.id: it.label for it in items}
    correct = {i for i, r in clean.items() if r["pred_before"] == truth[i]}
    fooled: set[str] = set()
    for e in plan.entries:
        if e.probe.worst_case and e.probe.norm == "linf" and (e.eps is None or e.eps <= eps + 1e-12):
            fooled |= {k for k, v in fooled_by_tile(store, e, eps).items() if v}
    failures = [f for run in plan.runs for f in run.failures]
    if failures:
        raise RuntimeError(f"{failures[0].attack}: {failures[0].error.splitlines()[0]}")
    return {"tiles": len(items), "clean": len(correct), "robust": len(correct - fooled), "eps": eps,
            "attacks": list(WORST_CASE_PROBES)}
