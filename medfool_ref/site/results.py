"""Results of real reference-implementation runs, shown on attack pages.

``medfool site`` reads ``<results_dir>/<implementation>/report.json`` (written by the attack
runs); nothing is typed in by hand. When no run exists the page says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from .html import dl, esc


def results_html(implementation: str, results_dir: object, here: str) -> str:
    if results_dir is None:
        return '<p class="mf-none">No results directory configured for this build.</p>'
    report = Path(str(results_dir)) / implementation / "report.json"
    if not report.is_file():
        return f'<p class="mf-none">No run of <code>{esc(implementation)}</code> has been recorded for this build.</p>'
    data = json.loads(report.read_text(encoding="utf-8"))
    rows = [(str(k).replace("_", " "), esc(v)) for k, v in data.get("summary", {}).items()]
    return "<h3>Results of a real run on the sample tiles</h3>" + dl(rows)
