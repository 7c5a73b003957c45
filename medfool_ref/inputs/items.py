"""A data item: one tile file, named by the sha256 of its bytes, with its label when known."""

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

    @property
    def index(self) -> int:  # what the training code reads as a tile's class
        if self.label is None:
            raise ValueError(f"{self.name}: no label")
        return self.label


def file_item(path: str | Path, *, label: int | None = None, name: str | None = None) -> Item:
    p = Path(path)
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    return Item(digest, str(p), name or p.name, label)
