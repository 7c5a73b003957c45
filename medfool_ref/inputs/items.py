"""A data item: one tile file (or one tile of a whole slide), named by a hash of its bytes, with its label when known.

A slide's tile has ``region`` = (x, y, w, h, level, side): the box in level-0 pixels, the pyramid level
it is read from, and the side in pixels it is resized to; ``path`` is the slide, and ``id`` a hash of
the slide's sha256 and the region, so results are keyed by content there too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Item:
    """One tile: ``id`` is the sha256 of the file's bytes; ``label`` a class index (None: unknown)."""

    id: str
    path: str
    name: str
    label: int | None = None
    region: tuple[int, ...] | None = None  # a whole slide's tile: (x, y, w, h) in level-0 pixels, read level, output side

    @property
    def index(self) -> int:  # what the training code reads as a tile's class
        if self.label is None:
            raise ValueError(f"{self.name}: no label")
        return self.label


def file_item(path: str | Path, *, label: int | None = None, name: str | None = None) -> Item:
    p = Path(path)
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    return Item(digest, str(p), name or p.name, label)
