"""The showcase campaign behind ``medfool results``: every registered attack on the sample tiles.

Each attack runs with the configuration its spec's ``showcase`` declares, on the sample tiles the
target classifies correctly (found by a clean pass stored like any other unit). The plan is a
list of entries (one per parameter set), each with the keys of its units, so that reports read
every figure back from the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..registry import SPECS, AttackSpec
from ..targets.target import Target
from .plan import (
    by_size,
    fooling_unit,
    patch_units,
    predict_units,
    sample_items,
    sample_split,
    tile_units,
    training_unit,
)
from .run import CampaignRun, run_campaign
from .store import ResultsStore
from .units import Item, Unit, keyed

BATCH = 64  # a showcase unit holds a whole size group of correct tiles


@dataclass
class Entry:
    label: str
    params: dict[str, Any]
    units: list[Unit]
    control: list[Unit] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return [u.key for u in self.units]

    @property
    def control_keys(self) -> list[str]:
        return [u.key for u in self.control]


def entry_label(s: AttackSpec, params: Mapping[str, Any]) -> str:
    parts = []
    for k, v in params.items():
        if s.budget is not None and k == s.budget.param:
            parts.append(f"{k}={s.budget.label(v)}")
        else:
            parts.append(f"{k}={v}")
    return ", ".join(parts) or "defaults"


def correct_items(target: Target, store: ResultsStore, *, resume: bool, progress: bool = True) -> tuple[list[Item], CampaignRun]:
    """The sample tiles ``target`` classifies correctly, from a stored clean pass."""
    items = sample_items()
    units = [keyed(u, target.run_fingerprint) for u in predict_units(items)]
    run = run_campaign(units, target, store, resume=resume, progress=progress, label="clean pass")
    by_id = {r["item"]: r for r in store.items([u.key for u in units])}
    return [it for it in items if by_id[it.id]["pred_before"] == it.label], run


def correct_batches(target: Target, store: ResultsStore | None = None) -> list[tuple[Any, Any, list[Item]]]:
    """The sample tiles ``target`` gets right as tensors on its device, one (images, labels, items) batch per tile size."""
    from .execute import load_items

    correct, _ = correct_items(target, store or ResultsStore(":memory:"), resume=True, progress=False)
    out = []
    for group in by_size(correct):
        x, y = load_items(group, target.device)
        out.append((x, y, group))
    return out


def plan(names: list[str], target: Target, correct: list[Item]) -> dict[str, list[Entry]]:
    groups = by_size(correct)
    out: dict[str, list[Entry]] = {}
    for name in names:
        s = SPECS[name]
        sc = s.showcase
        if sc.same_as is not None or s.inputs == "slide":  # a slide attack needs a slide: medfool slide demo records it
            continue
        goal = target.class_index(sc.target) if sc.target else None
        entries = []
        for params in sc.runs:
            params = dict(params)
            label = entry_label(s, params)
            control: list[Unit] = []
            if s.inputs == "tiles":
                chosen = groups[:1] if sc.groups == "first" else groups
                tiles = [it for g in chosen for it in [i for i in g if i.label != goal][:sc.limit]]
                opts = {"transform_draws": sc.transform_draws} if sc.transform_draws else None
                units = tile_units(name, tiles, params=params, target=goal, batch_size=BATCH, options=opts,
                                   keep_images=True, label=label)
                if sc.control is not None:
                    control = tile_units(sc.control[0], tiles, params=dict(sc.control[1]), target=goal, batch_size=BATCH,
                                         options=opts, label=f"control of {name}: {label}")
            elif s.inputs == "tiles+training" and name != "patch":  # a universal pattern: support and scored tiles disjoint
                from .plan import showcase_split, universal_units

                support, others = showcase_split(groups, goal, sc.support)
                units = universal_units(name, others, support, params=params, target=goal, batch_size=BATCH,
                                        keep_images=True, label=label)
            elif s.inputs == "tiles+training":
                support = [i for i in groups[-1] if i.label != goal][:sc.support]
                others = [i for g in groups[:-1] for i in g if i.label != goal]
                units = patch_units(others, support, params=params, target=goal, batch_size=BATCH, keep_images=True, label=label)
            elif s.inputs == "none":
                units = [fooling_unit(params=params, target=goal, label=label)]
            else:
                train, held = sample_split()
                units = [training_unit(name, train, held, params=params, target=goal, label=label)]
            fp = target.run_fingerprint
            entries.append(Entry(label, params, [keyed(u, fp) for u in units], [keyed(u, fp) for u in control]))
        out[name] = entries
    return out


def run_showcase(names: list[str], target: Target, store: ResultsStore, *, resume: bool = False,
                 progress: bool = True) -> tuple[dict[str, list[Entry]], CampaignRun]:
    correct, _ = correct_items(target, store, resume=resume, progress=progress)
    entries = plan(names, target, correct)
    units = [u for es in entries.values() for e in es for u in e.units + e.control]
    run = run_campaign(units, target, store, resume=resume, progress=progress, label="results",
                       meta={"campaign": "showcase", "attacks": names})
    return entries, run
