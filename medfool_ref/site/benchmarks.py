"""The Benchmarks page, rendered from the committed result files in ``benchmarks/results/``.

``peers-*.json`` are written by ``python -m benchmarks.run`` (medfool against torchattacks, Foolbox
and ART, side by side in one run); ``catalog-scale.json`` by ``python -m benchmarks.catalog_scale``.
The files are data, not markup: ``benchmarks.html`` escapes every value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .html import Page, block
from .render import render

URI = "benchmarks.md"
PEER_COLUMNS = ("seconds", "ratio_to_medfool", "ratio_to_floor", "images_per_s", "peak_mb", "success_rate", "median_l2", "median_linf",
                "forward_images", "backward_images")
SCALE_COLUMNS = ("entries_added", "validate_s", "export_s", "export_mb", "peak_rss_mb", "site_s", "site_pages")


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _pct(v: Any) -> str:
    return "–" if v is None else f"{v:.0%}"


def charts(folder: Path | None) -> dict[str, bytes]:
    """site path -> SVG of every chart the Benchmarks page shows."""
    from .charts import peers_chart, scale_chart

    out: dict[str, bytes] = {}
    if folder is None or not folder.is_dir():
        return out
    for p in sorted(folder.glob("peers-*.json")):
        svg = peers_chart(json.loads(p.read_text(encoding="utf-8")))
        if svg is not None:
            out[f"benchmarks/{p.stem}.svg"] = svg
    scale = folder / "catalog-scale.json"
    if scale.is_file() and (svg := scale_chart(json.loads(scale.read_text(encoding="utf-8")))) is not None:
        out["benchmarks/catalog-scale.svg"] = svg
    return out


def _peer_section(name: str, data: dict[str, Any]) -> dict[str, Any]:
    m, tiles = data.get("machine", {}), data.get("tiles", {})
    rows = [[str(r.get("attack", "")), str(r.get("implementation", ""))]
            + [_pct(r.get(k)) if k == "success_rate" else _num(r.get(k)) for k in PEER_COLUMNS] + [str(r.get("note", ""))]
            for r in data.get("rows", [])]
    return {"name": name, "chart": f"benchmarks/{name}.svg", "where": m.get("gpu") or m.get("machine", "?"), "device": m.get("device", "?"),
            "model": str(data.get("model") or "the reference model"), "arch": str(data.get("arch") or "tilenet"),
            "fitted": data.get("fitted") if isinstance(data.get("fitted"), dict) else None,
            "date": data.get("date", "?"), "tiles": tiles.get("count", "?"), "size_px": tiles.get("size_px", "?"),
            "cpu_count": m.get("cpu_count", "?"), "torch_threads": m.get("torch_threads", "?"),
            "versions": ", ".join(f"{k} {v}" for k, v in data.get("versions", {}).items()), "rows": rows}


def _scale_section(data: dict[str, Any]) -> dict[str, Any]:
    rows = [[_num(r.get(k)) for k in SCALE_COLUMNS] for r in data.get("rows", [])]
    return {"date": data.get("date", "?"), "machine": data.get("machine", "?"), "rows": rows}


def benchmarks_page(folder: Path | None):  # -> Page | None (imported lazily to avoid a cycle)
    if folder is None or not folder.is_dir():
        return None
    peers = [_peer_section(p.stem, json.loads(p.read_text(encoding="utf-8"))) for p in sorted(folder.glob("peers-*.json"))]
    scale_file = folder / "catalog-scale.json"
    scale = _scale_section(json.loads(scale_file.read_text(encoding="utf-8"))) if scale_file.is_file() else None
    if not peers and scale is None:
        return None
    return Page(URI, "Benchmarks", block(render("benchmarks.html", peers=peers, scale=scale, charts=set(charts(folder)))))
