"""Whole-slide images through OpenSlide: opening with one-line refusals, bounded reads at the best pyramid
level, tissue detection, the tile grid at the model's resolution, and pyramidal TIFFs written tile by tile.

Formats are OpenSlide's (Aperio SVS, generic tiled TIFF, Hamamatsu, Leica, MIRAX, Philips, Sakura, Trestle,
Ventana, Zeiss, DICOM). Tissue is found with Otsu's threshold (Otsu 1979) on the HSV saturation (or the
optical density) of a low-resolution read. Memory stays flat in the slide's size: every read is at most
``CHUNK`` pixels a side at the level read, the tissue map at most ``MASK_SIDE``, and TIFFs are streamed. A slide whose
tissue map would decode more than ``PIXEL_BUDGET`` pixels (no coarse pyramid level) or whose grid would exceed
``MAX_TILES`` is refused before any read. A DICOM WSI is opened as its folder (or any one of its .dcm files).
Depends on numpy, Pillow, torch, openslide-python (+ openslide-bin) and tifffile.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from .items import Item

CHUNK = 2048  # the largest read, in pixels a side at the level read
MASK_SIDE = 2048  # the tissue map's largest side
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".czi", ".dcm"}
FORMATS = ("Aperio SVS, generic tiled TIFF, Hamamatsu, Leica SCN, MIRAX, Philips TIFF, Sakura, Trestle, Ventana, Zeiss CZI, "
           "DICOM WSI (a folder of .dcm files, or one of them)")
CLAMP = {"saturation": (0.04, 0.10), "od": (0.03, 0.10)}  # Otsu kept in this band: tissue saturation is broad
READERS = min(8, os.cpu_count() or 2)
CACHE_BYTES = 16 << 20  # decoded slide tiles kept for neighbouring reads, shared by all handles
PIXEL_BUDGET = 2**30  # level pixels the tissue mask may decode (a 32,768 px square); more is refused before any read
MAX_TILES = 2**20  # positions the tile grid may hold (1,048,576: a 229,000 px square at 224 px, 0.5 um/px, no overlap)


class SlideError(ValueError):
    """A slide (or a region of one) that cannot be used: the message says why, in one line."""


def dicom_member(folder: Path) -> Path:
    """The file OpenSlide opens for a DICOM WSI given as its folder: the first .dcm file (in name order) it recognises as
    DICOM; OpenSlide then finds the other levels of the same series in the folder."""
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() == ".dcm")
    if not files:
        raise SlideError(f"{folder}: is a folder without .dcm files; give a slide file, or a DICOM WSI as the folder of its .dcm files")
    osl = _openslide()
    for f in files:
        if osl.OpenSlide.detect_format(str(f)) == "dicom":
            return f
    raise SlideError(f"{folder}: none of its {len(files)} .dcm file(s) is a DICOM whole-slide image OpenSlide reads "
                     f"(VL Whole Slide Microscopy Image Storage, SOP class {WSI_SOP_CLASS})")


def slide_sha256(path: str | Path) -> str:
    """The slide's sha256: the file's; for a DICOM WSI (its folder, or one of its files: OpenSlide reads the other levels
    from the files beside it) the hash of the folder's .dcm files' names and hashes."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".dcm":
        path = path.parent
    if not path.is_dir():
        return file_sha256(path)
    h = hashlib.sha256()
    for f in sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() == ".dcm"):
        h.update(f"{f.name}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def _openslide() -> Any:
    try:
        import openslide
    except ImportError:  # pragma: no cover - a dependency
        raise SlideError("reading whole slides needs openslide-python and openslide-bin (pip install openslide-bin openslide-python)") from None
    return openslide


_CACHE: Any = None


def _cache() -> Any:
    """One tile cache of CACHE_BYTES shared by every open slide (OpenSlide's default is one per handle)."""
    global _CACHE
    if _CACHE is None:
        _CACHE = _openslide().OpenSlideCache(CACHE_BYTES)
    return _CACHE


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class Slide:
    """An open slide: OpenSlide's handle with its geometry, read as 8-bit RGB (transparent areas on white)."""

    def __init__(self, path: str | Path) -> None:
        osl = _openslide()
        self.path = Path(path)
        self.file = dicom_member(self.path) if self.path.is_dir() else self.path  # the file OpenSlide opens
        if not self.file.is_file():
            raise SlideError(f"{path}: no such file")
        with self.file.open("rb") as fh:
            head = fh.read(132)
        try:
            self.osr = osl.OpenSlide(str(self.file))
        except osl.OpenSlideUnsupportedFormatError:
            if head[128:132] == b"DICM":
                raise SlideError(f"{self.file}: a DICOM file, but not a whole-slide image OpenSlide reads (it reads VL Whole Slide "
                                 f"Microscopy Image Storage, SOP class {WSI_SOP_CLASS}, tiled, uncompressed, JPEG or JPEG 2000)") from None
            if head[:4] in TIFF_MAGIC:
                raise SlideError(f"{path}: corrupt or truncated slide: it starts as a TIFF, but OpenSlide cannot read its directories") from None
            if self.path.suffix.lower() in SLIDE_SUFFIXES:
                raise SlideError(f"{path}: corrupt or truncated slide: named {self.path.suffix}, but OpenSlide cannot read it") from None
            raise SlideError(f"{path}: unsupported format; OpenSlide reads {FORMATS}") from None
        except osl.OpenSlideError as exc:
            raise SlideError(f"{path}: corrupt or truncated slide ({exc})") from None
        self.osr.set_cache(_cache())
        self.dimensions: tuple[int, int] = tuple(self.osr.dimensions)
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(tuple(d) for d in self.osr.level_dimensions)
        self.level_downsamples: tuple[float, ...] = tuple(float(d) for d in self.osr.level_downsamples)
        self.properties: dict[str, str] = dict(self.osr.properties)

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.osr.close()

    # ------------------------------------------------------------------ facts

    @property
    def mpp(self) -> float | None:
        """Microns per level-0 pixel (the mean of x and y), or None when the slide does not say."""
        vals = [float(v) for v in (self.properties.get("openslide.mpp-x"), self.properties.get("openslide.mpp-y")) if v]
        vals = [v for v in vals if math.isfinite(v) and v > 0]
        return sum(vals) / len(vals) if vals else None

    def info(self) -> dict[str, Any]:
        p = self.properties
        power = p.get("openslide.objective-power")
        return {"path": str(self.path), "vendor": p.get("openslide.vendor"), "dimensions": list(self.dimensions),
                "levels": [{"level": i, "dimensions": list(d), "downsample": round(ds, 4)}
                           for i, (d, ds) in enumerate(zip(self.level_dimensions, self.level_downsamples))],
                "mpp": self.mpp, "mpp_x": _float(p.get("openslide.mpp-x")), "mpp_y": _float(p.get("openslide.mpp-y")),
                "objective_power": _float(power), "associated_images": sorted(self.osr.associated_images)}

    def resolve_mpp(self, override: float | None) -> float:
        """The level-0 microns per pixel: ``override`` when given, else the slide's own; refused when neither."""
        if override is not None:
            if not (math.isfinite(override) and 0 < override <= 100):
                raise SlideError(f"--mpp {override}: must be a number of microns per pixel in (0, 100]")
            return float(override)
        if self.mpp is None:
            raise SlideError(f"{self.path}: the slide does not say its microns per pixel (no openslide.mpp-x); "
                             "give --mpp (e.g. --mpp 0.25 for a 40x scan, 0.5 for 20x)")
        return self.mpp

    def best_level(self, downsample: float) -> int:
        """The coarsest level not coarser than ``downsample`` (its mpp closest below or equal to the one needed)."""
        fits = [i for i, d in enumerate(self.level_downsamples) if d <= downsample * (1 + 1e-3)]
        return max(fits, key=lambda i: self.level_downsamples[i]) if fits else 0

    def check_region(self, x: float, y: float, w: float, h: float) -> None:
        W, H = self.dimensions
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > W or y + h > H:
            raise SlideError(f"{self.path}: region x={x:g} y={y:g} w={w:g} h={h:g} is outside the slide ({W} x {H} px at level 0)")

    # ------------------------------------------------------------------ reading

    def read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        """OpenSlide's ``read_region`` (location in level-0 pixels, size at ``level``) as (h, w, 3) uint8 on white."""
        try:
            rgba = np.asarray(self.osr.read_region((int(x), int(y)), int(level), (int(w), int(h))))
        except _openslide().OpenSlideError as exc:
            raise SlideError(f"{self.path}: corrupt or truncated slide: cannot read {w}x{h} px at ({x}, {y}) level {level} "
                             f"({str(exc).splitlines()[0]})") from None
        return flatten(rgba)

    def read_box(self, x: float, y: float, w: float, h: float, out_w: int, out_h: int, *, level: int | None = None,
                 resample: Image.Resampling = Image.Resampling.LANCZOS) -> np.ndarray:
        """The level-0 box (x, y, w, h) as (out_h, out_w, 3) uint8, read at ``level`` (default: the best level for the
        scale) and resized with an antialiasing filter; exact pixels when no resize is needed. Large boxes are read in
        chunks of at most CHUNK pixels a side, each with a margin, so there are no seams."""
        level = self.best_level(w / out_w) if level is None else level
        ds = self.level_downsamples[level]
        LW, LH = self.level_dimensions[level]
        bx, by, bw, bh = x / ds, y / ds, w / ds, h / ds
        if _whole(bx) and _whole(by) and abs(bw - out_w) < 1e-6 and abs(bh - out_h) < 1e-6 and max(out_w, out_h) <= CHUNK:
            return self.read(round(x), round(y), level, out_w, out_h)
        sx, sy = bw / out_w, bh / out_h
        margin = math.ceil(3 * max(sx, sy, 1.0)) + 1
        step_x = max(1, int((CHUNK - 2 * margin) / sx))
        step_y = max(1, int((CHUNK - 2 * margin) / sy))
        out = np.empty((out_h, out_w, 3), np.uint8)
        for oy in range(0, out_h, step_y):
            for ox in range(0, out_w, step_x):
                ow, oh = min(step_x, out_w - ox), min(step_y, out_h - oy)
                fx0, fy0 = bx + ox * sx, by + oy * sy
                fx1, fy1 = fx0 + ow * sx, fy0 + oh * sy
                ix0, iy0 = max(0, math.floor(fx0) - margin), max(0, math.floor(fy0) - margin)
                ix1, iy1 = min(LW, math.ceil(fx1) + margin), min(LH, math.ceil(fy1) + margin)
                if ix1 <= ix0 or iy1 <= iy0:
                    out[oy:oy + oh, ox:ox + ow] = 255
                    continue
                patch = Image.fromarray(self.read(round(ix0 * ds), round(iy0 * ds), level, ix1 - ix0, iy1 - iy0))
                box = (_clip(fx0 - ix0, ix1 - ix0), _clip(fy0 - iy0, iy1 - iy0), _clip(fx1 - ix0, ix1 - ix0), _clip(fy1 - iy0, iy1 - iy0))
                out[oy:oy + oh, ox:ox + ow] = np.asarray(patch.resize((ow, oh), resample, box=box))
        return out


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _whole(v: float) -> bool:
    return abs(v - round(v)) < 1e-6


def _clip(v: float, hi: float) -> float:
    return min(max(v, 0.0), float(hi))


def flatten(rgba: np.ndarray) -> np.ndarray:
    """RGBA as OpenSlide gives it (not premultiplied; transparent where there is no data) flattened onto white."""
    if rgba.ndim == 3 and rgba.shape[2] == 3:
        return np.array(rgba, np.uint8)
    alpha = rgba[..., 3:4]
    if bool((alpha == 255).all()):
        return np.array(rgba[..., :3], np.uint8)
    a = alpha.astype(np.uint16)
    return ((rgba[..., :3].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


# --------------------------------------------------------------------------- the tile grid


@dataclass(frozen=True)
class Grid:
    """Tiles of ``side`` model pixels at ``target_mpp``: ``tile0`` level-0 pixels a side, ``stride0`` apart (the overlap
    is ``overlap`` model pixels), read at ``level`` (the best level for the scale) over the level-0 box ``roi``."""

    mpp0: float
    target_mpp: float
    side: int
    tile0: int
    stride0: int
    overlap: int
    level: int
    roi: tuple[int, int, int, int]
    cols: int
    rows: int

    @property
    def count(self) -> int:
        return self.cols * self.rows

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, 4) level-0 boxes (x, y, w, h) and (N, 2) (row, col), row-major."""
        r, c = np.meshgrid(np.arange(self.rows), np.arange(self.cols), indexing="ij")
        r, c = r.ravel(), c.ravel()
        x0, y0 = self.roi[0], self.roi[1]
        boxes = np.stack([x0 + c * self.stride0, y0 + r * self.stride0, np.full_like(r, self.tile0), np.full_like(r, self.tile0)], 1)
        return boxes.astype(np.int64), np.stack([r, c], 1).astype(np.int64)

    def as_dict(self) -> dict[str, Any]:
        return {"mpp0": self.mpp0, "target_mpp": self.target_mpp, "side": self.side, "tile_level0_px": self.tile0,
                "stride_level0_px": self.stride0, "overlap_px": self.overlap, "read_level": self.level, "roi": list(self.roi),
                "cols": self.cols, "rows": self.rows, "resized": self.tile0 != self.side or self.level != 0}


def tile_grid(slide: Slide, *, mpp0: float, target_mpp: float, side: int, overlap: int = 0,
              roi: tuple[int, int, int, int] | None = None, max_tiles: int = MAX_TILES) -> Grid:
    """The grid of model tiles over ``roi`` (default: the whole slide); tiles not wholly inside are left out. A grid of
    more than ``max_tiles`` positions is refused before it is laid (its arrays would grow with it)."""
    if side < 8:
        raise SlideError(f"tile side {side}: must be >= 8 pixels")
    if not 0 <= overlap < side:
        raise SlideError(f"--overlap {overlap}: must be >= 0 and smaller than the tile side ({side} px)")
    if not (math.isfinite(target_mpp) and target_mpp > 0):
        raise SlideError(f"the model's mpp {target_mpp}: must be > 0")
    scale = target_mpp / mpp0
    tile0 = max(1, round(side * scale))
    stride0 = max(1, tile0 - round(overlap * scale))
    W, H = slide.dimensions
    x, y, w, h = roi if roi is not None else (0, 0, W, H)
    slide.check_region(x, y, w, h)
    cols = (w - tile0) // stride0 + 1 if w >= tile0 else 0
    rows = (h - tile0) // stride0 + 1 if h >= tile0 else 0
    if not cols or not rows:
        raise SlideError(f"{slide.path}: the region ({w} x {h} px) is smaller than one tile ({tile0} px at level 0 "
                         f"= {side} px at {target_mpp:g} um/px)")
    if cols * rows > max_tiles:
        raise SlideError(f"{slide.path}: the tile grid would hold {cols * rows:,} tiles ({cols:,} x {rows:,} tiles of {tile0} px at "
                         f"level 0, {stride0} px apart, over {w:,} x {h:,} px), more than the budget of {max_tiles:,} (--max-tiles); "
                         "give a --roi, less --overlap, or raise --max-tiles")
    return Grid(mpp0, target_mpp, side, tile0, stride0, overlap, slide.best_level(scale), (x, y, w, h), cols, rows)


def tile_items(path: str | Path, sha256: str, boxes: np.ndarray, grid: Grid) -> list[Item]:
    """One :class:`Item` per box; its id hashes the slide's sha256 (computed once) and the region."""
    stem = Path(path).name
    out = []
    for x, y, w, h in boxes.tolist():
        region = (x, y, w, h, grid.level, grid.side)
        digest = hashlib.sha256(f"{sha256}|{','.join(map(str, region))}".encode()).hexdigest()
        out.append(Item(digest, str(path), f"{stem}@{x},{y}", None, region))
    return out


# --------------------------------------------------------------------------- tissue


@dataclass(frozen=True)
class Tissue:
    """A low-resolution read of the slide, its tissue score (saturation or optical density) and the mask above
    Otsu's threshold; ``scale`` is level-0 pixels per thumbnail pixel."""

    thumbnail: np.ndarray
    score: np.ndarray
    mask: np.ndarray
    threshold: float
    scale: float
    method: str

    def fractions(self, boxes: np.ndarray) -> np.ndarray:
        """The tissue fraction of each level-0 box, from a summed-area table (all boxes at once)."""
        sat = np.zeros((self.mask.shape[0] + 1, self.mask.shape[1] + 1), np.int64)
        sat[1:, 1:] = self.mask.astype(np.int64).cumsum(0).cumsum(1)
        b = boxes.astype(np.float64) / self.scale
        mh, mw = self.mask.shape
        x0 = np.clip(np.floor(b[:, 0] + 0.5), 0, mw - 1).astype(np.int64)
        y0 = np.clip(np.floor(b[:, 1] + 0.5), 0, mh - 1).astype(np.int64)
        x1 = np.clip(np.floor(b[:, 0] + b[:, 2] + 0.5), x0 + 1, mw).astype(np.int64)
        y1 = np.clip(np.floor(b[:, 1] + b[:, 3] + 0.5), y0 + 1, mh).astype(np.int64)
        inside = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
        return inside / ((x1 - x0) * (y1 - y0))


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's (1979) threshold of values in [0, 1]: the split that maximises the between-class variance."""
    hist = np.bincount(np.clip((values.ravel() * bins).astype(np.int64), 0, bins - 1), minlength=bins).astype(np.float64)
    p = hist / max(hist.sum(), 1.0)
    omega = p.cumsum()
    mu = (p * np.arange(bins)).cumsum()
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * omega - mu) ** 2 / (omega * (1 - omega))
    between[~np.isfinite(between)] = -1
    return (int(between.argmax()) + 1) / bins


def tissue_score(rgb: np.ndarray, method: str) -> np.ndarray:
    x = rgb.astype(np.float32)
    if method == "saturation":  # HSV saturation: glass is grey-white, stained tissue is coloured
        hi, lo = x.max(-1), x.min(-1)
        return np.where(hi > 0, (hi - lo) / np.maximum(hi, 1), 0).astype(np.float32)
    if method == "od":  # mean optical density -log10(I / I0) over the channels, scaled to [0, 1]
        return (-np.log10((x + 1) / 256).mean(-1) / math.log10(256)).astype(np.float32)
    raise SlideError(f"--tissue {method!r}: expected saturation or od")


def mask_read(slide: Slide, scale: float) -> tuple[int, int, int, int]:
    """(level, its width, its height, mask side) of the tissue mask's read at ``scale`` level-0 pixels per mask pixel."""
    W, H = slide.dimensions
    scale = max(scale, max(W, H) / MASK_SIDE, 1.0)
    mw, mh = max(1, round(W / scale)), max(1, round(H / scale))
    level = slide.best_level(W / mw)  # as read_box picks it
    LW, LH = slide.level_dimensions[level]
    return level, LW, LH, max(mw, mh)


def check_budget(slide: Slide, scale: float, budget: int = PIXEL_BUDGET) -> None:
    """Refuse, before any pixel is read, a tissue mask that would decode more than ``budget`` pixels: without a coarse
    enough pyramid level OpenSlide must decode every pixel of a fine level to give a downsampled read."""
    level, LW, LH, side = mask_read(slide, scale)
    if LW * LH > budget:
        ds = slide.level_downsamples
        raise SlideError(f"{slide.path}: the tissue mask ({side} px a side) would decode {LW * LH:,} px (all of level {level}, "
                         f"{LW:,} x {LH:,} px: the slide has {len(ds)} level(s), the coarsest {max(ds):g}x down), more than the "
                         f"pixel budget of {budget:,} (--pixel-budget); give a pyramidal copy of the slide (e.g. "
                         "vips tiffsave --tile --pyramid) or raise --pixel-budget")


def detect_tissue(slide: Slide, *, scale: float, method: str = "saturation", pixel_budget: int = PIXEL_BUDGET) -> Tissue:
    """Tissue on a read of the whole slide at ``scale`` level-0 pixels per pixel (at most MASK_SIDE a side, read at the
    best level in bounded chunks): the score above Otsu's threshold, the threshold kept within ``CLAMP`` (tissue's
    saturation is broad, so on a slide of mostly tissue Otsu alone would split pale tissue off; on one of glass only,
    it would split the glass). A read that would decode more than ``pixel_budget`` pixels is refused (:func:`check_budget`)."""
    check_budget(slide, scale, pixel_budget)
    W, H = slide.dimensions
    scale = max(scale, max(W, H) / MASK_SIDE, 1.0)
    mw, mh = max(1, round(W / scale)), max(1, round(H / scale))
    thumb = slide.read_box(0, 0, W, H, mw, mh, resample=Image.Resampling.BOX)
    score = tissue_score(thumb, method)
    lo, hi = CLAMP.get(method, (0.05, 0.2))
    threshold = min(max(otsu(score), lo), hi)
    return Tissue(thumb, score, score > threshold, threshold, W / mw, method)


# --------------------------------------------------------------------------- reading tiles for the campaign core

_POOL: ThreadPoolExecutor | None = None
_AHEAD: ThreadPoolExecutor | None = None
_PREFETCHED: dict[tuple[str, ...], Future] = {}
_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="medfool-slide-read")
        return _POOL


def _read_batch(items: Sequence[Item]) -> list[np.ndarray]:
    out: list[np.ndarray | None] = [None] * len(items)
    by_path: dict[str, list[int]] = {}
    for k, it in enumerate(items):
        if it.region is None or len(it.region) != 6:
            raise SlideError(f"{it.name}: not a slide region (x, y, w, h, level, side)")
        by_path.setdefault(it.path, []).append(k)
    for path, idx in by_path.items():
        with Slide(path) as slide:
            for k in idx:
                x, y, w, h, level, _ = items[k].region  # type: ignore[misc]
                slide.check_region(x, y, w, h)
                if not 0 <= level < len(slide.level_downsamples):
                    raise SlideError(f"{path}: level {level} does not exist (the slide has {len(slide.level_downsamples)})")

            def one(k: int) -> np.ndarray:
                x, y, w, h, level, side = items[k].region  # type: ignore[misc]
                return slide.read_box(x, y, w, h, side, side, level=level)

            for k, arr in zip(idx, _pool().map(one, idx)):
                out[k] = arr
    return out  # type: ignore[return-value]


def prefetch(items: Sequence[Item]) -> None:
    """Start reading ``items`` in the background; the next :func:`read_regions` of the same items takes the result.
    At most two batches are held."""
    global _AHEAD
    key = tuple(i.id for i in items)
    with _LOCK:
        if _AHEAD is None:
            _AHEAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medfool-slide-ahead")
        if key in _PREFETCHED:
            return
        while len(_PREFETCHED) >= 2:
            _PREFETCHED.pop(next(iter(_PREFETCHED))).cancel()
        _PREFETCHED[key] = _AHEAD.submit(_read_batch, list(items))


def read_regions(items: Sequence[Item]) -> list[torch.Tensor]:
    """Each item's region as a (3, side, side) tensor in [0, 1]: the slide opened once per call, the regions read in a
    pool of threads at their level and resized to ``side`` (antialiased); 8-bit RGB, transparency flattened on white."""
    with _LOCK:
        fut = _PREFETCHED.pop(tuple(i.id for i in items), None)
    arrays = fut.result() if fut is not None else _read_batch(items)
    # converted here, in the caller's thread: float batches allocated and freed in one thread keep the heap compact
    return [torch.from_numpy(np.true_divide(a.transpose(2, 0, 1), 255, dtype=np.float32)) for a in arrays]


def read_uint8(path: str | Path, boxes: np.ndarray, *, level: int, side: int) -> np.ndarray:
    """Regions as (N, side, side, 3) uint8 (for tests, figures and the write-back)."""
    with Slide(path) as slide:
        return np.stack([slide.read_box(x, y, w, h, side, side, level=level) for x, y, w, h in boxes.tolist()])


# --------------------------------------------------------------------------- writing


ReadLevel = Callable[[int, int, int, int, int], np.ndarray]  # (level, x, y, w, h) in that level's pixels -> (h, w, 3) uint8


def pyramid_dims(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    dims = [(width, height)]
    while max(dims[-1]) > tile:
        w, h = dims[-1]
        dims.append((max(1, w // 2), max(1, h // 2)))
    return dims


def _tiles(read_level: ReadLevel, k: int, w: int, h: int, tile: int) -> Iterator[np.ndarray]:
    def one(xy: tuple[int, int]) -> np.ndarray:
        x, y = xy
        tw, th = min(tile, w - x), min(tile, h - y)
        a = read_level(k, x, y, tw, th)
        if (tw, th) == (tile, tile):
            return a
        full = np.full((tile, tile, 3), 255, np.uint8)
        full[:th, :tw] = a
        return full

    for y in range(0, h, tile):  # one row of tiles at a time: memory is a row of tiles, whatever the slide's size
        yield from _pool().map(one, [(x, y) for x in range(0, w, tile)])


def write_pyramid(path: str | Path, *, width: int, height: int, mpp: float, read_level: ReadLevel, tile: int = 256,
                  description: str = "") -> list[tuple[int, int]]:
    """Write a tiled, zlib-compressed pyramidal TIFF, tile by tile: level k is level 0 halved k times, its pixels given by
    ``read_level``. The resolution tags (pixels per centimetre) make OpenSlide report ``mpp`` (generic-tiff)."""
    import tifffile

    if tile % 16:
        raise SlideError(f"TIFF tile size {tile}: must be a multiple of 16")
    dims = pyramid_dims(width, height, tile)
    big = width * height * 3 * 4 // 3 > 2**32 - 2**28
    with tifffile.TiffWriter(str(path), bigtiff=big) as tw:
        for k, (w, h) in enumerate(dims):
            res = 1e4 / (mpp * 2**k)
            tw.write(_tiles(read_level, k, w, h, tile), shape=(h, w, 3), dtype=np.uint8, tile=(tile, tile), compression="zlib",
                     photometric="rgb", resolution=(res, res), resolutionunit="CENTIMETER", subfiletype=0 if k == 0 else 1,
                     description=description if k == 0 else None, software="medfool", metadata=None)
    return dims
