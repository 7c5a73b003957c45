"""The audit campaign: a battery of attacks over a user's labelled tiles, at every budget, with a worst case.

Phases, each a campaign of its own in the same store (so ``--resume`` continues any of them):
1. a clean pass over every tile (clean accuracy, the tiles each attack starts from);
2. the battery on the tiles classified correctly (for the tumour-decision attacks: the tiles whose
   decision is correct), every budget;
3. APGD-T on the tiles every other gradient attack left standing at a budget (as AutoAttack runs its
   later attacks only on the points still robust); the per-tile worst case is read from the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..inputs.items import Item
from ..targets.target import Target
from .engine import Engine
from .plan import by_size, patch_units, predict_units, tile_units
from .run import CampaignRun, run_campaign
from .store import ResultsStore
from .units import Unit, keyed

LINF_BUDGETS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
MAX_NONFINITE = 0.10  # the audit stops after the clean pass when more of the tiles than this get a NaN/inf output


class NonFiniteOutputs(ValueError):
    """The model's output is NaN or inf on too many clean tiles for an audit to mean anything."""


def clean_error(record: dict[str, Any]) -> bool:
    """A clean-pass record whose model output was not finite (NaN or inf)."""
    return record["extra"].get("finite") is False or any(v is None for v in record["extra"].get("probs", []))


def model_error(record: dict[str, Any]) -> bool:
    """An attacked tile whose model output (float or saved 8-bit adversarial) was not finite: neither fooled nor robust."""
    e = record["extra"]
    return e.get("finite_after") is False or e.get("finite_8bit") is False
L2_BUDGETS = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class Probe:
    """One line of the battery: a registered attack with its parameters, budgets and view."""

    id: str
    attack: str
    summary: str
    params: dict[str, Any] = field(default_factory=dict)
    budget: str | None = "eps"  # the parameter swept over the budgets (None: run once)
    norm: str = "linf"  # which budgets: "linf" or "l2"
    view: str = "class"  # "class": the classifier; "decision": the tumour decision as a two-class model
    worst_case: bool = True  # counts towards the per-tile worst case at its budget
    cascade: bool = False  # runs on the tiles every other worst-case attack left standing
    limit: int | None = None  # at most this many tiles (a stated query budget for slow black-box attacks)
    fixed: float | None = None  # one budget only (e.g. EOT at 8/255)


BATTERY: tuple[Probe, ...] = (
    Probe("fgsm", "fgsm", "one signed-gradient step"),
    Probe("pgd", "pgd", "PGD, 10 steps, random start", {"steps": 10}),
    Probe("pgd-l2", "pgd", "PGD in the L2 ball, 10 steps", {"steps": 10, "norm": "l2"}, norm="l2", worst_case=False),
    Probe("apgd-ce", "apgd", "APGD with cross-entropy, 100 steps", {"steps": 100, "loss": "ce"}),
    Probe("apgd-t", "apgd", "APGD-T: targeted DLR towards the top 3 other classes, 100 steps each", {"steps": 100, "loss": "dlr",
          "targets": 3}, cascade=True),
    Probe("decision-apgd", "apgd", "APGD-CE on the tumour decision itself: tumour tiles pushed under the decision "
          "(a missed tumour), the others over it (an over-call)", {"steps": 100, "loss": "ce"}, view="decision", worst_case=False),
    Probe("deepfool", "deepfool", "DeepFool: the minimal L2 perturbation, rounded onto the 8-bit grid", budget=None),
    Probe("eot", "eot", "EOT under the pathology transformation distribution, 10 steps x 8 draws", fixed=8 / 255,
          worst_case=False),
    Probe("patch-missed-tumour", "patch", "a universal patch (10% of the tile) trained to make tumour tiles read as "
          "non-tumour, on one half of the tiles, evaluated on the other", {"area": 0.1}, budget=None, view="decision",
          worst_case=False),
    Probe("patch-overcall", "patch", "a universal patch (10% of the tile) trained to make non-tumour tiles read as tumour",
          {"area": 0.1}, budget=None, view="decision", worst_case=False),
    Probe("one-pixel", "one-pixel", "one-pixel differential evolution, population 100 x 10 generations (about 1,100 "
          "queries a tile)", {"pixels": 1, "population": 100, "generations": 10}, budget=None, worst_case=False, limit=16),
    Probe("three-pixel", "one-pixel", "three-pixel differential evolution, same query budget", {"pixels": 3, "population": 100,
          "generations": 10}, budget=None, worst_case=False, limit=16),
)
# --- blackbox ---
# the query-only section: what an auditor who can only send images to a served model runs (medfool audit --endpoint)
QUERY_BATTERY: tuple[Probe, ...] = (
    Probe("square", "square", "Square Attack (scores only), L-inf, at most 1,000 queries a tile", {"max_queries": 1000},
          worst_case=False, limit=16),
    Probe("square-l2", "square", "Square Attack (scores only), L2, at most 1,000 queries a tile",
          {"max_queries": 1000, "norm": "l2"}, norm="l2", worst_case=False, limit=16),
    Probe("hop-skip-jump", "hop-skip-jump", "HopSkipJump (top-1 label only), L2, at most 1,000 queries a tile",
          {"max_queries": 1000}, budget=None, worst_case=False, limit=16),
)
LABEL_ONLY = ("hop-skip-jump",)  # what a label-only endpoint can be audited with
# --- end blackbox ---
PROBES = {p.id: p for p in BATTERY + QUERY_BATTERY}


@dataclass
class AuditEntry:
    probe: Probe
    eps: float | None
    units: list[Unit]

    @property
    def keys(self) -> list[str]:
        return [u.key for u in self.units]


@dataclass
class AuditPlan:
    clean: list[Unit]
    entries: list[AuditEntry]
    linf: tuple[float, ...]
    l2: tuple[float, ...]
    runs: list[CampaignRun] = field(default_factory=list)


def _clean_records(store: ResultsStore, units: list[Unit]) -> dict[str, dict[str, Any]]:
    return {r["item"]: r for r in store.items([u.key for u in units])}


def _split(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """Every other tile of each class: the patch's training half and its evaluation half."""
    seen: dict[int | None, int] = {}
    a, b = [], []
    for it in items:
        n = seen.get(it.label, 0)
        (a if n % 2 == 0 else b).append(it)
        seen[it.label] = n + 1
    return a, b


def run_audit(items: list[Item], target: Target, store: ResultsStore, *, probes: list[str] | None = None,
              linf: tuple[float, ...] = LINF_BUDGETS, l2: tuple[float, ...] = L2_BUDGETS, overrides: dict[str, dict[str, Any]] | None = None,
              batch_size: int = 32, resume: bool = False, progress: bool = True, engine: Engine | None = None) -> AuditPlan:
    fp = target.run_fingerprint
    chosen = [PROBES[p] for p in (probes or [p.id for p in BATTERY])]
    overrides = overrides or {}
    clean = [keyed(u, fp) for u in predict_units(items, batch_size)]
    plan = AuditPlan(clean, [], tuple(linf), tuple(l2))
    plan.runs.append(run_campaign(clean, target, store, resume=resume, progress=progress, label="clean pass", engine=engine))
    rec = _clean_records(store, clean)
    broken = [it for it in items if clean_error(rec[it.id])]
    if len(broken) > MAX_NONFINITE * len(items):
        names = ", ".join(it.name for it in broken[:5]) + (f" (+{len(broken) - 5} more)" if len(broken) > 5 else "")
        raise NonFiniteOutputs(f"the model's output is NaN or inf on {len(broken)} of {len(items)} clean tiles "
                               f"({len(broken) / len(items):.0%}; the audit stops above {MAX_NONFINITE:.0%}): {names}")
    items = [it for it in items if not clean_error(rec[it.id])]  # the rest: model errors in the report, never attacked
    pos = set(target.positive_indices)
    correct = [it for it in items if rec[it.id]["pred_before"] == it.label]
    decided = [it for it in items if (rec[it.id]["pred_before"] in pos) == (it.label in pos)] if target.threshold is None else \
        [it for it in items if (sum(rec[it.id]["extra"]["probs"][i] for i in pos) >= target.threshold) == (it.label in pos)]
    phase2: list[AuditEntry] = []
    for probe in chosen:
        params = {**probe.params, **overrides.get(probe.id, {})}
        tiles = decided if probe.view == "decision" else correct
        if probe.limit is not None:
            tiles = tiles[:probe.limit]
        budgets = [None] if probe.budget is None else [probe.fixed] if probe.fixed is not None else list(linf if probe.norm == "linf" else l2)
        for eps in budgets:
            p = {**params, **({probe.budget: eps} if eps is not None and probe.budget else {})}
            opts = {"view": "decision"} if probe.view == "decision" else {}
            label = f"{probe.id}" + (f"@{eps:.6g}" if eps is not None else "")
            if probe.cascade:
                phase2.append(AuditEntry(probe, eps, []))
                continue
            if probe.attack == "patch":
                units = _patch(probe, tiles, target, p, batch_size, label)
            else:
                units = tile_units(probe.attack, tiles, params=p, options=opts, batch_size=batch_size, label=label)
            plan.entries.append(AuditEntry(probe, eps, [keyed(u, fp) for u in units]))
    units = [u for e in plan.entries for u in e.units]
    plan.runs.append(run_campaign(units, target, store, resume=resume, progress=progress, label="attacks", engine=engine))
    for entry in phase2:  # the cascade: only what every other worst-case attack at this budget left standing
        standing = survivors(store, plan, entry.eps, correct)
        p = {**entry.probe.params, **overrides.get(entry.probe.id, {}), "eps": entry.eps}
        entry.units = [keyed(u, fp) for u in tile_units(entry.probe.attack, standing, params=p, batch_size=batch_size,
                                                        label=f"{entry.probe.id}@{entry.eps:.6g}")]
        plan.entries.append(entry)
    units = [u for e in phase2 for u in e.units]
    plan.runs.append(run_campaign(units, target, store, resume=resume, progress=progress, label="APGD-T on the rest",
                                  engine=engine))
    return plan


def _patch(probe: Probe, tiles: list[Item], target: Target, params: dict[str, Any], batch_size: int, label: str) -> list[Unit]:
    pos = set(target.positive_indices)
    want_positive = probe.id == "patch-missed-tumour"  # the tiles the patch works on: tumour tiles, or the others
    chosen = [t for t in tiles if (t.label in pos) == want_positive]
    if len(chosen) < 2:
        return []
    train, held = _split(chosen)
    groups = by_size(train)
    support = max(groups, key=len)[:16]
    goal = 0 if want_positive else 1  # in the decision view: 0 negative, 1 positive
    return [replace(u, options=(("view", "decision"),)) for u in
            patch_units(held, support, params=params, target=goal, batch_size=batch_size, label=label)]


def fooled_by_tile(store: ResultsStore, entry: AuditEntry, eps: float | None) -> dict[str, bool]:
    """item id -> whether the entry's attack fooled it within the L-inf budget ``eps`` (DeepFool: its saved tile's L-inf)."""
    out: dict[str, bool] = {}
    for r in store.items(entry.keys):
        if model_error(r):
            continue  # a NaN/inf output is not a fooled tile
        ok = bool(r["success"])
        if entry.probe.budget is None and eps is not None:  # a minimal attack counts where its saved tile is within eps
            ok = bool(r["success_8bit"]) and r["linf_8bit"] is not None and r["linf_8bit"] <= eps + 1e-9
        out[r["item"]] = out.get(r["item"], False) or ok
    return out


def survivors(store: ResultsStore, plan: AuditPlan, eps: float | None, correct: list[Item]) -> list[Item]:
    fooled: set[str] = set()
    for e in plan.entries:
        if e.probe.worst_case and not e.probe.cascade and e.probe.norm == "linf" and (e.eps == eps or e.probe.budget is None):
            fooled |= {k for k, v in fooled_by_tile(store, e, eps).items() if v}
    return [it for it in correct if it.id not in fooled]
