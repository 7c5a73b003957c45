"""The audit report's data model (pydantic): what report.json holds, and the JSON Schema published for it.

Torch-free, so the site can publish the schema without importing the campaign core.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Interval(_M):
    """A rate's count, its n and its 95% Wilson interval; ``few``: it rests on fewer than 20 tiles."""

    k: int
    n: int
    lo: float | None
    hi: float | None
    few: bool


Intervals = dict[str, Interval | None]


class Flip(_M):
    count: int
    of: int = Field(description="tiles of that kind whose decision was right before the attack")
    rate: float | None
    ci: Interval | None = None


class Flips(_M):
    missed_tumour: Flip
    overcall: Flip


class BudgetResult(_M):
    eps: float | None = Field(description="the budget (L-inf on [0, 1], or L2); null for an attack run without one")
    eps_255: float | None = None
    norm: str
    tiles_attacked: int
    clean_accuracy: float
    robust_accuracy: float
    robust_accuracy_8bit: float
    success_rate: float | None
    success_rate_8bit: float | None
    flips: Flips
    median_l2: float | None
    median_linf_255: float | None
    queries: dict[str, int]
    seconds: float
    extra: dict[str, Any] = Field(default_factory=dict)
    model_errors: int = Field(0, description="attacked tiles whose model output was NaN or inf: neither fooled nor robust")
    ci: Intervals = Field(default_factory=dict, description="rate name -> its count, n and 95% Wilson interval")


class AttackReport(_M):
    id: str
    attack: str = Field(description="the registered implementation")
    catalog_id: str
    stable_id: str | None
    summary: str
    view: str
    cascade: bool = Field(False, description="run only on the tiles every other worst-case attack left standing")
    params: dict[str, Any]
    budgets: list[BudgetResult]


class WorstCase(_M):
    eps: float
    eps_255: float
    robust_accuracy: float
    robust_accuracy_8bit: float
    fooled: int
    missed_tumour_rate: float | None
    overcall_rate: float | None
    attacks: list[str]
    tiles: int | None = Field(None, description="the tiles these rates are over (model errors left out)")
    model_errors: int = Field(0, description="tiles left out: a NaN/inf output, clean or under a worst-case attack")
    ci: Intervals = Field(default_factory=dict, description="rate name -> its count, n and 95% Wilson interval")


class Split(_M):
    """The figures on one part of the tiles: those the model was trained on, or held out from its training."""

    name: str = Field(description="held-out or training")
    tiles: int
    clean_accuracy: float | None
    ci: Intervals = Field(default_factory=dict)
    worst_case: list[WorstCase]


class ModelErrors(_M):
    count: int = Field(0, description="tiles with a NaN/inf output on the clean pass or under any attack")
    clean: list[str] = Field(default_factory=list, description="tiles whose clean output was not finite")
    by_attack: dict[str, int] = Field(default_factory=dict, description="attack id -> tiles whose adversarial output was not finite")
    tiles: list[str] = Field(default_factory=list, description="every tile with a model error (at most 200 listed)")


class Scenario(_M):
    scenario: str
    attack: str
    severity: int
    likelihood_catalog: int
    likelihood_measured: int
    risk_catalog: int
    risk_measured: int
    band_catalog: str
    band_measured: str
    evidence: str


class ValidityCheck(_M):
    id: str
    title: str
    passed: bool | None = Field(description="null: not applicable or not run")
    measured: str
    tiles: int
    detail: dict[str, Any] = Field(default_factory=dict)


class DefenceBudget(_M):
    eps: float
    eps_255: float
    tiles: int
    undefended: float = Field(description="worst-case robust accuracy of the model alone")
    undefended_ci95: list[float]
    adaptive: float = Field(description="worst-case robust accuracy of the defended system under the adaptive battery (BPDA/EOT)")
    adaptive_ci95: list[float]
    non_adaptive: float = Field(description="the same attacks on the real, non-differentiable system, attacked plainly")
    non_adaptive_ci95: list[float]
    overclaim: float = Field(description="non-adaptive minus adaptive robust accuracy: what a plain evaluation over-claims")


class DefenceSplit(_M):
    """The defended, non-adaptive and undefended figures on one part of the sample tiles (held-out first)."""

    name: str = Field(description="held-out or training")
    tiles: int
    clean_accuracy_undefended: float | None
    clean_accuracy_defended: float | None
    budgets: list[DefenceBudget]


class DefenceSummary(_M):
    chain: list[str]
    randomised: bool
    eot_draws: int
    clean_accuracy_undefended: float
    clean_accuracy_defended: float
    clean_cost: float = Field(description="clean accuracy lost to the defence (undefended minus defended)")
    tiles: int
    budgets: list[DefenceBudget]
    splits: list[DefenceSplit] = Field(default_factory=list, description="on the reference model's sample tiles: the held-out "
                                       "tiles (the figures to quote), then those it was trained on")
    method: str


class Residual(_M):
    scenario: str
    attack: str
    severity: int
    risk_inherent: int = Field(description="the scenario's risk re-scored from the undefended model's evidence")
    band_inherent: str
    risk_residual: int = Field(description="the same, from the defended system's adaptive evidence")
    band_residual: str
    evidence_inherent: str
    evidence_residual: str


class Skip(_M):
    path: str
    reason: str


class QueryTraffic(_M):
    """What the audit sent a served model (``--endpoint``), from the results store's ``queries`` table."""

    runs: int = Field(description="command runs that sent requests (a --resume adds one)")
    requests: int = Field(description="HTTP requests, retries included")
    answered: int
    images_answered: int
    retries: int
    bytes_sent: int
    bytes_received: int
    latency_median_s: float
    latency_p95_s: float
    statuses: dict[str, int] = Field(description="HTTP status, or transport error name -> requests")


class AuditReport(_M):
    medfool: str
    date: str
    device: str
    engine: str
    model: dict[str, Any]
    data: dict[str, Any]
    skipped: list[Skip]
    attacks: list[AttackReport]
    worst_case: list[WorstCase]
    threat_model: list[Scenario]
    rule: list[str]
    gates: list[dict[str, Any]] = Field(default_factory=list)
    splits: list[Split] = Field(default_factory=list, description="held-out tiles first, then training tiles (the shipped "
                                "sample tiles only; a user's own data has no split)")
    model_errors: ModelErrors = Field(default_factory=ModelErrors)
    warnings: list[str] = Field(default_factory=list)
    validity: list[ValidityCheck] = Field(default_factory=list, description="evaluation-validity checks (Carlini et al. 2019)")
    unreliable: bool = Field(False, description="a validity check failed: the robust-accuracy figures over-estimate robustness")
    defence: DefenceSummary | None = None
    residual_risk: list[Residual] = Field(default_factory=list)
    queries: QueryTraffic | None = Field(None, description="an endpoint audit's requests, as logged in results.sqlite")
    provenance: dict[str, Any] = Field(default_factory=dict, description="medfool version, code hash, machine, date, command")


def schema() -> dict[str, Any]:
    s = AuditReport.model_json_schema()
    s["title"] = "medfool audit report"
    return s
