"""The Benchmarks page, rendered from the committed result files in ``benchmarks/results/``.

``peers-*.json`` are written by ``python -m benchmarks.run`` (medfool against torchattacks, Foolbox
and ART, side by side in one run); ``catalog-scale.json`` by ``python -m benchmarks.catalog_scale``;
``precision-*.json`` by ``python -m benchmarks.precision`` (the audit in float32, bf16, channels-last);
``compile-*.json`` by ``python -m benchmarks.compile_trial``; ``slide-scale-archs-*.json`` by
``python -m benchmarks.slide_scale --arch ...``.
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
    from .charts import peers_chart, precision_chart, scale_chart

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
    for p in sorted(folder.glob("precision-*.json")):
        if (svg := precision_chart(json.loads(p.read_text(encoding="utf-8")))) is not None:
            out[f"benchmarks/{p.stem}.svg"] = svg
    return out


def _precision_section(name: str, data: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for a in data.get("archs", []):
        for m in a.get("modes", []):
            wc = m.get("worst_case_robust_accuracy", {})
            rows.append([str(a.get("arch", "")), str(m.get("mode", "")), _num(m.get("tiles")), _num(m.get("seconds")),
                         _num(m.get("tiles_per_second")), _num(m.get("speed_vs_float32")), _pct1(m.get("pooled_success")),
                         _num(m.get("pooled_pairs")), _signed(m.get("pooled_success_points_vs_float32")),
                         " / ".join(_pct1(v) for v in wc.values()), _num(m.get("warmup_seconds")), _num(m.get("peak_mb"))])
    steps = sorted({str(a.get("apgd_steps")) for a in data.get("archs", [])})
    return {"name": name, "chart": f"benchmarks/{name}.svg", "date": data.get("date", "?"), "machine": data.get("machine", "?"),
            "device": data.get("device", "?"), "apgd_steps": ", ".join(steps), "rows": rows}


def _compile_section(data: dict[str, Any]) -> dict[str, Any]:
    rows = [[str(t.get("arch", "")), f"{t.get('tiles')} x {t.get('size_px')} px", "on" if r.get("early_stop") else "off",
             _num(r.get("eager_median_s")), _num(r.get("compiled_first_s")), _num(r.get("compiled_median_s")),
             _num(r.get("speedup_after_warmup")), _num(r.get("max_abs_adv_diff")), str(r.get("success_agreement", ""))]
            for t in data.get("trials", []) for r in t.get("pgd", [])]
    return {"date": data.get("date", "?"), "machine": data.get("machine", "?"), "device": data.get("device", "?"), "rows": rows}


def _slide_archs_section(data: dict[str, Any]) -> dict[str, Any]:
    rows = [[str(r.get("arch", "")), str(r.get("slide", "")), _num(r.get("tiles")), _num(r.get("seconds")),
             _num(r.get("tiles_per_second")), _num(r.get("peak_rss_mb")), str(r.get("error", ""))] for r in data.get("rows", [])]
    return {"date": data.get("date", "?"), "machine": data.get("machine", {}).get("machine", "?"),
            "cpu_count": data.get("machine", {}).get("cpu_count", "?"), "rows": rows}


def _pct1(v: Any) -> str:
    return "–" if v is None else f"{v:.1%}"


def _signed(v: Any) -> str:
    return "–" if v is None else f"{v:+.2f}"


def _load(folder: Path, pattern: str) -> list[tuple[str, dict[str, Any]]]:
    return [(p.stem, json.loads(p.read_text(encoding="utf-8"))) for p in sorted(folder.glob(pattern))]


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


def _defended_section(data: dict[str, Any]) -> dict[str, Any]:
    """``defended-*.json`` (``python -m benchmarks.defended``): seconds per PGD step through each defence."""
    m = data.get("machine") if isinstance(data.get("machine"), dict) else {}
    archs = []
    for a in data.get("archs") or []:
        if not isinstance(a, dict):
            continue
        tiles = a.get("tiles") if isinstance(a.get("tiles"), dict) else {}
        rows = [[str(r.get("system", "")), str(r.get("mode", "")), _num(r.get("seconds_per_step")), _num(r.get("ratio")),
                 _num(r.get("ratio_to_a_loop_over_draws")), _num(r.get("peak_mb")),
                 _pct(r.get("success")) if isinstance(r.get("success"), (int, float)) else _num(r.get("success"))]
                for r in a.get("rows") or [] if isinstance(r, dict)]
        archs.append({"arch": str(a.get("arch", "?")), "tiles": tiles.get("count", "?"), "size_px": tiles.get("size_px", "?"),
                      "steps": a.get("steps", "?"), "rows": rows})
    return {"date": data.get("date", "?"), "machine": m.get("platform", "?"), "cpu_count": m.get("cpu_count", "?"),
            "device": m.get("device", "?"), "archs": archs}


def _client_section(data: dict[str, Any]) -> dict[str, Any]:
    """``endpoint-client-*.json`` (``python -m benchmarks.endpoint_client``): the client against a bare httpx loop."""
    rows = []
    for r in data.get("rows") or []:
        if not isinstance(r, dict):
            continue
        ips = r.get("images_per_s") if isinstance(r.get("images_per_s"), dict) else {}
        rows.append([_num(r.get("tile_px")), _num(r.get("batch")), _num(ips.get("medfool")), _num(ips.get("httpx")),
                     _num(r.get("ratio_medfool_over_httpx"))])
    return {"date": data.get("date", "?"), "machine": str(data.get("machine", "?")), "server": str(data.get("server", "?")), "rows": rows}


def benchmarks_page(folder: Path | None):  # -> Page | None (imported lazily to avoid a cycle)
    if folder is None or not folder.is_dir():
        return None
    peers = [_peer_section(p.stem, json.loads(p.read_text(encoding="utf-8"))) for p in sorted(folder.glob("peers-*.json"))]
    scale_file = folder / "catalog-scale.json"
    scale = _scale_section(json.loads(scale_file.read_text(encoding="utf-8"))) if scale_file.is_file() else None
    precision = [_precision_section(n, d) for n, d in _load(folder, "precision-*.json")]
    compiled = [_compile_section(d) for _, d in _load(folder, "compile-*.json")]
    slide_archs = [_slide_archs_section(d) for _, d in _load(folder, "slide-scale-archs-*.json")]
    defended = [_defended_section(d) for _, d in _load(folder, "defended-*.json")]
    client = [_client_section(d) for _, d in _load(folder, "endpoint-client-*.json")]
    if not peers and scale is None and not precision and not compiled and not slide_archs and not defended and not client:
        return None
    return Page(URI, "Benchmarks", block(render("benchmarks.html", peers=peers, scale=scale, precision=precision, compiled=compiled,
                                                slide_archs=slide_archs, defended=defended, client=client, charts=set(charts(folder)))))
