"""Metrics computed from the results store (never from in-memory state).

For a set of units: success per tile (in floating point and after rounding to 8 bits), robust
accuracy, clean accuracy, the median L0/L2/L-inf norms of successful adversarials, model queries,
seconds, and the before -> after prediction transitions.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any, Sequence

from .store import ResultsStore


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _rate(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def tile_metrics(store: ResultsStore, keys: Sequence[str], classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Aggregates over the items of the units ``keys`` (missing or failed units count as absent)."""
    units = store.units(keys=list(keys))
    items = store.items([u["key"] for u in units])
    ok = [bool(r["success"]) for r in items if r["success"] is not None]
    okq = [bool(r["success_8bit"]) for r in items if r["success_8bit"] is not None]
    labelled = [r for r in items if r["label"] is not None]
    succ = [r for r in items if r["success"]]
    succ_q = [r for r in items if r["success_8bit"]]
    out: dict[str, Any] = {
        "units": len(units),
        "images": len(items),
        "successes": sum(ok),
        "success_rate": _rate(ok),
        "success_after_8bit_quantisation": sum(okq),
        "success_rate_8bit": _rate(okq),
        "clean_accuracy": _rate([r["pred_before"] == r["label"] for r in labelled if r["pred_before"] is not None]),
        "robust_accuracy": _rate([r["pred_after"] == r["label"] for r in labelled if r["pred_after"] is not None]),
        "robust_accuracy_8bit": _rate([r["pred_8bit"] == r["label"] for r in labelled if r["pred_8bit"] is not None]),
        "median_l2": _median([r["l2"] for r in succ if r["l2"] is not None]),
        "median_linf_255": _median([r["linf"] * 255 for r in succ if r["linf"] is not None]),
        "median_l0": _median([float(r["l0"]) for r in succ if r["l0"] is not None]),
        "median_l2_8bit": _median([r["l2_8bit"] for r in succ_q if r["l2_8bit"] is not None]),
        "median_linf_255_8bit": _median([r["linf_8bit"] * 255 for r in succ_q if r["linf_8bit"] is not None]),
        "forward_calls": sum(u["forward_calls"] or 0 for u in units),
        "forward_images": sum(u["forward_images"] or 0 for u in units),
        "backward_calls": sum(u["backward_calls"] or 0 for u in units),
        "backward_images": sum(u["backward_images"] or 0 for u in units),
        "seconds": round(sum(u["seconds"] or 0.0 for u in units), 3),
    }
    if classes is not None:
        name = lambda i: "?" if i is None or i < 0 else classes[i]  # noqa: E731
        moves = Counter(f"{name(r['pred_before'])} -> {name(r['pred_after'])}" for r in items if r["pred_before"] is not None)
        out["before_after"] = dict(sorted(moves.items(), key=lambda kv: (-kv[1], kv[0])))
    numeric = sorted({k for r in items for k, v in r["extra"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    for k in numeric:
        vals = [r["extra"][k] for r in items if isinstance(r["extra"].get(k), (int, float))]
        out[f"{k}_mean"] = sum(vals) / len(vals)
        succ_vals = [r["extra"][k] for r in succ if isinstance(r["extra"].get(k), (int, float))]
        out[f"{k}_mean_successful"] = sum(succ_vals) / len(succ_vals) if succ_vals else None
        out[f"{k}_median_successful"] = _median(succ_vals)
    return out
