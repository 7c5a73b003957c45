"""Table 1 rendered as markdown, CSV, LaTeX or JSON."""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING

from .derive import Table

if TYPE_CHECKING:
    from .tables import Catalog

TABLE_FORMATS = ("markdown", "csv", "latex", "json")


def _cell(catalog: Catalog, ids: list[str], style: str) -> str:
    if not ids:
        return "—" if style == "markdown" else ""
    out = []
    for pid in ids:
        p = catalog.papers[pid]
        ref = p.survey.ref if p.survey and p.survey.ref else None
        if style == "latex":
            out.append(f"\\cite{{{p.bibkey}}}")
        elif style == "markdown":
            out.append(f"[{ref}] {pid}" if ref else pid)
        else:
            out.append(pid)
    return ("; " if style == "csv" else ", ").join(out)


_LATEX_SPECIALS = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                   "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def render_table(catalog: Catalog, table: Table, fmt: str) -> str:
    if fmt not in TABLE_FORMATS:
        raise ValueError(f"format must be one of {', '.join(TABLE_FORMATS)}, not {fmt!r}")
    if fmt == "json":
        return json.dumps([r.as_json() for r in table.rows], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["method", "general", "medical"])
        for r in table.rows:
            w.writerow([r.method, _cell(catalog, r.general, "csv"), _cell(catalog, r.medical, "csv")])
        return buf.getvalue()
    if fmt == "latex":
        lines = [r"\begin{tabular}{lll}", r"\hline", r"Method & References & Medical domain \\", r"\hline"]
        for r in table.rows:
            lines.append(f"{latex_escape(r.method)} & {_cell(catalog, r.general, 'latex')} & {_cell(catalog, r.medical, 'latex')} \\\\")
        lines += [r"\hline", r"\end{tabular}"]
        return "\n".join(lines) + "\n"
    lines = ["| Method | References | Medical domain |", "|---|---|---|"]
    for r in table.rows:
        lines.append(f"| {r.method} | {_cell(catalog, r.general, 'markdown')} | {_cell(catalog, r.medical, 'markdown')} |")
    if table.notes:
        lines.append("")
        lines += [f"- {n}" for n in table.notes]
    return "\n".join(lines) + "\n"
