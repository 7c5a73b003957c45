"""Figures of the hardening defences: the certified-accuracy curve of randomized smoothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .figures import FONT, _save, plt


def certified_curve(rows: list[dict[str, Any]], path: Path, *, sigma: float, max_radius: float) -> None:
    """Certified accuracy (share of held-out tiles certified correct at radius >= r) against r."""
    n = max(len(rows), 1)
    radii = sorted({0.0} | {r["radius"] for r in rows if not r["abstain"] and r["pred"] == r["label"]})
    grid = [i * max(max_radius, 1.0) / 200 for i in range(201)]
    acc = [sum(1 for r in rows if not r["abstain"] and r["pred"] == r["label"] and (g == 0 or r["radius"] >= g)) / n for g in grid]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(grid, acc, color="#1f6f8b", lw=2, drawstyle="steps-post", label=f"sigma = {sigma:g}")
    ax.axvline(max_radius, color="grey", ls=":", lw=1, label=f"largest radius this n can certify ({max_radius:.2f})")
    ax.set_xlabel("L2 radius (pixels in [0, 1])", fontsize=FONT)
    ax.set_ylabel(f"certified accuracy (n = {len(rows)})", fontsize=FONT)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=FONT - 2, frameon=False)
    ax.grid(alpha=0.3)
    del radii
    _save(fig, path)
