"""The audit's figures (matplotlib, Agg): robust accuracy against budget, the flip matrix, DeepFool's norms."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FONT = 10


def _save(fig: Any, path: Path) -> list[Path]:
    fig.savefig(path.with_suffix(".png"), dpi=110, bbox_inches="tight", facecolor="white", metadata={"Software": None})
    fig.savefig(path.with_suffix(".svg"), bbox_inches="tight", facecolor="white", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return [path.with_suffix(".png"), path.with_suffix(".svg")]


def robustness_curve(report: dict[str, Any], path: Path) -> list[Path]:
    """Robust accuracy against the L-inf budget for every budgeted attack, with the worst case in bold."""
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    clean = report["data"]["clean_accuracy"]
    for a in report["attacks"]:
        pts = [(b["eps_255"], b["robust_accuracy"]) for b in a["budgets"] if b["eps_255"] is not None]
        if len(pts) > 1 and not a.get("cascade"):
            xs, ys = zip(*[(0.0, a["budgets"][0]["clean_accuracy"]), *sorted(pts)])
            ax.plot(xs, ys, marker="o", linewidth=1.2, label=a["id"] + (" (tumour decision)" if a["view"] == "decision" else ""))
    wc = [(0.0, clean)] + [(w["eps_255"], w["robust_accuracy"]) for w in report["worst_case"]]
    if len(wc) > 1:
        ax.plot(*zip(*wc), color="black", linewidth=3, marker="s", label="worst case (per tile, all attacks)")
    ax.set_xlabel("L-inf budget (/255)", fontsize=FONT)
    ax.set_ylabel("accuracy under attack", fontsize=FONT)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=FONT - 1, loc="upper right")
    return _save(fig, path)


def flip_matrix(counts: dict[tuple[int, int], int], classes: Sequence[str], title: str, path: Path) -> list[Path]:
    """True class (rows) x class after the attack (columns), in tiles."""
    import numpy as np

    k = len(classes)
    m = np.zeros((k, k), dtype=int)
    for (t, a), c in counts.items():
        m[t, a] = c
    fig, ax = plt.subplots(figsize=(0.55 * k + 2.4, 0.55 * k + 1.6))
    ax.imshow(m, cmap="Purples")
    for i in range(k):
        for j in range(k):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=FONT - 1,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=FONT - 1)
    ax.set_yticks(range(k), classes, fontsize=FONT - 1)
    ax.set_xlabel("class after the attack", fontsize=FONT)
    ax.set_ylabel("true class", fontsize=FONT)
    ax.set_title(title, fontsize=FONT)
    return _save(fig, path)


def norm_histogram(l2: list[float], l2_unrounded: list[float], path: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    bins = 20
    if l2_unrounded:
        ax.hist(l2_unrounded, bins=bins, alpha=0.6, label="float solution")
    ax.hist(l2, bins=bins, alpha=0.6, label="saved 8-bit tile")
    ax.set_xlabel("L2 norm of DeepFool's minimal perturbation", fontsize=FONT)
    ax.set_ylabel("tiles", fontsize=FONT)
    ax.legend(fontsize=FONT)
    ax.grid(alpha=0.3)
    return _save(fig, path)
