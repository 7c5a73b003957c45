"""Whole slides through the campaign core: plan a slide's tissue tiles, predict them (``predict_units`` +
``run_campaign``, resumable), attack a chosen subset with any registered tile attack (``tile_units``), re-aggregate
the slide-level calls, search the smallest number of attacked tiles that flips each call, and write the attacked
slide back as a pyramidal TIFF, streamed, with level 0 outside the attacked tiles pixel-identical to the source.

The engine here is the local one plus two things: the next unit's regions are read in the background while the
model runs on the current one, and the clean pass keeps each tile's embedding (the reference TileNet's pooled
features, for attention MIL) as a unit artifact beside its probabilities.
"""

from __future__ import annotations

import io
import math
import shutil
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from ..inputs.items import Item
from ..inputs.slides import (
    MAX_TILES,
    PIXEL_BUDGET,
    Grid,
    Slide,
    SlideError,
    Tissue,
    detect_tissue,
    prefetch,
    read_regions,
    slide_sha256,
    tile_grid,
    tile_items,
)
from ..inputs.tiles import from_png_bytes
from ..registry import spec as spec_of
from ..targets.aggregate import DEFAULT_K, MilHead, embed, embedding_module, flip_scan, slide_calls, smallest_flip
from ..targets.target import Target
from .engine import failure
from .execute import PREDICT, execute
from .outcome import Artifact, UnitFailure, UnitOutcome
from .plan import PlanError, predict_units, tile_units
from .run import run_campaign
from .store import ResultsStore
from .units import Unit

EMBEDDINGS = "embeddings.f32"
GOALS = ("miss", "overcall")
SELECT = ("top-attention", "top-score", "random")
CANDIDATES = ("called", "all")


class SlideRunError(ValueError):
    """A slide run that cannot go on: a refused input (the message says why)."""


# --------------------------------------------------------------------------- planning


@dataclass
class SlidePlan:
    """A slide's tissue tiles on the model's grid: boxes (N, 4) in level-0 pixels, (row, col), tissue fractions, items."""

    path: str
    sha256: str
    info: dict[str, Any]
    grid: Grid
    tissue: Tissue
    boxes: np.ndarray
    rc: np.ndarray
    fractions: np.ndarray
    items: list[Item]
    min_tissue: float
    grid_tiles: int


def plan_slide(path: str | Path, *, target_mpp: float, side: int, overlap: int = 0, min_tissue: float = 0.5,
               mpp: float | None = None, roi: tuple[int, int, int, int] | None = None, method: str = "saturation",
               pixel_budget: int = PIXEL_BUDGET, max_tiles: int = MAX_TILES) -> SlidePlan:
    """Open the slide, lay the grid of ``side``-pixel tiles at ``target_mpp`` and keep the tiles with at least
    ``min_tissue`` tissue (Otsu on a low-resolution read); a slide with none is refused, and so is one whose tissue mask
    would decode more than ``pixel_budget`` pixels or whose grid would hold more than ``max_tiles`` tiles."""
    if not 0 < min_tissue <= 1:
        raise SlideError(f"--min-tissue {min_tissue}: must be in (0, 1]")
    if pixel_budget < 1 or max_tiles < 1:
        raise SlideError(f"--pixel-budget {pixel_budget} / --max-tiles {max_tiles}: must be >= 1")
    with Slide(path) as slide:
        mpp0 = slide.resolve_mpp(mpp)
        grid = tile_grid(slide, mpp0=mpp0, target_mpp=target_mpp, side=side, overlap=overlap, roi=roi, max_tiles=max_tiles)
        tissue = detect_tissue(slide, scale=grid.tile0 / 16, method=method, pixel_budget=pixel_budget)
        info = slide.info()
    boxes, rc = grid.positions()
    fr = tissue.fractions(boxes)
    keep = fr >= min_tissue
    if not keep.any():
        raise SlideError(f"{path}: no tissue: none of the {grid.count} tiles is {min_tissue:.0%} tissue "
                         f"({tissue.method} threshold {tissue.threshold:.3f}, tissue in {tissue.mask.mean():.1%} of the thumbnail)")
    sha = slide_sha256(path)
    info["mpp_used"] = mpp0
    return SlidePlan(str(path), sha, info, grid, tissue, boxes[keep], rc[keep], fr[keep], tile_items(path, sha, boxes[keep], grid),
                     min_tissue, grid.count)


# --------------------------------------------------------------------------- the engine


class TileProgress:
    """Tiles done, their rate and an estimate of the time left, on standard error: a tqdm bar on a terminal, otherwise
    (a log, a pipe) one line every ``EVERY_S`` seconds and one at the end of a run that printed any."""

    EVERY_S = 30.0

    def __init__(self, total: int, label: str, enabled: bool = True) -> None:
        import sys
        import time

        self.total, self.label, self.done = total, label, 0
        self.shown: int | None = None  # the count last printed
        self.clock = time.monotonic
        self.start = self.last = self.clock()
        self.stream = sys.stderr
        self.bar = None
        if enabled and self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=label, unit="tile", leave=False)
        self.enabled = enabled

    def line(self) -> str:
        spent = max(self.clock() - self.start, 1e-9)
        rate = self.done / spent
        text = f"{self.label} {self.done:,}/{self.total:,} ({self.done / max(self.total, 1):.0%}), {rate:.1f} tiles/s"
        if self.done < self.total:
            text += f", about {_duration((self.total - self.done) / rate)} left" if rate > 0 else ", time left unknown yet"
        return text + f" ({_duration(spent)} so far)"

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and self.clock() - self.last >= self.EVERY_S:
            self.show()

    def show(self) -> None:
        self.last, self.shown = self.clock(), self.done
        print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.shown is not None and self.shown != self.done:
            self.show()


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class SlideEngine:
    """Runs units in this process like the local engine, reading the next unit's regions in the background and keeping
    the clean pass's tile embeddings (``embed``: the module whose output is the embedding) as an artifact; reports
    progress in tiles with the time left (:class:`TileProgress`)."""

    name = "local-slide"

    def __init__(self, *, embed: torch.nn.Module | None = None, label: str = "slide: tiles", progress: bool = True) -> None:
        self.embed = embed
        self.label, self.progress = label, progress

    def run(self, units: Sequence[Unit], target: Target) -> Iterator[UnitOutcome | UnitFailure]:
        units = list(units)
        bar = TileProgress(sum(len(u.items) for u in units), self.label, self.progress)
        try:
            yield from self._run(units, target, bar)
        finally:
            bar.close()

    def _run(self, units: list[Unit], target: Target, bar: TileProgress) -> Iterator[UnitOutcome | UnitFailure]:
        for i, unit in enumerate(units):
            if i + 1 < len(units) and any(it.region is not None for it in units[i + 1].items):
                prefetch(units[i + 1].items)
            captured: list[torch.Tensor] = []
            hook = None
            if self.embed is not None and unit.attack == PREDICT:
                hook = self.embed.register_forward_hook(
                    lambda m, inp, out, keep=captured: keep.append(out.detach().flatten(1).float().cpu()))
            try:
                outcome = execute(unit, target)
            except Exception as exc:  # noqa: BLE001 - recorded as the unit's failure, as the local engine does
                bar.update(len(unit.items))
                yield failure(unit, exc)
                continue
            finally:
                if hook is not None:
                    hook.remove()
            if captured:
                outcome.artifacts.append(Artifact(EMBEDDINGS, "application/octet-stream", captured[0].numpy().astype("<f4").tobytes()))
            bar.update(len(unit.items))
            yield outcome


def _checked(run: Any) -> None:
    for f in run.failures:
        first = f.error.splitlines()[0] if f.error else "failed"
        raise SlideRunError(first) if f.kind == "invalid" else RuntimeError(f"{f.attack} failed: {f.error}")


# --------------------------------------------------------------------------- predicting


@dataclass
class Predictions:
    probs: np.ndarray  # (N, C)
    p_tumour: np.ndarray  # (N,) P(positive classes)
    embeddings: np.ndarray | None  # (N, D)
    calls: dict[str, dict[str, Any]]
    attention: np.ndarray | None  # (N,) attention weights
    keys: list[str] = field(default_factory=list)

    def decision(self, target: Target) -> np.ndarray:
        """Each tile's tumour decision, as the target makes it (argmax, or P(positive) >= threshold)."""
        if target.threshold is not None:
            return self.p_tumour >= target.threshold
        return np.isin(self.probs.argmax(1), target.positive_indices)


def head_for(target: Target, head: MilHead | None) -> tuple[MilHead | None, str | None]:
    """The attention head when it fits the target (trained on its embeddings), else None and why."""
    if head is None:
        return None, "no attention head given"
    if embedding_module(target.model) is None:
        return None, "attention MIL needs the reference TileNet's pooled features (features + pool); this model has none"
    if head.tile_fingerprint and head.tile_fingerprint != target.fingerprint:
        return None, "the attention head was trained on another tile model's embeddings"
    return head, None


def thresholds_for(target: Target, head: MilHead | None, overrides: dict[str, float] | None = None) -> dict[str, float]:
    """The head's calibrated thresholds when it fits the target, else 0.5 each; ``overrides`` win."""
    from ..targets.aggregate import DEFAULT_THRESHOLDS

    fits = head is not None and head.tile_fingerprint == target.fingerprint
    return {**DEFAULT_THRESHOLDS, **(head.thresholds if fits else {}), **(overrides or {})}


def predict_slide(plan: SlidePlan, target: Target, store: ResultsStore, *, head: MilHead | None, thresholds: dict[str, float],
                  k: int = DEFAULT_K, batch_size: int = 64, resume: bool = False, progress: bool = True,
                  engine: Any = None) -> Predictions:
    """The clean pass over the plan's tiles through the campaign core, then every aggregator's slide-level call."""
    head, _ = head_for(target, head)
    module = embedding_module(target.model) if head is not None else None
    units = predict_units(plan.items, batch_size)
    run = run_campaign(units, target, store, engine=engine or SlideEngine(embed=module, progress=progress), resume=resume,
                       progress=progress and engine is not None,
                       label="slide: tiles", meta={"slide": plan.path, "slide_sha256": plan.sha256})
    _checked(run)
    index = {it.id: n for n, it in enumerate(plan.items)}
    probs = np.zeros((len(plan.items), len(target.classes)), np.float32)
    emb: np.ndarray | None = None
    missing: list[int] = []
    for u in store.units(keys=run.keys):
        rows = store.items([u["key"]])
        at = [index[r["item"]] for r in rows]
        probs[at] = np.asarray([r["extra"]["probs"] for r in rows], np.float32)
        if module is not None:
            blob = store.artifact(u["key"], EMBEDDINGS)
            if blob is None:
                missing += at
                continue
            vec = np.frombuffer(blob, "<f4").reshape(len(rows), -1)
            emb = np.zeros((len(plan.items), vec.shape[1]), np.float32) if emb is None else emb
            emb[at] = vec
    if module is not None and missing:  # units another engine wrote: embed those tiles again
        vec = embeddings_of([plan.items[i] for i in missing], target, batch_size)
        emb = np.zeros((len(plan.items), vec.shape[1]), np.float32) if emb is None else emb
        emb[missing] = vec
    p_t = probs[:, target.positive_indices].sum(1)
    calls, weights = slide_calls(torch.from_numpy(p_t), None if emb is None else torch.from_numpy(emb), head=head,
                                 thresholds=thresholds, k=k)
    return Predictions(probs, p_t, emb, calls, None if weights is None else weights.numpy(), run.keys)


def embeddings_of(items: Sequence[Item], target: Target, batch_size: int) -> np.ndarray:
    out = []
    for i in range(0, len(items), batch_size):
        x = torch.stack(read_regions(items[i:i + batch_size])).to(target.device)
        with torch.no_grad():
            out.append(embed(target.model, x).float().cpu().numpy())
    return np.concatenate(out)


def _outputs(target: Target, store: ResultsStore, spots: list[tuple[str, int]], want_embedding: bool,
             batch_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities (and embeddings) of the stored 8-bit adversarials, read and run one batch at a time."""
    probs, embs = [], []
    for i in range(0, len(spots), batch_size):
        x = torch.stack([from_png_bytes(_blob(store, key, pos)) for key, pos in spots[i:i + batch_size]]).to(target.device)
        with torch.no_grad():
            probs.append(target.model(x).float().softmax(1).cpu().numpy())
            if want_embedding:
                embs.append(embed(target.model, x).float().cpu().numpy())
    return np.concatenate(probs), (np.concatenate(embs) if want_embedding else None)


def _blob(store: ResultsStore, key: str, pos: int) -> bytes:
    data = store.artifact(key, f"adversarial/{pos}.png")
    if data is None:
        raise SlideRunError("an adversarial tile is missing from the results store")
    return data


# --------------------------------------------------------------------------- attacking


@dataclass
class SlideAttack:
    """The attacked tiles (indices into the plan, in attack order), their adversarials' outputs and where they are stored."""

    goal: str
    attack: str
    params: dict[str, Any]
    view: str
    target_class: int | None
    select: str
    eligible: int
    order: np.ndarray
    probs: np.ndarray  # (K, C) of the 8-bit adversarials
    p_tumour: np.ndarray
    embeddings: np.ndarray | None
    fooled: np.ndarray  # (K,) the tile attack's own success on the 8-bit tile
    where: list[tuple[str, int]]  # (unit key, position) of each adversarial PNG
    keys: list[str]
    after: dict[str, dict[str, Any]] = field(default_factory=dict)
    attention_after: np.ndarray | None = None
    scan: dict[str, Any] = field(default_factory=dict)


def choose(pred: Predictions, target: Target, *, goal: str, select: str, count: int | None, fraction: float | None,
           candidates: str = "called", seed: int = 0) -> tuple[np.ndarray, int]:
    """The tiles to attack, in order: the eligible tiles (``called``: tumour-called ones for a missed tumour, the others
    for an over-call; ``all``: every tissue tile) ranked by ``select``, the first ``count`` (or ``fraction`` of the
    tissue tiles) of them; and how many were eligible."""
    if goal not in GOALS:
        raise SlideRunError(f"--goal {goal!r}: expected {', '.join(GOALS)} or auto")
    if select not in SELECT:
        raise SlideRunError(f"--select {select!r}: expected {', '.join(SELECT)}")
    if candidates not in CANDIDATES:
        raise SlideRunError(f"--candidates {candidates!r}: expected {', '.join(CANDIDATES)}")
    positive = pred.decision(target)
    eligible = np.flatnonzero(positive if goal == "miss" else ~positive) if candidates == "called" else np.arange(len(positive))
    if not eligible.size:
        what = "tumour-called tile to hide" if goal == "miss" else "non-tumour tile to push to tumour"
        raise SlideRunError(f"the slide has no {what} (goal {goal})")
    if select == "top-attention":
        if pred.attention is None:
            raise SlideRunError("--select top-attention needs the attention head (the reference model's); use top-score or random")
        ranked = eligible[np.argsort(-pred.attention[eligible], kind="stable")]
    elif select == "top-score":
        ranked = eligible[np.argsort(-pred.p_tumour[eligible], kind="stable")]
    else:
        ranked = np.random.default_rng(seed).permutation(eligible)
    n = len(pred.p_tumour)
    if count is None and fraction is None:
        k = len(ranked)
    elif count is not None:
        if count < 1:
            raise SlideRunError(f"--tiles {count}: must be >= 1")
        k = count
    else:
        if not (fraction is not None and 0 < fraction <= 1):
            raise SlideRunError(f"--fraction {fraction}: must be in (0, 1]")
        k = max(1, math.ceil(fraction * n))
    return ranked[:min(k, len(ranked))], int(eligible.size)


def tile_goal(target: Target, attack: str, goal: str, candidates: str) -> tuple[int | None, str, dict[str, Any]]:
    """(target class, view, unit options) of the tile attack. ``called`` tiles: a missed tumour attacks the tumour
    decision untargeted (tumour-called tiles pushed to non-tumour); an over-call is targeted to the first positive class
    (the decision view, untargeted, when the attack takes no target). ``all`` tiles: the decision view targeted to the
    goal's decision, so tiles already there are pushed further (run the tile attack without early stopping)."""
    s = spec_of(attack)
    if candidates == "all":
        if s.targeted == "never":
            raise SlideRunError(f"{attack} is untargeted: --candidates all pushes every tile towards the goal's decision and needs a "
                                "targeted attack (pgd, fgsm, apgd, eot, one-pixel)")
        return (0 if goal == "miss" else 1), "decision", {"view": "decision"}
    if goal == "overcall" and s.targeted != "never":
        return target.positive_indices[0], "classifier", {}
    return None, "decision", {"view": "decision"}


def attack_slide(plan: SlidePlan, pred: Predictions, target: Target, store: ResultsStore, *, attack: str, params: dict[str, Any],
                 goal: str, order: np.ndarray, eligible: int, select: str, head: MilHead | None, thresholds: dict[str, float],
                 candidates: str = "called", k: int = DEFAULT_K, batch_size: int = 32, resume: bool = False,
                 progress: bool = True, engine: Any = None) -> SlideAttack:
    """Attack the tiles ``order`` through the campaign core (as :func:`tile_goal` says), then score every aggregator with
    them replaced and scan j = 0..K attacked tiles (the flip search)."""
    s = spec_of(attack)
    if s.inputs != "tiles":
        raise SlideRunError(f"{attack} does not alter tiles one batch at a time (its inputs: {s.inputs}); "
                            "use an input-alteration tile attack such as pgd, fgsm, apgd, deepfool, eot or one-pixel")
    head, _ = head_for(target, head)
    labels = pred.probs.argmax(1)
    items = [_labelled(plan.items[i], int(labels[i])) for i in order.tolist()]
    goal_class, view, options = tile_goal(target, attack, goal, candidates)
    try:
        units = tile_units(attack, items, params=params, target=goal_class, batch_size=batch_size, options=options, keep_images=True,
                           label=f"slide {goal}")
    except PlanError as exc:
        raise SlideRunError(str(exc)) from None
    run = run_campaign(units, target, store, engine=engine or SlideEngine(label=f"slide: {attack}", progress=progress), resume=resume,
                       progress=progress and engine is not None, label=f"slide: {attack}",
                       meta={"slide": plan.path, "slide_sha256": plan.sha256})
    _checked(run)
    where, fooled = {}, {}
    for u in store.units(keys=run.keys):
        for pos, r in enumerate(store.items([u["key"]])):
            where[r["item"]] = (u["key"], pos)
            fooled[r["item"]] = bool(r["success_8bit"])
    ids = [it.id for it in items]
    spots = [where[i] for i in ids]
    probs, emb = _outputs(target, store, spots, head is not None, batch_size)
    p_t = probs[:, target.positive_indices].sum(1)
    out = SlideAttack(goal, attack, dict(params), view, goal_class, select, eligible, order, probs, p_t, emb,
                      np.array([fooled[i] for i in ids]), spots, run.keys)
    _score(out, pred, head, thresholds, k)
    return out


def _labelled(item: Item, label: int) -> Item:
    from dataclasses import replace

    return replace(item, label=label)


def _score(a: SlideAttack, pred: Predictions, head: MilHead | None, thresholds: dict[str, float], k: int) -> None:
    order = torch.from_numpy(a.order.astype(np.int64))
    use = head is not None and pred.embeddings is not None and a.embeddings is not None
    curves = flip_scan(torch.from_numpy(pred.p_tumour), torch.from_numpy(a.p_tumour), order, k=k, head=head if use else None,
                       h0=torch.from_numpy(pred.embeddings) if use else None, h_adv=torch.from_numpy(a.embeddings) if use else None)
    a.scan = {name: {**smallest_flip(curve, thresholds[name]), "curve": [round(float(v), 6) for v in curve]}
              for name, curve in curves.items()}
    p_after = pred.p_tumour.copy()
    p_after[a.order] = a.p_tumour
    h_after = None
    if use:
        h_after = pred.embeddings.copy()  # type: ignore[union-attr]
        h_after[a.order] = a.embeddings
    a.after, w = slide_calls(torch.from_numpy(p_after), None if h_after is None else torch.from_numpy(h_after), head=head if use else None,
                             thresholds=thresholds, k=k)
    a.attention_after = None if w is None else w.numpy()


def needs(pred: Predictions, a: SlideAttack, thresholds: dict[str, float], k: int) -> dict[str, str]:
    """What each aggregator needs to flip, in numbers from this slide."""
    n = len(pred.p_tumour)
    above = int((pred.p_tumour >= thresholds["max"]).sum())
    mean = float(pred.p_tumour.mean())
    out = {"max": (f"a missed tumour needs every one of the {above} tiles with P(tumour) >= {thresholds['max']:.3f} pushed under it"
                   if a.goal == "miss" else f"an over-call needs one tile pushed to P(tumour) >= {thresholds['max']:.3f}"),
           "mean": f"the sum of P(tumour) over all {n} tiles must move by {abs(mean - thresholds['mean']) * n:.2f} "
                   f"(mean {mean:.3f}, threshold {thresholds['mean']:.3f})",
           "topk": f"the mean of the {min(k, n)} highest P(tumour) must cross {thresholds['topk']:.3f}"}
    if pred.attention is not None:
        top = np.sort(pred.attention)[::-1]
        out["attention"] = (f"the attention head's pooled embedding must cross its boundary; the {min(k, n)} tiles with most "
                            f"attention hold {top[:k].sum():.0%} of it")
    return out


# --------------------------------------------------------------------------- writing the attacked slide back


def write_attacked(plan: SlidePlan, a: SlideAttack, store: ResultsStore, out_path: str | Path, *, tile: int = 256,
                   dicom: str | None = None) -> dict[str, Any]:
    """Write the slide with the attacked tiles replaced, as a pyramidal tiled TIFF (or, with ``dicom`` set to a
    compression, as a DICOM WSI: the folder ``out_path`` of .dcm files, one per level), tile by tile. Level 0 outside the
    attacked tiles holds the source's decoded pixels; an attacked tile read at level 0 without resizing is its 8-bit
    adversarial exactly (otherwise the adversarial's difference is resized onto the source's level-0 pixels). Lower
    levels are the source's levels with the attacked tiles pasted at their footprint. Later tiles win where they overlap."""
    from ..inputs.mosaic import STATEMENT, read_truth, truth_paths
    from ..inputs.slides import write_pyramid

    out_path = Path(out_path)
    boxes = plan.boxes[a.order]
    level, side = plan.grid.level, plan.grid.side
    slide = Slide(plan.path)
    W, H = slide.dimensions

    local = threading.local()  # SQLite connections belong to one thread: each reader opens its own
    preloaded = {j: _blob(store, *a.where[j]) for j in range(len(boxes))} if store.memory else None

    def blob(j: int) -> bytes:
        if preloaded is not None:
            return preloaded[j]
        if getattr(local, "store", None) is None:
            local.store = ResultsStore(store.path)
        return _blob(local.store, *a.where[j])

    @lru_cache(maxsize=256)
    def patch(j: int) -> np.ndarray:
        adv = np.asarray(Image.open(io.BytesIO(blob(j))).convert("RGB"))
        x, y, w, h = boxes[j].tolist()
        if (w, h) == (side, side) and level == 0:
            return adv
        clean0 = slide.read_box(x, y, w, h, w, h, level=0).astype(np.float32)
        seen = slide.read_box(x, y, w, h, side, side, level=level).astype(np.float32)
        delta = np.stack([np.asarray(Image.fromarray(adv[..., c].astype(np.float32) - seen[..., c], mode="F").resize(
            (w, h), Image.Resampling.BILINEAR)) for c in range(3)], -1)
        return np.clip(np.round(clean0 + delta), 0, 255).astype(np.uint8)

    def read_level(k: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        f = 2**k
        base = (slide.read_box(x, y, w, h, w, h, level=0) if k == 0 else
                slide.read_box(x * f, y * f, min(w * f, W - x * f), min(h * f, H - y * f), w, h, resample=Image.Resampling.BOX))
        hit = np.flatnonzero((boxes[:, 0] < (x + w) * f) & (boxes[:, 0] + boxes[:, 2] > x * f) &
                             (boxes[:, 1] < (y + h) * f) & (boxes[:, 1] + boxes[:, 3] > y * f))
        for j in hit.tolist():
            bx, by, bw, bh = boxes[j].tolist()
            fx0, fy0, fx1, fy1 = round(bx / f), round(by / f), round((bx + bw) / f), round((by + bh) / f)
            img = patch(j) if k == 0 else np.asarray(Image.fromarray(patch(j)).resize((fx1 - fx0, fy1 - fy0), Image.Resampling.BOX))
            ox0, oy0, ox1, oy1 = max(fx0, x), max(fy0, y), min(fx1, x + w), min(fy1, y + h)
            if ox1 > ox0 and oy1 > oy0:
                base[oy0 - y:oy1 - y, ox0 - x:ox1 - x] = img[oy0 - fy0:oy1 - fy0, ox0 - fx0:ox1 - fx0]
        return base

    truth = read_truth(plan.path)
    note = f"medfool: {Path(plan.path).name} with {len(boxes)} tile(s) altered by {a.attack} ({a.goal}); elsewhere level 0 is the source's pixels"
    if truth is not None:
        note += ". Source: " + STATEMENT
    partial = out_path.with_name(out_path.name + ".partial")
    try:
        if dicom is None:
            dims = write_pyramid(partial, width=W, height=H, mpp=plan.info["mpp_used"], read_level=read_level, tile=tile, description=note)
            partial.replace(out_path)
        else:
            from ..inputs.dicom import write_dicom

            if out_path.exists():
                raise SlideRunError(f"{out_path}: already exists; a DICOM WSI is written into a new folder")
            shutil.rmtree(partial, ignore_errors=True)
            dims = write_dicom(partial, width=W, height=H, mpp=plan.info["mpp_used"], read_level=read_level, tile=tile, description=note,
                               compression=dicom, seed=f"{plan.sha256}|{a.attack}|{','.join(map(str, a.order.tolist()))}")
            partial.rename(out_path)
    finally:
        slide.close()
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)
    if truth is not None:  # the attack changes pixels, not the ground truth: it travels with the copy
        import json

        truth = {**truth, "slide": out_path.name, "attacked_from": Path(plan.path).name, "attacked_tiles": len(boxes)}
        truth_paths(out_path)[0].write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    return {"path": str(out_path), "format": "tiff" if dicom is None else "dicom", "levels": [list(d) for d in dims], "tile_px": tile,
            "compression": "zlib" if dicom is None else {"jpeg2000": "jpeg2000-lossless", "none": "uncompressed"}[dicom],
            "level0_exact": bool(level == 0 and plan.grid.tile0 == side)}
