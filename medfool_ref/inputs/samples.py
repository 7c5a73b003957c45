"""The sample H&E tiles shipped with medfool, their labels and one class scheme for all three sets.

Depends on the standard library only (never on the catalog), so it runs on a bare GPU box.
Every file's sha256 is checked against the set's PROVENANCE.md when it is read.

Class mapping (Kather 2016 texture classes -> the NCT-CRC-HE-100K scheme used by the model):
TUMOR->TUM, STROMA->STR, COMPLEX->STR (complex stroma), LYMPHO->LYM, DEBRIS->DEB,
MUCOSA->NORM (normal mucosal glands), ADIPOSE->ADI, EMPTY->BACK. The NCT sets already use
ADI, BACK, DEB, LYM, MUC, MUS, NORM, STR, TUM; CRC-VAL-HE-7K has no BACK tiles.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from .tiles import TileError

TILE_ROOT = Path(__file__).resolve().parents[1] / "data" / "tiles"
SETS = ("kather2016-crc-texture-sample", "crc-val-he-7k-sample", "nct-crc-he-100k-sample")
CLASSES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
CLASS_NAMES = {
    "ADI": "adipose tissue", "BACK": "background", "DEB": "debris/necrosis", "LYM": "lymphocytes",
    "MUC": "mucus", "MUS": "smooth muscle", "NORM": "normal mucosa", "STR": "stroma", "TUM": "tumour epithelium",
}
TUMOUR = CLASSES.index("TUM")
KATHER2016_MAP = {
    "01_TUMOR": "TUM", "02_STROMA": "STR", "03_COMPLEX": "STR", "04_LYMPHO": "LYM",
    "05_DEBRIS": "DEB", "06_MUCOSA": "NORM", "07_ADIPOSE": "ADI", "08_EMPTY": "BACK",
}


@dataclass(frozen=True)
class Tile:
    dataset: str
    path: Path
    original_label: str
    label: str

    @property
    def index(self) -> int:
        return CLASSES.index(self.label)

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.path.relative_to(TILE_ROOT / self.dataset).as_posix()}"


def _checksums(folder: Path) -> dict[str, str]:
    text = (folder / "PROVENANCE.md").read_text(encoding="utf-8")
    return {m.group(2): m.group(1) for m in re.finditer(r"^([0-9a-f]{64})\s+(\S.*?)\s*$", text, re.M)}


def sample_tiles(verify: bool = True) -> list[Tile]:
    """All 65 shipped tiles in a fixed order, with labels in the common scheme."""
    tiles: list[Tile] = []
    for name in SETS:
        folder = TILE_ROOT / name
        sums = _checksums(folder) if verify else {}
        with (folder / "labels.csv").open(encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                path = folder / row["file"]
                if verify:
                    want = sums.get(row["file"])
                    got = hashlib.sha256(path.read_bytes()).hexdigest()
                    if want != got:
                        raise TileError(f"{path}: sha256 {got} does not match PROVENANCE.md ({want})")
                label = KATHER2016_MAP.get(row["label"], row["label"])
                if label not in CLASSES:
                    raise TileError(f"{path}: unknown label {row['label']!r}")
                tiles.append(Tile(name, path, row["label"], label))
    return tiles


def split(tiles: list[Tile]) -> tuple[list[Tile], list[Tile]]:
    """Deterministic split by tile: within each class, every fourth tile (in set/file order) is held out."""
    train: list[Tile] = []
    held: list[Tile] = []
    for cls in CLASSES:
        members = [t for t in tiles if t.label == cls]
        for i, t in enumerate(members):
            (held if i % 4 == 3 else train).append(t)
    return train, held


def sample_tile(label: str) -> Path:
    """The first shipped tile of a class (e.g. ``"TUM"``), in set/file order."""
    wanted = label.upper()
    if wanted not in CLASSES:
        raise TileError(f"sample:{label}: unknown class; the sample tiles' classes are {', '.join(CLASSES)}")
    for t in sample_tiles(verify=False):
        if t.label == wanted:
            return t.path
    raise TileError(f"sample:{label}: no shipped tile of that class")
