"""The Audit page: the reference model's audit from a real, recorded run (``medfool audit``, committed with
its provenance), rendered by the site's templates; attack pages link to their rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .html import Page, block
from .render import render

URI = "audit.md"
FIGURES = {
    "robustness.png": "Accuracy under attack against the L-inf budget, per attack; the worst case (per tile, over every "
                      "worst-case attack) in black.",
    "flips.png": "True class (rows) against the class after the strongest class attack at the largest budget.",
    "deepfool.png": "DeepFool's minimal L2 perturbations: float solution and saved 8-bit tile.",
    "examples.png": "Tumour tiles made to read as non-tumour: original, adversarial saved as 8-bit PNG, amplified difference.",
}


def read_audit(folder: Path | None) -> dict[str, Any] | None:
    if folder is None or not (folder / "report.json").is_file():
        return None
    return json.loads((folder / "report.json").read_text(encoding="utf-8"))


def figure_files(folder: Path | None) -> list[tuple[str, Path]]:
    if folder is None or read_audit(folder) is None:
        return []
    return [(f"audit/{name}", folder / "figures" / name) for name in FIGURES if (folder / "figures" / name).is_file()]


def rows_for(report: dict[str, Any] | None, catalog_id: str) -> list[str]:
    """The audit's attack ids that ran the catalog entry ``catalog_id``."""
    return [a["id"] for a in (report or {}).get("attacks", []) if a.get("catalog_id") == catalog_id]


def _pct(v: Any) -> str:
    return "n/a" if not isinstance(v, (int, float)) else f"{v:.1%}"


def _num(v: Any) -> str:
    return "n/a" if not isinstance(v, (int, float)) else f"{v:.3g}"


def _rate(v: Any, ci: Any) -> str:
    """A rate with its n and 95% Wilson interval when the report holds one (older reports: the rate alone)."""
    from ..reports.intervals import fmt_ci

    return fmt_ci(ci) if isinstance(ci, dict) and ci.get("n") else _pct(v)


def _rate_n(v: Any, ci: Any, n: Any) -> str:
    """``_rate``, or for an older report without intervals, the interval of ``v`` over ``n`` tiles."""
    from ..reports.intervals import from_rate

    if not (isinstance(ci, dict) and ci.get("n")) and isinstance(n, int) and isinstance(v, (int, float)):
        ci = from_rate(float(v), n)
    return _rate(v, ci)


def _part(name: str, label: str, clean: Any, clean_ci: Any, worst: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [(_num(w.get("eps_255")), _rate(w.get("robust_accuracy"), (w.get("ci") or {}).get("robust_accuracy")),
             _rate(w.get("missed_tumour_rate"), (w.get("ci") or {}).get("missed_tumour_rate")),
             _rate(w.get("overcall_rate"), (w.get("ci") or {}).get("overcall_rate"))) for w in worst]
    return {"name": name, "label": label, "clean": _rate(clean, clean_ci), "rows": rows}


def headline(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline's parts: the held-out tiles first (the figures to quote), then the training tiles, then all tiles."""
    from ..reports.intervals import from_rate

    data = r.get("data") or {}
    n = data.get("tiles") if isinstance(data.get("tiles"), int) else 0
    parts = []
    for s in r.get("splits") or []:
        label = ("held-out tiles: the reference model never saw them in training, the figures to quote" if s.get("name") == "held-out"
                 else "training tiles: the reference model was trained on them, flattering, for comparison only")
        parts.append(_part(f"{s.get('tiles')} {s.get('name')} tiles", label, s.get("clean_accuracy"), (s.get("ci") or {}).get("clean_accuracy"),
                           s.get("worst_case") or []))
    clean_ci = data.get("clean_accuracy_ci") or from_rate(data.get("clean_accuracy"), n)
    worst = [{**w, "ci": w.get("ci") or {"robust_accuracy": from_rate(w.get("robust_accuracy"), n)}} for w in r.get("worst_case") or []]
    parts.append(_part(f"all {n} tiles", "every audited tile together" if parts else "all tiles", data.get("clean_accuracy"), clean_ci, worst))
    return parts


def audit_page(folder: Path | None, stale: bool):  # -> Page | None
    report = read_audit(folder)
    if report is None:
        return None
    figures = [(f"audit/{name}", caption) for name, caption in FIGURES.items() if (folder / "figures" / name).is_file()]
    body = render("audit.html", r=report, figures=figures, stale=stale, pct=_pct, num=_num, parts=headline(report), rate_n=_rate_n,
                  provenance=sorted((str(k), str(v)) for k, v in (report.get("provenance") or {}).items()))
    return Page(URI, "Audit of the reference model", block(body))
