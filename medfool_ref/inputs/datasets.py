"""A user's labelled tiles: ``--data DIR`` (one folder per class) or ``--data labels.csv`` (``path,label``).

Every file is checked as a tile (decoded once, nothing kept in memory); one that is not a readable
8-bit RGB tile is skipped and listed with the reason, so nothing is dropped silently. A folder or
label that is not one of the model's classes is an error (all of them reported at once), as is a
data set without a usable tile. Items carry the sha256 of their bytes, so results are keyed by
content.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

from .items import Item
from .tiles import TileError, read_tile


class DataError(ValueError):
    """Data that cannot be audited as given: every problem, one per line."""


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class Dataset:
    items: list[Item]
    skipped: list[Skipped] = field(default_factory=list)
    source: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    split: dict[str, str] = field(default_factory=dict)  # item id -> "held-out" or "training" (the sample tiles only)


def _candidates_from_folder(root: Path, classes: tuple[str, ...]) -> list[tuple[Path, str]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    unknown = [p.name for p in folders if p.name not in classes]
    if unknown:
        raise DataError(f"{root}: folder(s) {', '.join(unknown)} are not classes of the model ({', '.join(classes)})")
    if not folders:
        raise DataError(f"{root}: no class folders (expected one folder per class: {', '.join(classes)})")
    return [(f, d.name) for d in folders for f in sorted(d.rglob("*")) if f.is_file()]


def _candidates_from_csv(path: Path, classes: tuple[str, ...]) -> list[tuple[Path, str]]:
    problems, out = [], []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
            raise DataError(f"{path}:1: the header must name the columns path and label (got {reader.fieldnames})")
        for row in reader:
            line = reader.line_num
            file, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
            if not file:
                problems.append(f"{path}:{line}: path: empty")
            elif label not in classes:
                problems.append(f"{path}:{line}: label: {label!r} is not one of {', '.join(classes)}")
            else:
                p = Path(file)
                out.append((p if p.is_absolute() else path.parent / p, label))
    if problems:
        raise DataError("\n".join(problems))
    return out


def load_dataset(source: str | Path, classes: tuple[str, ...], *, max_tiles: int | None = None) -> Dataset:
    """Check every candidate tile; keep the usable ones (all, or the first ``max_tiles`` taken class by class in turn)."""
    if str(source) == "sample":
        return _sample_dataset(classes, max_tiles)
    source = Path(source)
    if source.is_dir():
        candidates = _candidates_from_folder(source, classes)
    elif source.is_file() and source.suffix.lower() == ".csv":
        candidates = _candidates_from_csv(source, classes)
    elif source.exists():
        raise DataError(f"--data {source}: expected a folder of class folders or a .csv file (path,label)")
    else:
        raise DataError(f"--data {source}: no such file or folder")
    if max_tiles is not None:
        by_class: dict[str, list[tuple[Path, str]]] = {}
        for c in candidates:
            by_class.setdefault(c[1], []).append(c)
        candidates = [c for row in zip_longest(*by_class.values()) for c in row if c is not None]
    data = Dataset([], source=str(source))
    for path, label in candidates:
        if max_tiles is not None and len(data.items) >= max_tiles:
            break
        try:
            read_tile(path, data.notes)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except TileError as exc:
            data.skipped.append(Skipped(str(path), str(exc).removeprefix(f"{path}: ")))
            continue
        except OSError as exc:
            data.skipped.append(Skipped(str(path), exc.strerror or str(exc)))
            continue
        name = str(path.relative_to(source)) if source.is_dir() else str(path)
        data.items.append(Item(digest, str(path), name, classes.index(label)))
        data.counts[label] = data.counts.get(label, 0) + 1
    if not data.items:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in data.skipped[:3])
        raise DataError(f"--data {source}: no usable tile" + (f" ({len(data.skipped)} skipped: {reasons} ...)" if data.skipped else ""))
    return data


def _sample_dataset(classes: tuple[str, ...], max_tiles: int | None) -> Dataset:
    """``--data sample``: the shipped sample tiles, labelled in the reference model's class scheme."""
    from .samples import sample_tiles, split

    tiles = sample_tiles()
    held = {t.path for t in split(tiles)[1]}  # the reference model never saw these in training
    unknown = sorted({t.label for t in tiles} - set(classes))
    if unknown:
        raise DataError(f"--data sample: the sample tiles' classes {', '.join(unknown)} are not classes of the model")
    if max_tiles is not None:
        by_class: dict[str, list] = {}
        for t in tiles:
            by_class.setdefault(t.label, []).append(t)
        tiles = [t for row in zip_longest(*by_class.values()) for t in row if t is not None][:max_tiles]
    data = Dataset([], source="sample")
    for t in tiles:
        data.items.append(Item(hashlib.sha256(t.path.read_bytes()).hexdigest(), str(t.path), t.name, classes.index(t.label)))
        data.split[data.items[-1].id] = "held-out" if t.path in held else "training"
        data.counts[t.label] = data.counts.get(t.label, 0) + 1
    return data
