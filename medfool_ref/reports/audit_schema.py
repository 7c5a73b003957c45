"""The audit report's data model (pydantic): what report.json holds, and the JSON Schema published for it.

Torch-free, so the site can publish the schema without importing the campaign core.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Flip(_M):
    count: int
    of: int = Field(description="tiles of that kind whose decision was right before the attack")
    rate: float | None


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


class DefenceSummary(_M):
    chain: list[str]
    randomised: bool
    eot_draws: int
    clean_accuracy_undefended: float
    clean_accuracy_defended: float
    clean_cost: float = Field(description="clean accuracy lost to the defence (undefended minus defended)")
    tiles: int
    budgets: list[DefenceBudget]
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
    validity: list[ValidityCheck] = Field(default_factory=list, description="evaluation-validity checks (Carlini et al. 2019)")
    unreliable: bool = Field(False, description="a validity check failed: the robust-accuracy figures over-estimate robustness")
    defence: DefenceSummary | None = None
    residual_risk: list[Residual] = Field(default_factory=list)
    provenance: dict[str, Any] = Field(default_factory=dict, description="medfool version, code hash, machine, date, command")


def schema() -> dict[str, Any]:
    s = AuditReport.model_json_schema()
    s["title"] = "medfool audit report"
    return s
