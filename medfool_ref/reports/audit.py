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
  was right before the attack;
- every rate carries its count, its n and a 95% Wilson interval (``ci``), flagged when n < 20;
- a tile whose model output was NaN or inf (clean, or under an attack) is a model error: listed, counted,
  and left out of every rate (neither fooled nor robust);
- on the shipped sample tiles, the reference model's held-out tiles and its training tiles are also
  reported apart (``splits``, held-out first): the held-out figures are the ones to quote.
"""

from __future__ import annotations

import statistics
from typing import Any

from .. import __version__
from ..campaign.audit import AuditEntry, AuditPlan, clean_error, fooled_by_tile, model_error
from .intervals import from_rate, interval
from ..campaign.store import ResultsStore
from ..inputs.datasets import Dataset
from ..registry import SPECS
from ..targets.target import Target
from .audit_schema import (AttackReport, AuditReport, BudgetResult, Flip, Flips, ModelErrors, Scenario, Skip, Split, WorstCase,
                           schema)

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
    return Flips(missed_tumour=Flip(count=missed, of=n_pos, rate=missed / n_pos if n_pos else None, ci=_ci(missed, n_pos)),
                 overcall=Flip(count=over, of=n_neg, rate=over / n_neg if n_neg else None, ci=_ci(over, n_neg)))


def _ci(k: int, n: int) -> dict[str, Any] | None:
    return interval(k, n) if n else None


def _budget(store: ResultsStore, e: AuditEntry, target: Target, n: int, clean_acc: float, truth: dict[str, int]) -> BudgetResult:
    units = store.units(keys=e.keys)
    every = store.items([u["key"] for u in units])
    recs = [r for r in every if not model_error(r)]  # a NaN/inf output: neither fooled nor robust
    errors = len(every) - len(recs)
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
    n_eff = n - errors  # robust accuracy is over the tiles with a finite output
    if len(every) == round(clean_acc * n) and n_eff:  # every eligible tile attacked: robust accuracy is a count
        robust, robust_q = (len(recs) - sum(ok)) / n_eff, (len(recs) - sum(okq)) / n_eff
    else:  # a stated tile limit (or nothing to attack): clean accuracy x (1 - success rate), an estimate
        robust = cascade_base * (1 - rate) if rate is not None else cascade_base
        robust_q = cascade_base * (1 - rate_q) if rate_q is not None else cascade_base
    norm = e.probe.norm if e.probe.budget else ("l2" if e.probe.attack == "deepfool" else "none")
    ci = {"success_rate": _ci(sum(ok), len(ok)), "success_rate_8bit": _ci(sum(okq), len(okq)),
          "robust_accuracy": from_rate(robust, n_eff), "robust_accuracy_8bit": from_rate(robust_q, n_eff)}
    return BudgetResult(model_errors=errors, ci=ci,
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
    names_of = {it.id: it.name for it in data.items}
    broken = [i for i in truth if i in clean and clean_error(clean[i])]
    clean = {i: r for i, r in clean.items() if i not in set(broken)}  # a NaN/inf clean output: a model error, left out
    n = len(clean)
    pos = set(target.positive_indices)
    correct = {i for i, r in clean.items() if r["pred_before"] == truth[i]}
    decided = {i for i, r in clean.items() if _decision(target, r["pred_before"], sum(r["extra"]["probs"][k] for k in pos)) == (truth[i] in pos)}
    catalog = load_catalog()
    attacks: dict[str, AttackReport] = {}
    errors: dict[str, set[str]] = {}
    for e in plan.entries:
        spec = SPECS[e.probe.attack]
        acc = (len(decided) if e.probe.view == "decision" else len(correct)) / n if n else 0.0
        if e.probe.cascade:  # run on the survivors: its robust accuracy is over N through the others' results
            acc = len(store.items(e.keys)) / n if e.keys and n else 0.0
        rep = attacks.setdefault(e.probe.id, AttackReport(
            id=e.probe.id, attack=e.probe.attack, catalog_id=spec.implements,
            stable_id=getattr(catalog.attacks.get(spec.implements), "stable_id", None), summary=e.probe.summary,
            view=e.probe.view, cascade=e.probe.cascade, params={k: v for k, v in dict(e.units[0].params).items()} if e.units else dict(e.probe.params),
            budgets=[]))
        rep.budgets.append(_budget(store, e, target, n, acc, truth))
        errors.setdefault(e.probe.id, set()).update(r["item"] for r in store.items(e.keys) if model_error(r))
    per_eps = [(eps, _worst_sets(store, plan, target, eps, truth, decided)) for eps in sorted(plan.linf)]
    worst = [_worst(eps, sets, set(clean), correct, decided, truth, pos) for eps, sets in per_eps]
    splits: list[Split] = []
    if data.split and target.name == "reference":  # the reference model's own training tiles are among the sample tiles
        for part in ("held-out", "training"):
            ids = {i for i in clean if data.split.get(i) == part}
            k = len(correct & ids)
            splits.append(Split(name=part, tiles=len(ids), clean_accuracy=k / len(ids) if ids else None,
                                ci={"clean_accuracy": _ci(k, len(ids)), "decision_accuracy": _ci(len(decided & ids), len(ids))},
                                worst_case=[_worst(eps, sets, ids, correct, decided, truth, pos) for eps, sets in per_eps]))
    bad = set(broken).union(*errors.values()) if errors else set(broken)
    model_errors = ModelErrors(count=len(bad), clean=[names_of[i] for i in broken],
                               by_attack={k: len(v) for k, v in errors.items() if v},
                               tiles=sorted(names_of[i] for i in bad)[:200])
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
        data={"source": data.source, "tiles": len(data.items), "by_class": data.counts,
              "clean_accuracy": len(correct) / n if n else None, "decision_accuracy": len(decided) / n if n else None,
              "clean_accuracy_ci": _ci(len(correct), n), "decision_accuracy_ci": _ci(len(decided), n),
              "tiles_with_finite_output": n, "split": "held-out and training reported apart" if splits else "all tiles",
              "skipped": len(data.skipped), "notes": data.notes[:20]},
        skipped=[Skip(path=s.path, reason=s.reason) for s in data.skipped],
        attacks=list(attacks.values()), worst_case=worst, threat_model=threat, rule=EVIDENCE_RULE, splits=splits,
        model_errors=model_errors)


def _worst_sets(store: ResultsStore, plan: AuditPlan, target: Target, eps: float, truth: dict[str, int],
                decided: set[str]) -> dict[str, Any]:
    """The tiles fooled (float, 8-bit), turned (missed tumour, over-call) or errored within the L-inf budget ``eps``."""
    pos = set(target.positive_indices)
    out: dict[str, Any] = {"fooled": set(), "fooled_q": set(), "missed": set(), "over": set(), "error": set(), "names": set()}
    for e in plan.entries:
        within = e.probe.norm == "linf" and ((e.eps is not None and e.eps <= eps + 1e-12) or e.probe.budget is None)
        if not within:
            continue
        every = store.items(e.keys)
        recs = [r for r in every if not model_error(r)]
        if e.probe.worst_case:
            out["names"].add(e.probe.id)
            out["error"] |= {r["item"] for r in every if model_error(r)}
            out["fooled"] |= {k for k, v in fooled_by_tile(store, e, eps).items() if v}
            out["fooled_q"] |= {r["item"] for r in recs if r["success_8bit"] and (e.probe.budget is not None or r["linf_8bit"] <= eps + 1e-9)}
        if e.probe.budget is not None:  # decision flips from every budgeted attack within eps
            for r in recs:
                positive = truth[r["item"]] in pos
                after = (r["pred_after"] == 1) if e.probe.view == "decision" else _decision(target, r["pred_after"], r["extra"].get("p_positive_after"))
                if r["item"] in decided and positive and not after:
                    out["missed"].add(r["item"])
                if r["item"] in decided and not positive and after:
                    out["over"].add(r["item"])
    return out


def _worst(eps: float, sets: dict[str, Any], ids: set[str], correct: set[str], decided: set[str], truth: dict[str, int],
           pos: set[int]) -> WorstCase:
    """The worst case over the tiles ``ids``: a tile with a model error that no attack fooled is left out (neither way)."""
    unknown = (sets["error"] & correct & ids) - sets["fooled"]
    n = len(ids) - len(unknown)
    right = (correct & ids) - unknown
    robust, robust_q = len(right - sets["fooled"]), len(right - sets["fooled_q"])
    dec = decided & ids
    n_pos = sum(1 for i in dec if truth[i] in pos)
    n_neg = len(dec) - n_pos
    missed, over = len(sets["missed"] & dec), len(sets["over"] & dec)
    return WorstCase(eps=eps, eps_255=round(eps * 255, 6), robust_accuracy=robust / n if n else 0.0,
                     robust_accuracy_8bit=robust_q / n if n else 0.0, fooled=len(right & sets["fooled"]),
                     missed_tumour_rate=missed / n_pos if n_pos else None, overcall_rate=over / n_neg if n_neg else None,
                     attacks=sorted(sets["names"]), tiles=n, model_errors=len(unknown),
                     ci={"robust_accuracy": _ci(robust, n), "robust_accuracy_8bit": _ci(robust_q, n),
                         "missed_tumour_rate": _ci(missed, n_pos), "overcall_rate": _ci(over, n_neg)})
