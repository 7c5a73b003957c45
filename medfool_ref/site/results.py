"""Results of real reference-implementation runs, shown on attack pages.

``medfool results`` writes ``<results>/<implementation>/report.json`` and ``comparison.png``
by running our code on the sample tiles; the site only reads them. Nothing is typed in by hand.
When no run exists the page says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from .html import dl, esc, href

LABELS = {
    "images": "tiles attacked (those the reference model classifies correctly)",
    "successes": "fooled (floating point)",
    "success_rate": "success rate",
    "success_after_8bit_quantisation": "still fooled after saving as 8-bit PNG",
    "median_l2": "median L2 of successful perturbations",
    "median_linf_255": "median L-inf of successful perturbations (/255)",
    "rho_mean": "DeepFool robustness rho = mean ||r||2 / ||x||2",
    "forward_images": "images forwarded (queries)",
    "backward_images": "images backpropagated",
    "seconds": "attack time (s)",
    "device": "device",
    "machine": "machine",
    "params": "parameters",
    "example_tile": "example tile",
}


def result_files(results_dir: Path | None) -> list[tuple[str, Path]]:
    """(site path, file) of every figure the site should copy."""
    if results_dir is None or not results_dir.is_dir():
        return []
    return [(f"results/{p.parent.name}/{p.name}", p) for p in sorted(results_dir.glob("*/comparison.png"))]


def _fmt(key: str, value: object) -> str:
    if key == "success_rate" and isinstance(value, float):
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
    return str(value)


def results_html(implementation: str, results_dir: object, here: str) -> str:
    if results_dir is None:
        return '<p class="mf-none">No results folder is configured for this build.</p>'
    folder = Path(str(results_dir)) / implementation
    report = folder / "report.json"
    if not report.is_file():
        return (f'<p class="mf-none">No run of <code>{esc(implementation)}</code> is recorded for this build '
                "(<code>medfool results</code> writes one; <code>make serve</code> runs it).</p>")
    summary = json.loads(report.read_text(encoding="utf-8")).get("summary", {})
    rows = [(LABELS.get(k, k), esc(_fmt(k, v))) for k, v in summary.items() if k in LABELS]
    figure = ""
    if (folder / "comparison.png").is_file():
        src = href(here, f"results/{implementation}/comparison.png")
        figure = (f'<figure><img src="{src}" alt="original, adversarial and amplified difference of one tumour tile">'
                  "<figcaption>One tumour tile from a real run: original, adversarial (8-bit), amplified difference, "
                  "with the reference model's predictions.</figcaption></figure>")
    return "<h3>Results of a real run on the sample tiles</h3>" + dl(rows) + figure
