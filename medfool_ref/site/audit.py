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


def audit_page(folder: Path | None, stale: bool):  # -> Page | None
    report = read_audit(folder)
    if report is None:
        return None
    figures = [(f"audit/{name}", caption) for name, caption in FIGURES.items() if (folder / "figures" / name).is_file()]
    body = render("audit.html", r=report, figures=figures, stale=stale, pct=_pct, num=_num,
                  provenance=sorted((str(k), str(v)) for k, v in (report.get("provenance") or {}).items()))
    return Page(URI, "Audit of the reference model", block(body))
