"""The Benchmarks page, rendered from the committed result files in ``benchmarks/results/``.

``peers-*.json`` are written by ``python -m benchmarks.run`` (medfool against torchattacks, Foolbox
and ART, side by side in one run); ``catalog-scale.json`` by ``python -m benchmarks.catalog_scale``.
Every value is escaped: the files are data, not markup.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .html import block, esc

URI = "benchmarks.md"


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return esc(f"{v:.{digits}g}")
    return esc(str(v))


def _pct(v: Any) -> str:
    return "–" if v is None else esc(f"{v:.0%}")


def _peer_section(name: str, data: dict[str, Any]) -> list[str]:
    m = data.get("machine", {})
    versions = ", ".join(f"{k} {v}" for k, v in data.get("versions", {}).items())
    tiles = data.get("tiles", {})
    head = ("<tr><th>attack</th><th>implementation</th><th>seconds</th><th>time / medfool</th><th>success</th>"
            "<th>median L2</th><th>median L∞</th><th>forward images</th><th>backward images</th><th>note</th></tr>")
    rows = []
    for r in data.get("rows", []):
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in (
            esc(r.get("attack", "")), esc(r.get("implementation", "")), _num(r.get("seconds")), _num(r.get("ratio_to_medfool")),
            _pct(r.get("success_rate")), _num(r.get("median_l2")), _num(r.get("median_linf")), _num(r.get("forward_images")),
            _num(r.get("backward_images")), esc(r.get("note", "")))) + "</tr>")
    where = m.get("gpu") or m.get("machine", "?")
    return [
        f"<h2 id=\"{esc(name)}\">Attack implementations: {esc(where)} ({esc(m.get('device', '?'))})</h2>",
        f"<p>Measured {esc(data.get('date', '?'))} in one process on {esc(tiles.get('count', '?'))} initially-correct sample "
        f"tiles of {esc(tiles.get('size_px', '?'))} px with the reference model; {esc(m.get('cpu_count', '?'))} CPUs, "
        f"{esc(m.get('torch_threads', '?'))} torch threads; {esc(versions)}. Seconds are medians of repeated runs after a "
        "warm-up; a ratio above 1 means the peer is slower than medfool. Success is on tiles the model got right.</p>",
        f"<table class=\"mf-table\"><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>",
    ]


def _scale_section(data: dict[str, Any]) -> list[str]:
    head = ("<tr><th>entries added</th><th>validate (s)</th><th>export (s)</th><th>export (MB)</th><th>peak memory (MB)</th>"
            "<th>site build (s)</th><th>site pages</th></tr>")
    rows = []
    for r in data.get("rows", []):
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in (
            _num(r.get("entries_added")), _num(r.get("validate_s")), _num(r.get("export_s")), _num(r.get("export_mb")),
            _num(r.get("peak_rss_mb")), _num(r.get("site_s")), _num(r.get("site_pages")))) + "</tr>")
    return [
        "<h2 id=\"catalog-scale\">The catalog at scale</h2>",
        f"<p>The shipped catalog plus N synthetic, valid entries, each measured in a fresh process; measured "
        f"{esc(data.get('date', '?'))} on {esc(data.get('machine', '?'))}.</p>",
        f"<table class=\"mf-table\"><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>",
    ]


def benchmarks_page(folder: Path | None):  # -> Page | None (imported lazily to avoid a cycle)
    from .pages import Page

    if folder is None or not folder.is_dir():
        return None
    parts: list[str] = [
        "<p>Are medfool's reference implementations as strong as the libraries red-teamers already use, and are they "
        "faster? These tables answer with measurements taken side by side, never with claims. Reproduce them with "
        "<code>python -m benchmarks.run</code> and <code>python -m benchmarks.catalog_scale</code> "
        "(see <code>benchmarks/README.md</code>).</p>"]
    found = False
    for path in sorted(folder.glob("peers-*.json")):
        parts += _peer_section(path.stem, json.loads(path.read_text(encoding="utf-8")))
        found = True
    scale = folder / "catalog-scale.json"
    if scale.is_file():
        parts += _scale_section(json.loads(scale.read_text(encoding="utf-8")))
        found = True
    if not found:
        return None
    return Page(URI, "Benchmarks", block(*parts))
