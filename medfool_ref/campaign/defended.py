"""The defended audit: one battery, three systems, one store (``medfool audit --defence ...``).

1. the defended system attacked adaptively (BPDA through every non-differentiable step, EOT over every random
   one): the headline figure, with the validity checks;
2. the same system attacked plainly (autograd through the real chain, one draw): the figure a non-adaptive
   evaluation would publish, so the over-claim is visible;
3. the model alone: the undefended figure, side by side per budget.
Each system has its own run fingerprint (weights, defence chain with every parameter, attack mode, EOT draws),
so ``--resume`` and ``--engine ray`` treat their units like any others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..inputs.items import Item
from ..targets.defended import with_defences
from ..targets.target import Target
from .audit import AuditPlan, run_audit
from .store import ResultsStore
from .validity import Check, run_validity


@dataclass
class DefendedAudit:
    adaptive: tuple[Target, AuditPlan]
    plain: tuple[Target, AuditPlan] | None
    undefended: tuple[Target, AuditPlan] | None
    checks: list[Check]


def audit_with_validity(items: list[Item], base: Target, store: ResultsStore, *, defences: list[str] | None = None,
                        draws: int = 8, validity_tiles: int = 16, **kw: Any) -> DefendedAudit:
    """The audit of ``base`` (behind ``defences`` when given) with its validity checks; with defences, also the plain
    and the undefended audits. ``kw`` goes to :func:`run_audit` (probes, budgets, overrides, batch size, resume, engine)."""
    common = {k: kw[k] for k in ("batch_size", "resume", "progress", "engine") if k in kw}
    if not defences:
        plan = run_audit(items, base, store, **kw)
        if getattr(base.model, "query_only", False):  # a served model: no gradients for the white-box checks
            return DefendedAudit((base, plan), None, None, [Check(
                "query-only", "evaluation-validity checks (white-box attacks at a large budget, more steps, gradient-free control)",
                None, "not run: a served model answers queries only, and these checks need its gradients", 0)])
        checks = run_validity(items, base, store, plan, tiles=validity_tiles, **common)
        return DefendedAudit((base, plan), None, None, checks)
    adaptive = with_defences(base, defences, adaptive=True, draws=draws)
    plan = run_audit(items, adaptive, store, **kw)
    more = with_defences(base, defences, adaptive=True, draws=2 * draws) if adaptive.model.randomised else None
    checks = run_validity(items, adaptive, store, plan, tiles=validity_tiles, more_draws=more, **common)
    plain = with_defences(base, defences, adaptive=False, draws=draws)
    plain_plan = run_audit(items, plain, store, **kw)
    base_plan = run_audit(items, base, store, **kw)
    return DefendedAudit((adaptive, plan), (plain, plain_plan), (base, base_plan), checks)
