"""Labelled mosaic slides: the shipped labelled tiles composed on a grid into a pyramidal tiled TIFF, with the
per-cell ground truth written beside it. A mosaic is a composition of real tiles for testing the slide pipeline,
not a real whole-slide image: every page and report that uses one says so.

Cells are 224 px at 0.5 um/px (level 0). The layout language (``medfool slide mosaic``):

- ``--layout RxC``: R rows and C columns of cells (default 8x8).
- ``--tumour ROWS,COLS`` (repeatable): cells holding tumour tiles. ROWS and COLS are 0-based, half-open ranges
  ``a:b`` (``a`` alone is one row or column, ``:`` is all of them). Without it the slide has no tumour.
- ``--glass ROWS,COLS`` (repeatable), ``border`` (the outer ring, the default) or ``none``: cells left as glass
  (a near-white synthetic background that tissue detection must exclude). Glass wins over tumour.

Every other cell is a non-tumour tissue tile (ADI, DEB, LYM, MUC, MUS, NORM, STR), drawn with ``--seed``.
``--layout 8x8 --tumour 2:4,3:5`` puts tumour in rows 2-3, columns 3-4. Sources: ``native`` (default) takes the
224 px tiles at 0.5 um/px unchanged; ``all`` adds the Kather 2016 tiles (150 px at 0.495 um/px) resized to 224 px,
i.e. magnified 1.49x beyond 0.5 um/px (the truth file says which cells were resized).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .samples import CLASSES, Tile, sample_tiles, split

CELL = 224
MPP = 0.5
STATEMENT = ("A mosaic of real labelled H&E tiles (medfool's shipped sample tiles: Kather et al. 2016, doi:10.5281/zenodo.53169, "
             "and Kather, Halama & Marx 2018, doi:10.5281/zenodo.1214456, CC BY 4.0) composed on a grid by medfool to test "
             "the slide pipeline; glass cells are synthetic. Not a real whole-slide image.")
TISSUE_CLASSES = tuple(c for c in CLASSES if c not in ("TUM", "BACK"))
GLASS = "glass"
Box = tuple[int, int, int, int]  # rows r0:r1, cols c0:c1 (half-open)


class MosaicError(ValueError):
    """A layout or option that cannot make a mosaic: the message says why."""


@dataclass(frozen=True)
class Layout:
    rows: int
    cols: int
    tumour: tuple[Box, ...] = ()
    glass: tuple[Box, ...] = ()

    def labels(self) -> np.ndarray:
        """(rows, cols) of 'TUM', 'glass' or '' (a non-tumour tissue cell)."""
        grid = np.full((self.rows, self.cols), "", dtype=object)
        for r0, r1, c0, c1 in self.tumour:
            grid[r0:r1, c0:c1] = "TUM"
        for r0, r1, c0, c1 in self.glass:
            grid[r0:r1, c0:c1] = GLASS
        return grid

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "cols": self.cols, "tumour": [list(b) for b in self.tumour], "glass": [list(b) for b in self.glass]}


def _range(text: str, n: int, what: str) -> tuple[int, int]:
    text = text.strip()
    if text == ":":
        return 0, n
    m = re.fullmatch(r"(\d*):(\d*)|(\d+)", text)
    if m is None:
        raise MosaicError(f"{what} {text!r}: expected a:b (half-open, 0-based), a single index or ':'")
    a, b = (int(m[3]), int(m[3]) + 1) if m[3] else (int(m[1] or 0), int(m[2]) if m[2] else n)
    if not 0 <= a < b <= n:
        raise MosaicError(f"{what} {text!r}: must lie within 0:{n} and not be empty")
    return a, b


def parse_box(text: str, rows: int, cols: int, what: str) -> Box:
    parts = text.split(",")
    if len(parts) != 2:
        raise MosaicError(f"{what} {text!r}: expected ROWS,COLS such as 2:4,3:5")
    return (*_range(parts[0], rows, f"{what} rows"), *_range(parts[1], cols, f"{what} columns"))  # type: ignore[return-value]


def parse_layout(layout: str = "8x8", *, tumour: Sequence[str] = (), glass: Sequence[str] = ("border",)) -> Layout:
    """A :class:`Layout` from the command line's words (see the module's docstring); every mistake refused."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", layout or "")
    if m is None:
        raise MosaicError(f"--layout {layout!r}: expected RxC such as 8x8")
    rows, cols = int(m[1]), int(m[2])
    if not (1 <= rows <= 2000 and 1 <= cols <= 2000):
        raise MosaicError(f"--layout {layout}: rows and columns must be 1-2000")
    boxes: list[Box] = []
    for g in glass:
        if g.strip() == "none":
            continue
        if g.strip() == "border":
            boxes += [(0, 1, 0, cols), (rows - 1, rows, 0, cols), (0, rows, 0, 1), (0, rows, cols - 1, cols)]
        else:
            boxes.append(parse_box(g, rows, cols, "--glass"))
    return Layout(rows, cols, tuple(parse_box(t, rows, cols, "--tumour") for t in tumour), tuple(boxes))


# --------------------------------------------------------------------------- source tiles


@dataclass(frozen=True)
class Source:
    tile: Tile
    resized_from: int | None  # the tile's original side when it was resized to CELL


def sources(kind: str = "native", which: str = "all") -> list[Source]:
    """The shipped tiles a mosaic may use: ``native`` (224 px at 0.5 um/px) or ``all``; ``which`` picks the training split,
    the held-out split or all of them."""
    if kind not in ("native", "all"):
        raise MosaicError(f"--sources {kind!r}: expected native or all")
    tiles = sample_tiles()
    if which in ("train", "held-out"):
        tiles = split(tiles)[0 if which == "train" else 1]
    elif which != "all":
        raise MosaicError(f"--split {which!r}: expected all, train or held-out")
    out = []
    for t in tiles:
        if t.label == "BACK":
            continue
        with Image.open(t.path) as im:
            side = im.size[0]
        if side == CELL or kind == "all":
            out.append(Source(t, None if side == CELL else side))
    return out


def cell_image(src: Source) -> np.ndarray:
    with Image.open(src.tile.path) as im:
        im = im.convert("RGB")
        if im.size != (CELL, CELL):
            im = im.resize((CELL, CELL), Image.Resampling.LANCZOS)
        return np.asarray(im, dtype=np.uint8).copy()


def glass_image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 7919)
    return np.clip(243 + rng.integers(-3, 4, (CELL, CELL, 3)), 0, 255).astype(np.uint8)


def assign(layout: Layout, pool: Sequence[Source], *, seed: int) -> np.ndarray:
    """(rows, cols) indices into ``pool`` (-1: glass): tumour cells cycle through the tumour tiles in a seeded order,
    tissue cells draw a class then a tile of it."""
    rng = np.random.default_rng(seed)
    labels = layout.labels()
    tum = [i for i, s in enumerate(pool) if s.tile.label == "TUM"]
    by_class = {c: [i for i, s in enumerate(pool) if s.tile.label == c] for c in TISSUE_CLASSES}
    by_class = {c: v for c, v in by_class.items() if v}
    if (labels == "TUM").any() and not tum:
        raise MosaicError("the chosen tiles hold no tumour tile")
    if (labels == "").any() and not by_class:
        raise MosaicError("the chosen tiles hold no non-tumour tissue tile")
    order = rng.permutation(tum) if tum else np.array([], int)
    classes = sorted(by_class)
    idx = np.full(labels.shape, -1, np.int64)
    n_tum = 0
    for r in range(layout.rows):
        for c in range(layout.cols):
            if labels[r, c] == "TUM":
                idx[r, c] = order[n_tum % len(order)]
                n_tum += 1
            elif labels[r, c] == "":
                members = by_class[classes[int(rng.integers(len(classes)))]]
                idx[r, c] = members[int(rng.integers(len(members)))]
    return idx


# --------------------------------------------------------------------------- composing


class Mosaic:
    """The mosaic's pixels at any pyramid level (level k: level 0 halved k times), composed from the cells."""

    def __init__(self, layout: Layout, pool: Sequence[Source], *, seed: int) -> None:
        self.layout, self.pool, self.seed = layout, list(pool), seed
        self.index = assign(layout, pool, seed=seed)
        used = sorted({int(i) for i in self.index.ravel() if i >= 0})
        self.slot = np.zeros(len(self.pool) + 1, np.int64)  # pool index (+1, 0 = glass) -> row of the image stack
        self.slot[[u + 1 for u in used]] = np.arange(1, len(used) + 1)
        images = [glass_image(seed)] + [cell_image(self.pool[u]) for u in used] + [np.full((CELL, CELL, 3), 255, np.uint8)]
        self.stack = {0: np.stack(images)}
        self.grid = self.slot[self.index + 1]  # (rows, cols) -> stack row
        self.width, self.height = layout.cols * CELL, layout.rows * CELL

    def _stack(self, k: int) -> np.ndarray:
        if k not in self.stack:
            f = 2**k
            s = self.stack[0].reshape(-1, CELL // f, f, CELL // f, f, 3).astype(np.uint32).sum((2, 4))
            self.stack[k] = ((s + f * f // 2) // (f * f)).astype(np.uint8)
        return self.stack[k]

    def _direct(self, k: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        side = CELL >> k
        ys, xs = np.arange(y, y + h), np.arange(x, x + w)
        r, c = ys // side, xs // side
        outside = (r[:, None] >= self.layout.rows) | (c[None, :] >= self.layout.cols)
        rows = self.grid[np.minimum(r, self.layout.rows - 1)[:, None], np.minimum(c, self.layout.cols - 1)[None, :]]
        rows = np.where(outside, len(self._stack(0)) - 1, rows)
        return self._stack(k)[rows, (ys % side)[:, None], (xs % side)[None, :]]

    def region(self, k: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """(h, w, 3) uint8 of level k (box-filter averages of level 0), white outside the grid."""
        base = max(j for j in range(k + 1) if CELL % 2**j == 0)
        if base == k:
            return self._direct(k, x, y, w, h)
        f = 2 ** (k - base)
        a = self._direct(base, x * f, y * f, w * f, h * f).reshape(h, f, w, f, 3).astype(np.uint32).sum((1, 3))
        return ((a + f * f // 2) // (f * f)).astype(np.uint8)

    def cells(self) -> list[dict[str, Any]]:
        out = []
        for r in range(self.layout.rows):
            for c in range(self.layout.cols):
                i = int(self.index[r, c])
                src = self.pool[i] if i >= 0 else None
                out.append({"row": r, "col": c, "x": c * CELL, "y": r * CELL, "w": CELL, "h": CELL,
                            "label": src.tile.label if src else GLASS, "tissue": src is not None,
                            "tile": src.tile.name if src else None, "resized_from_px": src.resized_from if src else None})
        return out


def truth_paths(slide: str | Path) -> tuple[Path, Path]:
    p = Path(slide)
    return p.with_suffix(".truth.json"), p.with_suffix(".truth.csv")


def write_mosaic(path: str | Path, layout: Layout, *, seed: int = 0, kind: str = "native", which: str = "all") -> dict[str, Any]:
    """Write the mosaic as a pyramidal tiled TIFF (zlib, 0.5 um/px in its resolution tags) and its ground truth beside it
    (``<name>.truth.json`` and ``.truth.csv``, level-0 coordinates); returns the truth."""
    from .slides import write_pyramid

    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise MosaicError(f"--out {path}: a mosaic is written as a pyramidal TIFF; name it .tif or .tiff")
    if not path.parent.is_dir():
        raise MosaicError(f"--out {path}: folder {path.parent} does not exist")
    m = Mosaic(layout, sources(kind, which), seed=seed)
    levels = write_pyramid(path, width=m.width, height=m.height, mpp=MPP, read_level=m.region,
                           description="medfool mosaic: " + STATEMENT)
    cells = m.cells()
    truth = {"format": "medfool-mosaic-1", "statement": STATEMENT, "slide": path.name, "layout": layout.as_dict(), "seed": seed,
             "sources": kind, "split": which, "mpp": MPP, "cell_px": CELL, "dimensions": [m.width, m.height],
             "levels": [list(d) for d in levels], "contains_tumour": any(c["label"] == "TUM" for c in cells),
             "counts": {lab: sum(c["label"] == lab for c in cells) for lab in sorted({c["label"] for c in cells})}, "cells": cells}
    jpath, cpath = truth_paths(path)
    jpath.write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    with cpath.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(cells[0]))
        w.writeheader()
        w.writerows(cells)
    return truth


def read_truth(slide: str | Path) -> dict[str, Any] | None:
    """The ground truth written beside a mosaic, or None."""
    jpath = truth_paths(slide)[0]
    if not jpath.is_file():
        return None
    try:
        doc = json.loads(jpath.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == "medfool-mosaic-1" else None
