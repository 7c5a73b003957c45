"""The audit report, computed from the results store: report.json (with its JSON Schema), figures, report.html.

Definitions (all over the audited tiles, N of them):
- clean accuracy: tiles the model classifies correctly (decision probes: whose tumour decision is right);
- an attack runs on those tiles; success rate = fooled / attacked; robust accuracy = clean accuracy x
  (1 - success rate), i.e. correct and not fooled over N (exact when every correct tile was attacked);
- worst case at an L-inf budget eps: a tile counts as fooled when any worst-case attack fooled it at a
  budget <= eps (an adversarial inside a smaller ball is inside the larger one), DeepFool where its saved
  tile's L-inf is <= eps;
- tumour-decision flips: a tumour tile whose decision went from tumour to not (missed tumour), or a
  non-tumour tile from not to tumour (over-call), with rates over the tiles of that kind whose decision
  was right before the attack.
"""

from __future__ import annotations

import statistics
from typing import Any

from .. import __version__
from ..campaign.audit import AuditEntry, AuditPlan, fooled_by_tile
from ..campaign.store import ResultsStore
from ..inputs.datasets import Dataset
from ..registry import SPECS
from ..targets.target import Target
from .audit_schema import AttackReport, AuditReport, BudgetResult, Flip, Flips, Scenario, Skip, WorstCase, schema

__all__ = ["AuditReport", "build_report", "schema"]


def _median(v: list[float]) -> float | None:
    return statistics.median(v) if v else None


def _decision(target: Target, cls: int | None, p_pos: float | None) -> bool | None:
    if cls is None:
        return None
    if target.threshold is None or p_pos is None:
        return cls in set(target.positive_indices)
    return p_pos >= target.threshold


def _flips(target: Target, records: list[dict[str, Any]], view: str, truth: dict[str, int], pos: set[int]) -> Flips:
    missed = over = n_pos = n_neg = 0
    for r in records:
        positive = truth[r["item"]] in pos
        if view == "decision":
            before, after = r["pred_before"] == 1, r["pred_after"] == 1
        else:
            before = _decision(target, r["pred_before"], r["extra"].get("p_positive_before"))
            after = _decision(target, r["pred_after"], r["extra"].get("p_positive_after"))
        if before != positive:
            continue  # the decision was wrong before the attack
        if positive:
            n_pos += 1
            missed += bool(not after)
        else:
            n_neg += 1
            over += bool(after)
    return Flips(missed_tumour=Flip(count=missed, of=n_pos, rate=missed / n_pos if n_pos else None),
                 overcall=Flip(count=over, of=n_neg, rate=over / n_neg if n_neg else None))


def _budget(store: ResultsStore, e: AuditEntry, target: Target, n: int, clean_acc: float, truth: dict[str, int]) -> BudgetResult:
    units = store.units(keys=e.keys)
    recs = store.items([u["key"] for u in units])
    ok = [bool(r["success"]) for r in recs]
    okq = [bool(r["success_8bit"]) for r in recs]
    rate = sum(ok) / len(ok) if ok else None
    rate_q = sum(okq) / len(okq) if okq else None
    succ = [r for r in recs if r["success"]]
    extra: dict[str, Any] = {}
    if e.probe.attack == "deepfool" and succ:
        l2 = sorted(r["l2"] for r in succ)
        extra["l2_quartiles"] = [statistics.quantiles(l2, n=4)[i] if len(l2) > 1 else l2[0] for i in range(3)]
        extra["survive_8bit"] = sum(okq)
        extra["l2_unrounded_median"] = _median([r["extra"]["l2_unrounded"] for r in succ if "l2_unrounded" in r["extra"]])
    if e.probe.attack == "patch" and units:
        extra.update({k: units[0]["extra"].get(k) for k in ("on_training_tiles", "on_other_tiles", "train_tiles") if k in units[0]["extra"]})
    if "expected_success" in (recs[0]["extra"] if recs else {}):
        extra["expected_success_held_out_draws"] = sum(r["extra"]["expected_success"] for r in recs) / len(recs)
    cascade_base = clean_acc
    if e.probe.cascade:  # APGD-T saw only the tiles the others left: its success is over those
        extra["run_on"] = "tiles every other worst-case attack left standing at this budget"
    robust = cascade_base * (1 - rate) if rate is not None else cascade_base
    robust_q = cascade_base * (1 - rate_q) if rate_q is not None else cascade_base
    norm = e.probe.norm if e.probe.budget else ("l2" if e.probe.attack == "deepfool" else "none")
    return BudgetResult(
        eps=e.eps, eps_255=round(e.eps * 255, 6) if e.eps is not None and e.probe.norm == "linf" else None, norm=norm,
        tiles_attacked=len(recs), clean_accuracy=clean_acc, robust_accuracy=robust, robust_accuracy_8bit=robust_q,
        success_rate=rate, success_rate_8bit=rate_q, flips=_flips(target, recs, e.probe.view, truth, set(target.positive_indices)),
        median_l2=_median([r["l2"] for r in succ]), median_linf_255=_median([r["linf"] * 255 for r in succ]),
        queries={"forward_images": sum(u["forward_images"] or 0 for u in units), "backward_images": sum(u["backward_images"] or 0 for u in units)},
        seconds=round(sum(u["seconds"] or 0 for u in units), 3), extra=extra)


def build_report(store: ResultsStore, plan: AuditPlan, target: Target, data: Dataset, *, device: str, engine: str = "local",
                 date: str = "") -> AuditReport:
    from ..catalog import load_catalog
    from ..catalog.risk import EVIDENCE_RULE, band, measured_likelihood, scores

    clean = {r["item"]: r for r in store.items([u.key for u in plan.clean])}
    truth = {it.id: it.label for it in data.items}
    n = len(data.items)
    pos = set(target.positive_indices)
    correct = {i for i, r in clean.items() if r["pred_before"] == truth[i]}
    decided = {i for i, r in clean.items() if _decision(target, r["pred_before"], sum(r["extra"]["probs"][k] for k in pos)) == (truth[i] in pos)}
    catalog = load_catalog()
    attacks: dict[str, AttackReport] = {}
    for e in plan.entries:
        spec = SPECS[e.probe.attack]
        acc = (len(decided) if e.probe.view == "decision" else len(correct)) / n
        if e.probe.cascade:  # run on the survivors: its robust accuracy is over N through the others' results
            acc = len(store.items(e.keys)) / n if e.keys else 0.0
        rep = attacks.setdefault(e.probe.id, AttackReport(
            id=e.probe.id, attack=e.probe.attack, catalog_id=spec.implements,
            stable_id=getattr(catalog.attacks.get(spec.implements), "stable_id", None), summary=e.probe.summary,
            view=e.probe.view, cascade=e.probe.cascade, params={k: v for k, v in dict(e.units[0].params).items()} if e.units else dict(e.probe.params),
            budgets=[]))
        rep.budgets.append(_budget(store, e, target, n, acc, truth))
    worst: list[WorstCase] = []
    for eps in sorted(plan.linf):
        fooled: set[str] = set()
        fooled_q: set[str] = set()
        missed: set[str] = set()
        over: set[str] = set()
        names: set[str] = set()
        for e in plan.entries:
            within = e.probe.norm == "linf" and ((e.eps is not None and e.eps <= eps + 1e-12) or e.probe.budget is None)
            if not within:
                continue
            recs = store.items(e.keys)
            if e.probe.worst_case:
                names.add(e.probe.id)
                fooled |= {k for k, v in fooled_by_tile(store, e, eps).items() if v}
                fooled_q |= {r["item"] for r in recs if r["success_8bit"] and (e.probe.budget is not None or r["linf_8bit"] <= eps + 1e-9)}
            if e.probe.budget is not None:  # decision flips from every budgeted attack within eps
                for r in recs:
                    positive = truth[r["item"]] in pos
                    after = (r["pred_after"] == 1) if e.probe.view == "decision" else _decision(target, r["pred_after"], r["extra"].get("p_positive_after"))
                    if r["item"] in decided and positive and not after:
                        missed.add(r["item"])
                    if r["item"] in decided and not positive and after:
                        over.add(r["item"])
        n_pos = sum(1 for i in decided if truth[i] in pos)
        n_neg = len(decided) - n_pos
        worst.append(WorstCase(eps=eps, eps_255=round(eps * 255, 6), robust_accuracy=len(correct - fooled) / n,
                               robust_accuracy_8bit=len(correct - fooled_q) / n, fooled=len(correct & fooled),
                               missed_tumour_rate=len(missed) / n_pos if n_pos else None,
                               overcall_rate=len(over) / n_neg if n_neg else None, attacks=sorted(names)))
    # the threat model, re-scored: each scenario of an audited attack, moved by the measured success at its default budget
    measured: dict[str, tuple[float, str]] = {}
    for rep in attacks.values():
        spec = SPECS[rep.attack]
        default = spec.budget.default if spec.budget else None
        for b in rep.budgets:
            if b.success_rate is None or (b.eps is not None and default is not None and abs(b.eps - default) > 1e-9 and b.norm == "linf"):
                continue
            best = measured.get(rep.catalog_id)
            if best is None or b.success_rate > best[0]:
                where = f"{rep.id}" + (f" at {b.eps_255:g}/255" if b.eps_255 is not None else "")
                measured[rep.catalog_id] = (b.success_rate, f"{where}: {b.success_rate:.0%} of {b.tiles_attacked} tiles fooled")
    threat = []
    for s in scores(catalog):
        if s.attack not in measured:
            continue
        rate, why = measured[s.attack]
        lik = measured_likelihood(s.likelihood, rate)
        threat.append(Scenario(scenario=s.scenario, attack=s.attack, severity=s.severity, likelihood_catalog=s.likelihood,
                               likelihood_measured=lik, risk_catalog=s.risk, risk_measured=lik * s.severity, band_catalog=s.band,
                               band_measured=band(lik * s.severity), evidence=why))
    cfg = target.config
    return AuditReport(
        medfool=__version__, date=date, device=device, engine=engine,
        model={"name": target.name, "sha256": target.fingerprint, "classes": list(target.classes), "positive": list(target.positive),
               "threshold": target.threshold, "precision": target.precision,
               "channels_last": target.channels_last, "compiled": target.compiled, "config": cfg.model_dump() if cfg is not None else None},
        data={"source": data.source, "tiles": n, "by_class": data.counts, "clean_accuracy": len(correct) / n,
              "decision_accuracy": len(decided) / n, "skipped": len(data.skipped), "notes": data.notes[:20]},
        skipped=[Skip(path=s.path, reason=s.reason) for s in data.skipped],
        attacks=list(attacks.values()), worst_case=worst, threat_model=threat, rule=EVIDENCE_RULE)
