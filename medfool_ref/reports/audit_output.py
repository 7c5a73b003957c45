"""Writing an audit: report.json, the figures, the most damaging examples and one self-contained report.html."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ..campaign.audit import AuditPlan
from .intervals import FEW
from ..campaign.plan import tile_units
from ..campaign.run import run_campaign
from ..campaign.store import ResultsStore
from ..campaign.units import keyed
from ..inputs.tiles import from_png_bytes, read_tile
from ..targets.target import Target
from .audit import AuditReport
from .audit_figures import flip_matrix, norm_histogram, robustness_curve
from .figures import comparison_figure

TEMPLATES = Path(__file__).parent / "templates"
CAPTIONS = {
    "flips": "Where the tiles went: true class (rows) against the class after the attack (columns), for the strongest "
             "class attack at the largest budget.",
    "deepfool": "DeepFool's minimal L2 perturbations: the float solution and the saved 8-bit tile.",
    "examples": "The most damaging examples: tumour tiles made to read as non-tumour (original, adversarial saved as "
                "8-bit PNG, amplified difference), re-run on these tiles alone.",
}


def environment() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True)


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def _ci(ci: Any) -> str:
    """A stored interval as "n=65, 95% CI 83.2-97.3%" (and a mark when it rests on fewer than 20 tiles)."""
    if not isinstance(ci, dict) or ci.get("lo") is None:
        return ""
    few = f"; fewer than {FEW} tiles" if ci.get("few") else ""
    return f"n={ci['n']}, 95% CI {ci['lo']:.1%}-{ci['hi']:.1%}{few}"


def _budget(b: dict[str, Any]) -> str:
    if b["eps_255"] is not None:
        return f"{b['eps_255']:g}/255"
    return f"L2 {b['eps']:g}" if b["eps"] is not None else "none (minimal or fixed)"


def render_html(report: dict[str, Any], figures: dict[str, str], gates: list[dict[str, Any]]) -> str:
    return environment().get_template("audit.html").render(r=report, figures=figures, captions=CAPTIONS, gates=gates,
                                                             pct=_pct, num=_num, budget=_budget, ci=_ci)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _examples(store: ResultsStore, plan: AuditPlan, target: Target, out: Path, limit: int = 4) -> Path | None:
    """Re-run the strongest tumour-decision attack on a few tumour tiles it turned, keeping the images."""
    entries = [e for e in plan.entries if e.probe.view == "decision" and e.probe.budget and e.units]
    if not entries:
        return None
    e = max(entries, key=lambda e: e.eps or 0)
    turned = [r for r in store.items(e.keys) if r["success"] and r["label"] == 1][:limit]
    if not turned:
        return None
    by_id = {it.id: it for u in e.units for it in u.items}
    items = [by_id[r["item"]] for r in turned]
    units = [keyed(u, target.fingerprint) for u in tile_units(e.probe.attack, items, params=dict(e.units[0].params),
                                                               options={"view": "decision"}, keep_images=True, label="examples")]
    run_campaign(units, target, store, resume=True, progress=False, label="examples")
    panels = []
    for u in units:
        for r in store.items([u.key]):
            data = store.artifact(u.key, f"adversarial/{r['pos']}.png")
            if data is None or not r["success_8bit"]:
                continue
            fig = out / f"example-{len(panels)}.png"
            name = lambda d: "tumour" if d == 1 else "non-tumour"  # noqa: E731
            comparison_figure(read_tile(r["path"]), from_png_bytes(data), (name(r["pred_before"]), r["conf_before"]),
                              (name(r["pred_8bit"]), r["conf_8bit"]), fig)
            panels.append(fig)
    if not panels:
        return None
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in panels]
    w, h = max(i.width for i in images), sum(i.height for i in images)
    sheet = Image.new("RGB", (w, h), "white")
    y = 0
    for im in images:
        sheet.paste(im, (0, y))
        y += im.height
    path = out / "examples.png"
    sheet.save(path)
    for p in panels:
        p.unlink()
    return path


def _flip_counts(store: ResultsStore, plan: AuditPlan) -> tuple[dict[tuple[int, int], int], str] | None:
    entries = [e for e in plan.entries if e.probe.view == "class" and e.probe.norm == "linf" and e.eps is not None
               and e.probe.worst_case and not e.probe.cascade]
    if not entries:
        return None
    top = max(e.eps for e in entries)
    best = max((e for e in entries if e.eps == top), key=lambda e: sum(bool(r["success"]) for r in store.items(e.keys)))
    counts: dict[tuple[int, int], int] = {}
    for r in store.items(best.keys):
        counts[(r["label"], r["pred_after"])] = counts.get((r["label"], r["pred_after"]), 0) + 1
    return counts, f"{best.probe.id} at {top * 255:g}/255"


def write_audit(report: AuditReport, store: ResultsStore, plan: AuditPlan, target: Target, out: Path,
                gates: list[dict[str, Any]]) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    figdir = out / "figures"
    figdir.mkdir(exist_ok=True)
    doc = report.model_dump(mode="json")
    doc["gates"] = gates
    figures: dict[str, Path] = {}
    figures["robustness"] = robustness_curve(doc, figdir / "robustness")[0]
    flips = _flip_counts(store, plan)
    if flips is not None:
        figures["flips"] = flip_matrix(flips[0], list(target.classes), f"flips under {flips[1]}", figdir / "flips")[0]
    df = next((a for a in doc["attacks"] if a["attack"] == "deepfool"), None)
    if df is not None:
        entry = next(e for e in plan.entries if e.probe.id == df["id"])
        recs = [r for r in store.items(entry.keys) if r["success"]]
        if recs:
            figures["deepfool"] = norm_histogram([r["l2"] for r in recs], [r["extra"]["l2_unrounded"] for r in recs
                                                                             if "l2_unrounded" in r["extra"]], figdir / "deepfool")[0]
    ex = _examples(store, plan, target, figdir)
    if ex is not None:
        figures["examples"] = ex
    (out / "report.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    html = render_html(doc, {k: _data_uri(v) for k, v in figures.items()}, gates)
    (out / "report.html").write_text(html, encoding="utf-8")
    return doc
