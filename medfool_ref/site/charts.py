"""Charts for the Benchmarks page, drawn with matplotlib (Agg) from the committed result files.

Peers: one horizontal bar per (attack, peer) with the peer's time over medfool's on a log axis
(right of 1: the peer is slower), each bar labelled with the peer's success beside medfool's.
Catalog scale: validation and site-build time against the number of entries, log-log. SVG for
the page (text stays text); the data are numbers and names from our own files.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FONT = 10


def _svg(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return buf.getvalue()


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{v:.0%}"


def peers_chart(data: dict[str, Any]) -> bytes | None:
    """Time ratio peer / medfool per attack and peer, with success rates beside each bar."""
    rows = data.get("rows", [])
    ours = {r["attack"]: r for r in rows if r.get("ratio_to_medfool") == 1.0 and str(r.get("implementation", "")).startswith("medfool")}
    bars = [r for r in rows if not str(r.get("implementation", "")).startswith(("medfool", "floor")) and r.get("ratio_to_medfool")]
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(8.0, 0.42 * len(bars) + 1.2))
    labels = [f"{r['attack']}: {str(r['implementation']).split(' (')[0]}" for r in bars]
    ratios = [float(r["ratio_to_medfool"]) for r in bars]
    y = range(len(bars))
    ax.barh(list(y), ratios, color=["#5e35b1" if v >= 1 else "#ef6c00" for v in ratios])
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(list(y), labels, fontsize=FONT)
    ax.invert_yaxis()
    ax.set_xlabel("peer time / medfool time (log scale; > 1: medfool is faster)", fontsize=FONT)
    for i, r in enumerate(bars):
        base = ours.get(r["attack"], {})
        ax.annotate(f"  {ratios[i]:.2g}x; success {_pct(r.get('success_rate'))} vs medfool {_pct(base.get('success_rate'))}",
                    (ratios[i], i), va="center", fontsize=FONT - 1)
    ax.set_xlim(min(ratios + [1.0]) / 2, max(ratios + [1.0]) * 30)
    ax.grid(axis="x", which="both", alpha=0.3)
    return _svg(fig)


def scale_chart(data: dict[str, Any]) -> bytes | None:
    """Seconds to validate and to build the site against entries added, log-log."""
    rows = [r for r in data.get("rows", []) if r.get("entries_added")]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for key, label in (("validate_s", "validate"), ("export_s", "export"), ("site_s", "site build")):
        pts = [(r["entries_added"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("entries added to the catalog", fontsize=FONT)
    ax.set_ylabel("seconds", fontsize=FONT)
    ax.legend(fontsize=FONT)
    ax.grid(which="both", alpha=0.3)
    return _svg(fig)


def precision_chart(data: dict[str, Any]) -> bytes | None:
    """Speed over float32 per architecture and precision mode, each bar labelled with the change in success."""
    bars = [(a["arch"], m) for a in data.get("archs", []) for m in a.get("modes", []) if m.get("speed_vs_float32")]
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(8.0, 0.42 * len(bars) + 1.2))
    labels = [f"{arch}: {m['mode']}" for arch, m in bars]
    speeds = [m["speed_vs_float32"] for _, m in bars]
    ax.barh(range(len(bars)), speeds, color=["#4c72b0" if s >= 1 else "#c44e52" for s in speeds])
    for i, (_, m) in enumerate(bars):
        ax.text(speeds[i], i, f"  {speeds[i]:.2f}x, success {m['pooled_success_points_vs_float32']:+.1f} pts", va="center", fontsize=FONT - 1)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(bars)), labels, fontsize=FONT)
    ax.invert_yaxis()
    ax.set_xlabel("audit speed over float32 (right of 1: faster)", fontsize=FONT)
    ax.set_xlim(0, max(speeds) * 1.6)
    return _svg(fig)
