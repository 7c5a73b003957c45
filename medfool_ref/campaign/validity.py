"""Evaluation-validity checks, run on every audit (after Carlini et al. 2019, "On Evaluating Adversarial
Robustness", and AutoAttack's flags): a robust-accuracy figure is only as good as the attack behind it.

1. large budget: PGD at 64/255 (L-inf) and at L2 = 16 must fool at least 99% of the tiles;
2. more steps: the strongest attack (APGD-CE, else PGD) at the largest audited budget, run with twice the steps,
   must not move robust accuracy by more than 1 point;
3. gradient-free: random noise (64 sign corners a tile) and a Square-style random search (300 queries) at that
   budget must fool no tile the white-box worst case left standing;
4. more draws (randomised defences only): PGD with twice the EOT draws must not lower robust accuracy by more
   than 1 point.

Each runs on a small subset (the first ``tiles`` correctly classified tiles, class by class as the data came), so
the audit's added cost stays small; a failed check marks the audit's figures unreliable. Checks 1, 2 and 4 run as
campaign units (``--resume`` reuses them); check 3 runs its gradient-free attacks in this process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..inputs.items import Item
from ..targets.target import Target
from .audit import AuditPlan, fooled_by_tile, survivors
from .engine import Engine
from .execute import load_items
from .plan import tile_units
from .run import run_campaign
from .store import ResultsStore
from .units import keyed

LARGE_LINF = 64 / 255
LARGE_L2 = 16.0
TOLERANCE = 0.01  # one point of robust accuracy


@dataclass
class Check:
    id: str
    title: str
    passed: bool | None  # None: not applicable / not run
    measured: str
    tiles: int
    detail: dict[str, Any] = field(default_factory=dict)


def _rate(store: ResultsStore, keys: list[str]) -> tuple[int, int]:
    recs = store.items(keys)
    return sum(bool(r["success"]) for r in recs), len(recs)


def _fooled(store: ResultsStore, plan: AuditPlan, probe: str, eps: float) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for e in plan.entries:
        if e.probe.id == probe and e.eps is not None and abs(e.eps - eps) < 1e-12:
            out.update(fooled_by_tile(store, e, eps))
    return out


def run_validity(items: list[Item], target: Target, store: ResultsStore, plan: AuditPlan, *, tiles: int = 16,
                 more_draws: Target | None = None, batch_size: int = 32, resume: bool = False, progress: bool = True,
                 engine: Engine | None = None) -> list[Check]:
    """The checks on the first ``tiles`` of ``items`` that ``target`` classifies correctly (read from the plan's clean pass)."""
    clean = {r["item"]: r for r in store.items([u.key for u in plan.clean])}
    sub = [it for it in items if it.id in clean and clean[it.id]["pred_before"] == it.label][:tiles]
    checks: list[Check] = []
    if not sub:
        return [Check("none", "no correctly classified tile to check with", None, "not run", 0)]
    eps = max(plan.linf) if plan.linf else 8 / 255

    def run(units: list[Any], label: str, on: Target = target) -> list[str]:
        keyed_units = [keyed(u, on.run_fingerprint) for u in units]
        plan.runs.append(run_campaign(keyed_units, on, store, resume=resume, progress=progress, label=label, engine=engine))
        return [u.key for u in keyed_units]

    # 1. a large budget fools (nearly) everything
    big = run(tile_units("pgd", sub, params={"eps": LARGE_LINF, "steps": 20}, batch_size=batch_size, label="validity:large-linf")
              + tile_units("pgd", sub, params={"eps": LARGE_L2, "steps": 20, "norm": "l2"}, batch_size=batch_size,
                           label="validity:large-l2"), "validity: large budget")
    half = len(big) // 2
    (fi, ni), (fl, nl) = _rate(store, big[:half]), _rate(store, big[half:])
    ok = ni > 0 and nl > 0 and fi / ni >= 0.99 and fl / nl >= 0.99
    checks.append(Check("large-budget", "success reaches 99% at a large budget (PGD, 20 steps, 64/255 L-inf and L2 16)", ok,
                        f"L-inf 64/255: {fi}/{ni} fooled; L2 16: {fl}/{nl} fooled", len(sub),
                        {"linf_fooled": fi, "l2_fooled": fl, "n": ni}))
    # 2. twice the steps of the strongest attack move nothing
    strongest = next((p for p in ("apgd-ce", "pgd") if any(e.probe.id == p and e.eps is not None and abs(e.eps - eps) < 1e-12
                                                            for e in plan.entries)), None)
    if strongest is None:
        checks.append(Check("more-steps", "twice the steps of the strongest attack move robust accuracy by <= 1 point", None,
                            "not run: neither apgd-ce nor pgd was audited at the largest budget", 0))
    else:
        entry = next(e for e in plan.entries if e.probe.id == strongest and e.eps is not None and abs(e.eps - eps) < 1e-12)
        params = dict(entry.units[0].params) if entry.units else {}
        params["steps"] = 2 * int(params.get("steps", 10))
        keys = run(tile_units(entry.probe.attack, sub, params=params, batch_size=batch_size, label=f"validity:{strongest}x2"),
                   "validity: twice the steps")
        before = _fooled(store, plan, strongest, eps)
        after = {r["item"]: bool(r["success"]) for r in store.items(keys)}
        ids = [i for i in after if i in before]
        r0 = sum(not before[i] for i in ids) / len(ids) if ids else 0.0
        r1 = sum(not after[i] for i in ids) / len(ids) if ids else 0.0
        checks.append(Check("more-steps", f"{strongest} with {params['steps']} steps instead of {params['steps'] // 2} moves "
                            "robust accuracy by <= 1 point", bool(ids) and abs(r1 - r0) <= TOLERANCE + 1e-12,
                            f"robust on the subset {r0:.1%} -> {r1:.1%}", len(ids), {"before": r0, "after": r1, "eps": eps}))
    # 3. no gradient-free attack fools what the white-box worst case left standing
    standing = _standing(store, plan, eps, sub)
    checks.append(_gradient_free(target, standing, eps, batch_size))
    # 4. more EOT draws lower nothing (randomised defences)
    if more_draws is not None:
        pgd = next((e for e in plan.entries if e.probe.id == "pgd" and e.eps is not None and abs(e.eps - eps) < 1e-12), None)
        if pgd is None:
            checks.append(Check("more-draws", "twice the EOT draws lower robust accuracy by <= 1 point", None,
                                "not run: pgd was not audited at the largest budget", 0))
        else:
            keys = run(tile_units("pgd", sub, params=dict(pgd.units[0].params) if pgd.units else {"eps": eps}, batch_size=batch_size,
                                  label="validity:eot-x2"), "validity: twice the EOT draws", on=more_draws)
            before = _fooled(store, plan, "pgd", eps)
            after = {r["item"]: bool(r["success"]) for r in store.items(keys)}
            ids = [i for i in after if i in before]
            r0 = sum(not before[i] for i in ids) / len(ids) if ids else 0.0
            r1 = sum(not after[i] for i in ids) / len(ids) if ids else 0.0
            checks.append(Check("more-draws", f"PGD with {more_draws.draws} EOT draws instead of {target.draws} lowers robust "
                                "accuracy by <= 1 point", bool(ids) and r0 - r1 <= TOLERANCE + 1e-12,
                                f"robust on the subset {r0:.1%} -> {r1:.1%}", len(ids), {"before": r0, "after": r1}))
    return checks


def _standing(store: ResultsStore, plan: AuditPlan, eps: float, sub: list[Item]) -> list[Item]:
    left = survivors(store, plan, eps, sub)
    for e in plan.entries:  # the cascade (APGD-T) ran on the survivors of the whole data
        if e.probe.cascade and e.eps is not None and abs(e.eps - eps) < 1e-12:
            fooled = {k for k, v in fooled_by_tile(store, e, eps).items() if v}
            left = [it for it in left if it.id not in fooled]
    return left


def _gradient_free(target: Target, standing: list[Item], eps: float, batch_size: int) -> Check:
    from .controls import random_noise, random_search
    from .plan import batches

    title = f"no gradient-free attack (random noise, 64 draws; random search, 300 queries) at {eps * 255:g}/255 fools a tile the white-box worst case left standing"
    if not standing:
        return Check("gradient-free", title, True, "no tile was left standing by the white-box attacks", 0)
    fooled: dict[str, list[str]] = {}
    for batch in batches(standing, batch_size):
        x, y = load_items(batch, target.device)
        for name, fn in (("random-noise", random_noise), ("random-search", random_search)):
            r = fn(target.model, x, y, eps=eps)
            for it, ok in zip(batch, r.success.tolist()):
                if ok:
                    fooled.setdefault(name, []).append(it.id)
    beaten = sorted({i for v in fooled.values() for i in v})
    return Check("gradient-free", title, not beaten, f"{len(beaten)} of {len(standing)} standing tiles fooled without gradients",
                 len(standing), {k: len(v) for k, v in fooled.items()} | {"eps": eps})
