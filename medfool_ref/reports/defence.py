"""The defended audit's report sections: the defended system beside the plain evaluation and the model alone,
per budget with 95% Wilson intervals, and the residual risk of each scenario (report.json's ``defence`` and
``residual_risk``)."""

from __future__ import annotations

from ..targets.target import Target
from .audit_schema import AuditReport, DefenceBudget, DefenceSplit, DefenceSummary, Residual, WorstCase

def _ci(p: float, n: int) -> list[float]:
    from ..training.reference import wilson_interval

    return [round(v, 6) for v in wilson_interval(round(p * n), n)]

def _budgets(defended: list[WorstCase], plain: list[WorstCase], undefended: list[WorstCase], n: int) -> list[DefenceBudget]:
    plain_w = {w.eps: w for w in plain}
    base_w = {w.eps: w for w in undefended}
    budgets = []
    for w in defended:
        p, u = plain_w[w.eps], base_w[w.eps]
        budgets.append(DefenceBudget(eps=w.eps, eps_255=w.eps_255, tiles=n, undefended=u.robust_accuracy,
                                     undefended_ci95=_ci(u.robust_accuracy, n), adaptive=w.robust_accuracy,
                                     adaptive_ci95=_ci(w.robust_accuracy, n), non_adaptive=p.robust_accuracy,
                                     non_adaptive_ci95=_ci(p.robust_accuracy, n), overclaim=p.robust_accuracy - w.robust_accuracy))
    return budgets


def _splits(defended: AuditReport, plain: AuditReport, undefended: AuditReport) -> list[DefenceSplit]:
    """Held-out, then training: the three systems on each part of the sample tiles (empty for a user's data)."""
    plain_s = {s.name: s for s in plain.splits}
    base_s = {s.name: s for s in undefended.splits}
    return [DefenceSplit(name=s.name, tiles=s.tiles, clean_accuracy_undefended=base_s[s.name].clean_accuracy,
                         clean_accuracy_defended=s.clean_accuracy,
                         budgets=_budgets(s.worst_case, plain_s[s.name].worst_case, base_s[s.name].worst_case, s.tiles))
            for s in defended.splits if s.name in plain_s and s.name in base_s and s.tiles]


def defence_section(defended: AuditReport, plain: AuditReport, undefended: AuditReport, target: Target) -> tuple[DefenceSummary, list[Residual]]:
    """The defended system beside the plain evaluation and the model alone, per budget, and the residual risk."""
    n = defended.data["tiles"]
    budgets = _budgets(defended.worst_case, plain.worst_case, undefended.worst_case, n)
    model = target.model
    summary = DefenceSummary(
        chain=list(target.defence), randomised=bool(getattr(model, "randomised", False)), eot_draws=target.draws,
        clean_accuracy_undefended=undefended.data["clean_accuracy"], clean_accuracy_defended=defended.data["clean_accuracy"],
        clean_cost=undefended.data["clean_accuracy"] - defended.data["clean_accuracy"], tiles=n, budgets=budgets,
        splits=_splits(defended, plain, undefended),
        method="adaptive: BPDA (real forward; identity or a differentiable approximation backward) through every "
               "non-differentiable step" + (f", EOT over {target.draws} draws per step" if getattr(model, "randomised", False) else "")
               + "; non-adaptive: the same attacks with autograd through the real chain (one draw)")
    inherent = {s.scenario: s for s in undefended.threat_model}
    residual = [Residual(scenario=s.scenario, attack=s.attack, severity=s.severity, risk_inherent=inherent[s.scenario].risk_measured,
                         band_inherent=inherent[s.scenario].band_measured, risk_residual=s.risk_measured, band_residual=s.band_measured,
                         evidence_inherent=inherent[s.scenario].evidence, evidence_residual=s.evidence)
                for s in defended.threat_model if s.scenario in inherent]
    return summary, residual
