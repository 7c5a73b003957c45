"""Writing attack outputs: 8-bit quantisation, PNG files and the comparison figure (Pillow only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

PANEL_GAP = 8
CAPTION = 34


def quantise(x: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit grid a PNG can hold (the result is what a saved tile really contains)."""
    return (x * 255).round().clamp(0, 255) / 255


def to_image(x: torch.Tensor) -> Image.Image:
    arr = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")


def save_png(x: torch.Tensor, path: Path) -> None:
    to_image(x).save(path, format="PNG")


def _row_figure(panels: list[Image.Image], captions: list[str], path: Path, scale: int) -> None:
    """Panels side by side, each with a caption above, enlarged ``scale`` times without smoothing."""
    w, h = panels[0].size
    w, h = w * scale, h * scale
    canvas = Image.new("RGB", (len(panels) * (w + PANEL_GAP) + PANEL_GAP, h + CAPTION + PANEL_GAP), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (panel, caption) in enumerate(zip(panels, captions)):
        x0 = PANEL_GAP + i * (w + PANEL_GAP)
        canvas.paste(panel.resize((w, h), Image.NEAREST), (x0, CAPTION))
        draw.text((x0, 10), caption, fill="black")
    canvas.save(path, format="PNG")


def comparison_figure(original: torch.Tensor, adversarial: torch.Tensor, before: tuple[str, float],
                      after: tuple[str, float], path: Path, scale: int = 2) -> None:
    """Original | adversarial | amplified difference, with predictions and confidences above."""
    diff = (adversarial - original).cpu()
    peak = float(diff.abs().max())
    amp = 0.5 / peak if peak > 0 else 1.0
    shown = (0.5 + diff * amp).clamp(0, 1)
    captions = [f"original: {before[0]} {before[1]:.1%}", f"adversarial: {after[0]} {after[1]:.1%}",
                f"difference x{amp:.0f} (max {peak * 255:.1f}/255)"]
    _row_figure([to_image(original), to_image(adversarial), to_image(shown)], captions, path, scale)


def gallery_figure(images: torch.Tensor, labels: list[str], path: Path, scale: int = 2) -> None:
    """A row of images, each with its caption (evolved fooling images, triggered tiles)."""
    _row_figure([to_image(im) for im in images], labels, path, scale)
