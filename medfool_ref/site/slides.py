"""The Whole slides page: a recorded run of the slide pipeline (``medfool slide demo``, committed with its provenance
under ``docs/results/slides/``): the CMU-1 heatmap, mosaic slides before and after a slide attack, and the tiles
each aggregator needs to flip. The files are data, not markup: ``slides.html`` escapes every value."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .html import Page, block
from .render import render

URI = "slides.md"
PACKAGE = Path(__file__).resolve().parents[1]
CODE = ("inputs/slides.py", "inputs/mosaic.py", "inputs/items.py", "targets/aggregate.py", "campaign/slide.py", "campaign/execute.py",
        "reports/slide.py", "cli/slide.py", "data/reference-model/tilenet.safetensors", "data/reference-model/mil-attention.safetensors")
AGGREGATORS = (("max", "max of P(tumour)"), ("mean", "mean of P(tumour)"), ("topk", "top-k mean of P(tumour)"),
               ("attention", "attention MIL (Ilse et al. 2018)"))


def slide_code_sha256() -> str:
    """sha256 over the slide pipeline's code, the attack code and the weights it used: a recorded run whose hash
    differs from today's was made by other code (it is stale)."""
    h = hashlib.sha256()
    for rel in sorted(CODE) + sorted(p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / "attacks").glob("*.py")):
        f = PACKAGE / rel
        h.update(rel.encode())
        h.update(f.read_bytes() if f.is_file() else b"")
    return h.hexdigest()


def read_slides(folder: Path | None) -> dict[str, Any] | None:
    if folder is None or not (folder / "summary.json").is_file():
        return None
    data = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def _figures(data: dict[str, Any]) -> list[str]:
    names = list((data.get("cmu1") or {}).get("figures", {}).values())
    names += [m.get("figure") for m in data.get("mosaics", []) if isinstance(m, dict)]
    return [str(n) for n in names if isinstance(n, str) and "/" not in n and n.endswith(".png")]


def figure_files(folder: Path | None) -> list[tuple[str, Path]]:
    data = read_slides(folder)
    if data is None or folder is None:
        return []
    return [(f"slides/{n}", folder / n) for n in _figures(data) if (folder / n).is_file()]


def _num(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "n/a"


def _call(c: Any) -> str:
    if not isinstance(c, dict):
        return "n/a"
    return f"{_num(c.get('score'))} vs {_num(c.get('threshold'))}: {'tumour' if c.get('call') else 'no tumour'}"


def _flip(s: Any) -> str:
    if not isinstance(s, dict):
        return "n/a"
    if s.get("k") is None:
        return f"not flipped with all {s.get('of', '?')}"
    return f"{s['k']} of {s.get('of', '?')}" + ("" if s.get("stays_flipped") else " (flips back for some larger k)")


def _fooled_ci(m: dict[str, Any]) -> str:
    """The tiles fooled of those attacked, with n and the 95% Wilson interval (marked under 20 tiles)."""
    from ..reports.intervals import fmt

    k, n = m.get("tile_fooled"), m.get("attacked")
    ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (k, n))
    return fmt(k, n) if ok and 0 <= k <= n else ""  # type: ignore[arg-type, operator]


def slides_page(folder: Path | None, stale: bool | None = None):  # -> Page | None
    data = read_slides(folder)
    if data is None or folder is None:
        return None
    prov = data.get("provenance") if isinstance(data.get("provenance"), dict) else {}
    if stale is None:
        stale = isinstance(prov.get("code_sha256"), str) and prov["code_sha256"] != slide_code_sha256()
    present = {n for n in _figures(data) if (folder / n).is_file()}
    cmu = data.get("cmu1") if isinstance(data.get("cmu1"), dict) else None
    cmu_rows = [(label, _call((cmu.get("calls") or {}).get(name))) for name, label in AGGREGATORS] if cmu else []
    cmu_figs = [(f"slides/{n}", str(cap)) for cap, n in (cmu or {}).get("figures", {}).items() if n in present] if cmu else []
    mosaics = []
    for m in data.get("mosaics", []):
        if not isinstance(m, dict):
            continue
        rows = [(label, _call((m.get("before") or {}).get(name)), _call((m.get("after") or {}).get(name)),
                 _flip((m.get("search") or {}).get(name))) for name, label in AGGREGATORS]
        mosaics.append({"m": m, "rows": rows, "figure": f"slides/{m['figure']}" if m.get("figure") in present else None,
                        "fooled_ci": _fooled_ci(m)})
    flips = [(label, [_flip((m["m"].get("search") or {}).get(name)) for m in mosaics]) for name, label in AGGREGATORS]
    body = render("slides.html", d=data, cmu=cmu, cmu_rows=cmu_rows, cmu_figs=cmu_figs, mosaics=mosaics, flips=flips, stale=stale,
                  provenance=sorted((str(k), str(v)) for k, v in prov.items()))
    return Page(URI, "Whole slides", block(body))
