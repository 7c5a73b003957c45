"""A stateful query-attack detector: a query stream whose images crowd together is flagged.

In the spirit of Chen, Carlini & Wagner, "Stateful detection of black-box adversarial attacks" (SPAI 2020) and
Blacklight (Li et al., USENIX Security 2022). A query-only attack (Square, HopSkipJump) sends long runs of
near-identical images; ordinary use sends distinct tiles. Each image is reduced to a compact feature (an
area-downsampled, quantised copy: ``size`` x ``size`` pixels per channel at ``levels`` grey levels, one byte
each) and kept in a buffer of the last ``capacity`` queries. A new query's score is the mean distance (root mean
square over the feature, in [0, 1] pixel units) to its ``k`` nearest earlier queries; it is flagged when the
score is below ``threshold``. The threshold is the ``fpr`` quantile of the same score on clean tiles
(each against the others), so about ``fpr`` of clean queries are flagged when the buffer holds about as many
clean tiles as the calibration set did (more queries in the buffer bring clean neighbours closer).
Batched: a batch's rows are scored against the buffer and against the earlier rows of the same batch at once.
Not a defence against an attacker who knows it: spreading queries over accounts, or adding large random
low-frequency changes between queries, evades it (both papers discuss this). Depends on torch only.
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["QueryDetector", "QueryFlagged", "Guarded", "calibrate"]


class QueryFlagged(RuntimeError):
    """The detector flagged the query stream; ``queries`` is the count of images up to and including the first one flagged."""

    def __init__(self, message: str, queries: int) -> None:
        super().__init__(message)
        self.queries = queries


def _check(*, k: int, size: int, levels: int, capacity: int) -> None:
    problems = []
    for name, value, low, high in (("k", k, 1, 1000), ("size", size, 2, 256), ("levels", levels, 2, 256),
                                   ("capacity", capacity, 2, 1_000_000)):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            problems.append(f"{name}={value!r} must be an integer in [{low}, {high}]")
    if not problems and capacity <= k:
        problems.append(f"capacity={capacity} must exceed k={k}")
    if problems:
        raise ValueError("; ".join(problems))


def features(images: torch.Tensor, *, size: int = 16, levels: int = 32) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] -> (B, C*size*size) uint8 on the CPU: area-downsampled, rounded to ``levels`` levels."""
    if images.ndim != 4:
        raise ValueError(f"expected images (B, C, H, W); got shape {list(images.shape)}")
    _check(k=1, size=size, levels=levels, capacity=2)
    small = F.adaptive_avg_pool2d(images.detach().float().clamp(0, 1), size)
    return torch.round(small * (levels - 1)).to(torch.uint8).flatten(1).cpu()  # the state lives on the CPU


def _knn_scores(new: torch.Tensor, old: torch.Tensor, k: int, levels: int, capacity: int) -> torch.Tensor:
    """Mean distance of each row of ``new`` to its k nearest among the ``capacity`` queries before it (the end of
    ``old``, then the earlier rows of ``new``), NaN where fewer than k came before: as if sent one by one."""
    b, d = new.shape
    pool = torch.cat([old, new]).float()
    dist = torch.cdist(new.float(), pool) / (levels - 1) / math.sqrt(d)  # RMS distance in [0, 1] pixel units
    at = old.shape[0] + torch.arange(b)[:, None]  # each row's own place in the pool
    j = torch.arange(pool.shape[0])[None]
    dist = dist.masked_fill((j >= at) | (j < at - capacity), float("inf"))  # itself, later rows, rolled out
    avail = (old.shape[0] + torch.arange(b)).clamp(max=capacity)
    kk = min(k, pool.shape[0])
    near = dist.topk(kk, dim=1, largest=False).values if kk else dist.new_zeros((b, 0))
    score = near.mean(1) if kk else dist.new_full((b,), float("nan"))
    return torch.where(avail >= k, score, torch.full_like(score, float("nan")))


def calibrate(clean: torch.Tensor, *, fpr: float = 0.05, k: int = 5, size: int = 16, levels: int = 32) -> float:
    """The threshold that flags about ``fpr`` of ``clean`` tiles: the fpr quantile of each tile's mean distance to its
    k nearest other clean tiles. Needs at least max(k + 1, ceil(1 / fpr)) tiles."""
    if not isinstance(fpr, (int, float)) or isinstance(fpr, bool) or not math.isfinite(fpr) or not 0 < fpr < 1:
        raise ValueError(f"fpr={fpr!r} must be a number in (0, 1)")
    _check(k=k, size=size, levels=levels, capacity=k + 1)
    need = max(k + 1, math.ceil(1 / fpr - 1e-9))
    if clean.ndim != 4 or clean.shape[0] < need:
        got = clean.shape[0] if clean.ndim == 4 else f"shape {list(clean.shape)}"
        raise ValueError(f"the detector's threshold for fpr={fpr:g} with k={k} needs at least {need} clean tiles; got {got}")
    f = features(clean, size=size, levels=levels).float()
    dist = torch.cdist(f, f) / (levels - 1) / math.sqrt(f.shape[1])
    dist.fill_diagonal_(float("inf"))
    score = dist.topk(k, dim=1, largest=False).values.mean(1).sort().values
    # flagged when score < threshold: at most floor(fpr * n) clean tiles lie strictly below it
    return float(score[int(math.floor(fpr * score.shape[0] + 1e-9))])


class QueryDetector:
    """One client's detector state: the buffer of recent query features and what was flagged.

    ``observe(images)`` scores and stores a batch and returns its flags; ``seen`` counts images, ``flagged`` counts
    flagged images and ``first_flag`` is the count of images up to and including the first flagged one (None
    while none is). Thread-safe (one lock per state)."""

    def __init__(self, threshold: float, *, k: int = 5, size: int = 16, levels: int = 32, capacity: int = 1000) -> None:
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not math.isfinite(threshold) or threshold < 0:
            raise ValueError(f"threshold={threshold!r} must be a finite number >= 0")
        _check(k=k, size=size, levels=levels, capacity=capacity)
        self.threshold, self.k, self.size, self.levels, self.capacity = float(threshold), k, size, levels, capacity
        self.fpr: float | None = None  # the false-positive rate the threshold was set for, where calibrated
        self._lock = threading.Lock()
        self.reset()

    @classmethod
    def calibrated(cls, clean: torch.Tensor, *, fpr: float = 0.05, k: int = 5, size: int = 16, levels: int = 32,
                   capacity: int = 1000) -> "QueryDetector":
        """A detector whose threshold flags about ``fpr`` of ``clean`` tiles (see :func:`calibrate`)."""
        d = cls(calibrate(clean, fpr=fpr, k=k, size=size, levels=levels), k=k, size=size, levels=levels, capacity=capacity)
        d.fpr = fpr
        return d

    def reset(self) -> None:
        self.buffer = torch.zeros((0, 0), dtype=torch.uint8)
        self.seen = 0
        self.flagged = 0
        self.first_flag: int | None = None

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """Each image's mean distance to its k nearest earlier queries (NaN while fewer than k came before); stores nothing."""
        f = features(images, size=self.size, levels=self.levels)
        old = self.buffer if self.buffer.shape[1] == f.shape[1] else f[:0]
        return _knn_scores(f, old, self.k, self.levels, self.capacity)

    def observe(self, images: torch.Tensor) -> torch.Tensor:
        """Score a batch, store it, and return its flags (True: closer to its neighbours than the threshold)."""
        if images.shape[0] == 0:
            return torch.zeros(0, dtype=torch.bool)
        with self._lock:
            f = features(images, size=self.size, levels=self.levels)
            if self.buffer.shape[1] != f.shape[1]:
                self.buffer = f[:0]
            score = _knn_scores(f, self.buffer, self.k, self.levels, self.capacity)
            flags = score < self.threshold  # NaN compares False: too few earlier queries
            if self.first_flag is None and bool(flags.any()):
                self.first_flag = self.seen + int(flags.nonzero()[0, 0]) + 1
            self.seen += images.shape[0]
            self.flagged += int(flags.sum())
            self.buffer = torch.cat([self.buffer, f])[-self.capacity:]
            return flags

    def describe(self) -> str:
        fpr = "" if self.fpr is None else f", set for {self.fpr:g} false positives on clean tiles"
        return (f"stateful query detector (k={self.k}, threshold {self.threshold:.4f} RMS on {self.size}x{self.size}"
                f" features at {self.levels} levels, buffer {self.capacity}{fpr})")


class Guarded(nn.Module):
    """A query function behind a detector: every batch is observed before the model answers; once the stream is
    flagged it raises :class:`QueryFlagged` (``stop=True``, the default) or only counts (``stop=False``)."""

    def __init__(self, model: nn.Module, detector: QueryDetector, *, stop: bool = True) -> None:
        super().__init__()
        self.model, self.detector, self.stop = model, detector, stop
        self.output = getattr(model, "output", "scores")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.detector.observe(x)
        if self.stop and self.detector.first_flag is not None:
            n = self.detector.first_flag
            raise QueryFlagged(f"the query stream was flagged at query {n} by the {self.detector.describe()}", n)
        return self.model(x)
