"""The detection defence's report (``medfool defend detect``): every rate with its count, n and 95% Wilson interval.

Rates: the false-positive rate on the calibration tiles (at most ``fpr`` by construction) and on the evaluation
tiles (the honest one); per budget, the share of correctly classified tiles plain PGD fools, the share of those the
detector flags (its detection rate of plain adversarials), and the share fooled and not flagged, for plain PGD and
for the detector-aware attack. A defended figure is the fooled-and-undetected rate of the detector-aware attack.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .intervals import fmt, interval


def detection_doc(counts: Any) -> dict[str, Any]:
    """``detect.json``: the counts as rates with their intervals (``counts``: a campaign DetectionCounts)."""
    budgets = []
    for b in counts.budgets:
        budgets.append({
            "eps": b.eps, "eps_255": round(b.eps * 255, 4), "tiles": b.tiles,
            "plain": {"fooled": interval(b.plain_fooled, b.tiles), "detected_of_fooled": interval(b.plain_flagged, b.plain_fooled),
                      "fooled_undetected": interval(b.plain_fooled_undetected, b.tiles)},
            "adaptive": {"fooled": interval(b.adaptive_fooled, b.tiles),
                         "fooled_undetected": interval(b.adaptive_fooled_undetected, b.tiles)},
        })
    return {
        "defence": counts.defence, "detector": counts.name, "params": counts.params, "threshold": counts.threshold,
        "calibration": {"tiles": counts.calibration_tiles,
                        "false_positive": interval(counts.calibration_flagged, counts.calibration_tiles)},
        "evaluation": {"tiles": counts.tiles, "clean_accuracy": interval(counts.correct, counts.tiles),
                       "false_positive": interval(counts.flagged_clean, counts.tiles)},
        "steps": counts.steps, "budgets": budgets, "counts": asdict(counts),
        "method": ("threshold: split-conformal quantile of the clean calibration scores for the stated fpr; plain: PGD "
                   "(L-inf, random start, early stop at the first misclassification), unaware of the detector; adaptive: "
                   "PGD on min(CE, 5) - relu(score / threshold - 0.95), BPDA (straight-through) through the bit-depth "
                   "rounding, keeping each tile's first iterate that is misclassified and not flagged; rates over the "
                   "evaluation tiles the model classifies correctly"),
    }


def detection_lines(counts: Any) -> list[str]:
    """What the command prints: one line per figure."""
    out = [f"{counts.defence}: threshold {counts.threshold:.4g} set on {counts.calibration_tiles} clean calibration tiles",
           f"  false positives on the calibration tiles: {fmt(counts.calibration_flagged, counts.calibration_tiles)}",
           f"  false positives on the clean evaluation tiles: {fmt(counts.flagged_clean, counts.tiles)}",
           f"  clean accuracy: {fmt(counts.correct, counts.tiles)}"]
    for b in counts.budgets:
        out.append(f"  {b.eps * 255:g}/255, {counts.steps} steps: plain PGD fools {fmt(b.plain_fooled, b.tiles)}, "
                   f"of which flagged {fmt(b.plain_flagged, b.plain_fooled)}; fooled and undetected {fmt(b.plain_fooled_undetected, b.tiles)}")
        out.append(f"  {b.eps * 255:g}/255, detector-aware PGD: fools {fmt(b.adaptive_fooled, b.tiles)}; "
                   f"fooled and undetected {fmt(b.adaptive_fooled_undetected, b.tiles)}")
    return out
