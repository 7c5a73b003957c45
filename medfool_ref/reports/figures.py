"""Figures with matplotlib (Agg backend): the attack comparison and image galleries, PNG for the site.

Captions are set in points at a size readable where the site shows the figure (about 700 px
wide); tiles are drawn without smoothing so single changed pixels stay visible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

FONT = 11  # points; at 100 dpi a caption is about 15 px high


def _rgb(x: torch.Tensor) -> np.ndarray:
    return (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _save(fig: plt.Figure, path: Path) -> None:
    fig.savefig(path, dpi=100, bbox_inches="tight", pad_inches=0.08, facecolor="white", metadata={"Software": None})
    plt.close(fig)


def comparison_figure(original: torch.Tensor, adversarial: torch.Tensor, before: tuple[str, float],
                      after: tuple[str, float], path: Path) -> None:
    """Original | adversarial | amplified difference, each titled with the model's call and confidence."""
    diff = (adversarial - original).cpu()
    peak = float(diff.abs().max())
    amp = 0.5 / peak if peak > 0 else 1.0
    shown = (0.5 + diff * amp).clamp(0, 1)
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.6))
    titles = [f"original\n{before[0]} {before[1]:.1%}", f"adversarial (8-bit)\n{after[0]} {after[1]:.1%}",
              f"difference x{amp:.0f}\nmax {peak * 255:.1f}/255"]
    for ax, img, title in zip(axes, (original, adversarial, shown), titles):
        ax.imshow(_rgb(img), interpolation="nearest")
        ax.set_title(title, fontsize=FONT)
        ax.set_axis_off()
    _save(fig, Path(path))


def gallery_figure(images: torch.Tensor | Sequence[torch.Tensor], labels: Sequence[str], path: Path, *, columns: int | None = None) -> None:
    """Images in a grid (one row unless ``columns`` is given), each with its caption above."""
    n = len(labels)
    cols = columns or n
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.7 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < n:
            ax.imshow(_rgb(images[k]), interpolation="nearest")
            ax.set_title(labels[k], fontsize=FONT)
    _save(fig, Path(path))
