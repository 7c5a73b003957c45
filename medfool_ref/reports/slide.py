"""A slide's files: the per-tile predictions (CSV, level-0 coordinates), the figures (matplotlib: the thumbnail with
its tissue mask, the P(tumour) heatmap over it, the attention map, the heatmaps before and after an attack), and
the report dictionaries behind report.json. Mosaic slides carry their statement (compositions of real tiles)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import PatchCollection  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from .intervals import interval  # noqa: E402
from .figures import FONT, _save  # noqa: E402

AGG_NAMES = {"max": "max", "mean": "mean", "topk": "top-k mean", "attention": "attention MIL"}


def write_predictions(path: Path, plan: Any, pred: Any, classes: Sequence[str], *, truth: dict[str, Any] | None = None) -> None:
    """One row per tissue tile: id, level-0 box, read level, side, grid row/col, tissue fraction, class probabilities,
    P(tumour), the predicted class, its attention weight and (for a mosaic) the true label of its cell."""
    labels = _truth_labels(plan, truth)
    att = pred.attention if pred.attention is not None else [None] * len(plan.items)
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["tile", "x", "y", "w", "h", "level", "side", "row", "col", "tissue_fraction", *[f"p_{c}" for c in classes],
                    "p_tumour", "pred", "attention", "truth"])
        preds = pred.probs.argmax(1)
        for n, it in enumerate(plan.items):
            x, y, bw, bh, level, side = it.region
            w.writerow([it.id, x, y, bw, bh, level, side, int(plan.rc[n, 0]), int(plan.rc[n, 1]), round(float(plan.fractions[n]), 4),
                        *[round(float(v), 6) for v in pred.probs[n]], round(float(pred.p_tumour[n]), 6), classes[int(preds[n])],
                        "" if att[n] is None else round(float(att[n]), 6), labels[n] if labels is not None else ""])


def _truth_labels(plan: Any, truth: dict[str, Any] | None) -> list[str] | None:
    """A mosaic's true label for each tile: the cell holding the tile's centre."""
    if truth is None:
        return None
    cell = truth["cell_px"]
    grid = {(c["row"], c["col"]): c["label"] for c in truth["cells"]}
    cx = (plan.boxes[:, 0] + plan.boxes[:, 2] // 2) // cell
    cy = (plan.boxes[:, 1] + plan.boxes[:, 3] // 2) // cell
    return [grid.get((int(r), int(c)), "glass") for r, c in zip(cy, cx)]


def truth_summary(plan: Any, pred: Any, classes: Sequence[str], truth: dict[str, Any] | None) -> dict[str, Any] | None:
    """For a mosaic: the tile-level accuracy against its cells' labels, and the slide's true label."""
    labels = _truth_labels(plan, truth)
    if labels is None:
        return None
    preds = [classes[int(i)] for i in pred.probs.argmax(1)]
    tissue_cells = sum(c["tissue"] for c in truth["cells"])  # type: ignore[index]
    right = sum(p == t for p, t in zip(preds, labels))
    tum = [p for p, t in zip(preds, labels) if t == "TUM"]
    return {"statement": truth["statement"], "contains_tumour": truth["contains_tumour"], "tissue_cells": tissue_cells,  # type: ignore[index]
            "tiles_on_glass": sum(t == "glass" for t in labels), "tile_accuracy": right / max(len(labels), 1),
            "tumour_tiles": len(tum), "tumour_tiles_called_tumour": sum(p == "TUM" for p in tum),
            "tile_accuracy_ci": interval(right, len(labels)) if labels else None,
            "tumour_tiles_called_tumour_ci": interval(sum(p == "TUM" for p in tum), len(tum)) if tum else None}


# --------------------------------------------------------------------------- figures


def _raster(plan: Any, values: np.ndarray) -> tuple[np.ndarray, list[float]]:
    g = plan.grid
    grid = np.full((g.rows, g.cols), np.nan)
    grid[plan.rc[:, 0], plan.rc[:, 1]] = values
    x0, y0 = g.roi[0], g.roi[1]
    s = plan.tissue.scale
    extent = [x0 / s, (x0 + (g.cols - 1) * g.stride0 + g.tile0) / s, (y0 + (g.rows - 1) * g.stride0 + g.tile0) / s, y0 / s]
    return grid, extent


def _base(ax: Any, plan: Any) -> None:
    ax.imshow(plan.tissue.thumbnail, interpolation="bilinear")
    ax.set_axis_off()


def _outline(ax: Any, plan: Any, idx: np.ndarray, colour: str, width: float = 1.2) -> None:
    s = plan.tissue.scale
    rects = [Rectangle((x / s, y / s), w / s, h / s) for x, y, w, h in plan.boxes[idx].tolist()]
    ax.add_collection(PatchCollection(rects, facecolor="none", edgecolor=colour, linewidth=width))


def tissue_figure(plan: Any, path: Path, *, note: str = "") -> None:
    t = plan.tissue
    fig, ax = plt.subplots(figsize=(6.4, 6.4 * t.mask.shape[0] / max(t.mask.shape[1], 1) + 0.6))
    _base(ax, plan)
    ax.contour(t.mask.astype(float), levels=[0.5], colors=["#1b7837"], linewidths=1.0)
    _outline(ax, plan, np.arange(len(plan.items)), "#2166ac", 0.6)
    ax.set_title(f"tissue ({t.method} > {t.threshold:.3f}, green); {len(plan.items)} of {plan.grid_tiles} tiles kept (blue) "
                 f"(>= {plan.min_tissue:.0%} tissue){note}", fontsize=FONT - 2, wrap=True)
    _save(fig, Path(path))


def heatmap_figure(plan: Any, values: np.ndarray, path: Path, *, title: str, label: str, vmax: float | None = 1.0,
                   cmap: str = "inferno") -> None:
    t = plan.tissue
    fig, ax = plt.subplots(figsize=(6.8, 6.4 * t.mask.shape[0] / max(t.mask.shape[1], 1) + 0.6))
    _base(ax, plan)
    grid, extent = _raster(plan, values)
    im = ax.imshow(np.ma.masked_invalid(grid), extent=extent, cmap=cmap, vmin=0, vmax=vmax or float(np.nanmax(values)),
                   alpha=0.6, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label=label)
    ax.set_title(title, fontsize=FONT - 1, wrap=True)
    _save(fig, Path(path))


def calls_line(calls: dict[str, dict[str, Any]]) -> str:
    return "; ".join(f"{AGG_NAMES[n]} {c['score']:.2f} {'T' if c['call'] else 'N'}" for n, c in calls.items())


def before_after_figure(plan: Any, before: np.ndarray, after: np.ndarray, attacked: np.ndarray, path: Path, *,
                        calls_before: dict[str, dict[str, Any]], calls_after: dict[str, dict[str, Any]], title: str) -> None:
    """P(tumour) before | after, the attacked tiles outlined (cyan), each panel with every aggregator's call (T/N)."""
    t = plan.tissue
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 5.0 * t.mask.shape[0] / max(t.mask.shape[1], 1) + 0.9))
    for ax, vals, calls, name in ((axes[0], before, calls_before, "before"), (axes[1], after, calls_after, "after")):
        _base(ax, plan)
        grid, extent = _raster(plan, vals)
        im = ax.imshow(np.ma.masked_invalid(grid), extent=extent, cmap="inferno", vmin=0, vmax=1, alpha=0.6, interpolation="nearest")
        if name == "after":
            _outline(ax, plan, attacked, "cyan")
        ax.set_title(f"{name}: {calls_line(calls)}", fontsize=FONT - 3, wrap=True)
    fig.colorbar(im, ax=list(axes), fraction=0.025, pad=0.02, label="P(tumour)")
    fig.suptitle(title, fontsize=FONT - 1)
    _save(fig, Path(path))


def slide_figures(plan: Any, pred: Any, out: Path, *, mosaic: bool) -> list[str]:
    """tissue.png, heatmap.png and (with the attention head) attention.png in ``out``; returns their names."""
    note = "; a mosaic of real tiles" if mosaic else ""
    tissue_figure(plan, out / "tissue.png", note=note)
    heatmap_figure(plan, pred.p_tumour, out / "heatmap.png", title=f"P(tumour) per tile{note}\n{calls_line(pred.calls)}",
                   label="P(tumour)")
    names = ["tissue.png", "heatmap.png"]
    if pred.attention is not None:
        heatmap_figure(plan, pred.attention / max(float(pred.attention.max()), 1e-12), out / "attention.png",
                       title=f"attention weight per tile (relative to the largest){note}", label="attention / max", cmap="viridis")
        names.append("attention.png")
    return names
