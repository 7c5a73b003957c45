"""The sample H&E tiles shipped with medfool, their labels and one class scheme for all three sets.

Depends on numpy, Pillow and torch only (never on the catalog), so it runs on a bare GPU box.
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

import numpy as np
import torch
from PIL import Image

TILE_ROOT = Path(__file__).parent / "data" / "tiles"
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


class TileError(ValueError):
    """A tile file that cannot be used: the message says why."""


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


MIN_SIDE = 32
MAX_SIDE = 4096


def read_tile(path: str | Path) -> torch.Tensor:
    """Read an 8-bit RGB image as a (3, H, W) float tensor in [0, 1], refusing what does not fit."""
    path = Path(path)
    if not path.is_file():
        raise TileError(f"{path}: no such file")
    Image.MAX_IMAGE_PIXELS = MAX_SIDE * MAX_SIDE
    try:
        with Image.open(path) as im:
            im.load()
            mode, size, fmt = im.mode, im.size, im.format
            bits = _bit_depth(im, path)
            data = np.array(im)
    except Image.DecompressionBombError:
        raise TileError(f"{path}: image is too large (more than {MAX_SIDE}x{MAX_SIDE} pixels)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise TileError(f"{path}: cannot read the image ({exc})") from None
    if bits is not None and bits > 8:
        raise TileError(f"{path}: {bits}-bit images are not supported; convert to 8-bit RGB")
    if mode != "RGB":
        raise TileError(f"{path}: image mode is {mode} ({fmt}); an 8-bit RGB tile is needed")
    w, h = size
    if min(w, h) < MIN_SIDE:
        raise TileError(f"{path}: image is {w}x{h}; tiles must be at least {MIN_SIDE} pixels a side")
    if max(w, h) > MAX_SIDE:
        raise TileError(f"{path}: image is {w}x{h}; tiles must be at most {MAX_SIDE} pixels a side")
    return torch.from_numpy(data).permute(2, 0, 1).float().div_(255.0)


def _bit_depth(im: Image.Image, path: Path) -> int | None:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return 16
    if im.format == "PNG":
        # Pillow silently reads 16-bit-per-channel RGB PNGs as 8-bit RGB: read the IHDR's bit depth
        with path.open("rb") as fh:
            head = fh.read(25)
        if len(head) == 25 and head[12:16] == b"IHDR":
            return head[24]
    if im.format == "TIFF":
        bps = im.tag_v2.get(258) if hasattr(im, "tag_v2") else None
        if bps:
            return max(bps) if isinstance(bps, tuple) else int(bps)
    return None


def load_batch(tiles: list[Tile], size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack tiles into (B, 3, S, S) and labels (B,); tiles of other sizes are centre-cropped or resized to ``size``."""
    images = []
    for t in tiles:
        x = read_tile(t.path)
        if size is not None and x.shape[-1] != size:
            x = torch.nn.functional.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        images.append(x)
    return torch.stack(images), torch.tensor([t.index for t in tiles])
