"""Detection defences: score a tile, flag it above a threshold set on clean tiles, and the attack that must evade them.

- ``feature-squeeze`` (Xu, Evans & Qi, "Feature Squeezing", NDSS 2018): the score is the largest L1 distance
  between the model's softmax on the tile and on its squeezed versions (bit-depth reduction, median filter).
- ``input-quality``: an input-quality / out-of-distribution check for H&E tiles. Five statistics a pathologist's
  QC would look at, or the model exposes: the energy score -logsumexp(logits) (Liu et al., NeurIPS 2020; a better
  OOD score than the max softmax of Hendrycks & Gimpel, ICLR 2017), the mean optical density of each RGB channel
  (stain amount and colour: a wrong stain, an over-stained slide, a pen mark), and the fine-detail ratio,
  the log of the grey image's mean absolute Laplacian over that of its 2x-downsampled copy (focus, independent of the
  tissue's contrast: blur lowers it, pixel noise raises it). Each is centred and scaled on the
  clean tiles by median and MAD (robust with few tiles); the score is the largest absolute z. Every step is
  differentiable, so the adaptive attack needs no BPDA here. H&E tiles of different tissue classes (fat, background,
  dense tumour) differ widely in stain amount, so the colour features are loose: measured on the shipped tiles, the
  check flags out-of-focus tiles but not a faded or channel-swapped stain, and few plain PGD adversarials (2 of 10
  at 8/255 on the held-out tiles).

Thresholds (split-conformal, Vovk et al. 2005): with n clean scores, the threshold is the ceil((n + 1)(1 - fpr))-th
smallest; a new clean tile from the same distribution is then flagged with probability at most ``fpr``, and at most
a ``fpr`` share of the calibration tiles is. Fewer than ceil(1 / fpr) clean tiles cannot set it: refused.

:func:`evade` is the detector-aware PGD (Carlini & Wagner, "Adversarial examples are not easily detected", AISec
2017; Athalye et al., ICML 2018): it ascends the classifier's cross-entropy (capped) minus a penalty on the detector score
above its threshold, with BPDA (straight-through) through the bit-depth rounding, and keeps each tile's first iterate
that is both misclassified and not flagged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .squeeze import bit_depth, median_filter
from .system import straight_through

FEATURES = ("energy", "od_red", "od_green", "od_blue", "fine_detail")
_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


class DetectorError(ValueError):
    """A detector that cannot be calibrated or run as asked; the message says why, in one line."""


def squeeze_scores(model: nn.Module, x: torch.Tensor, *, bits: int = 5, size: int = 2,
                   bpda: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(score, logits of ``x``): the max L1 distance between softmax(x) and softmax of each squeezed copy, in one
    forward of 3B tiles. ``bpda``: the rounding's forward value with the identity's gradient."""
    b = x.shape[0]
    if bpda:
        depth = straight_through(x, bit_depth(x.detach(), bits=bits))
    else:
        depth = bit_depth(x, bits=bits)
    logits = model(torch.cat([x, depth, median_filter(x, size=size)])).float()
    p = logits.softmax(1).view(3, b, -1)
    score = torch.maximum((p[0] - p[1]).abs().sum(1), (p[0] - p[2]).abs().sum(1))
    return score, logits[:b]


def quality_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [B, 5] in the order of ``FEATURES``, logits of ``x``)."""
    logits = model(x).float()
    energy = -torch.logsumexp(logits, 1)
    od = -torch.log(x.float().clamp(min=1 / 255)).mean((2, 3))  # Beer-Lambert optical density per channel
    grey = x.float().mean(1, keepdim=True)
    kernel = _LAPLACE.to(x.device).view(1, 1, 3, 3)
    fine = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernel).abs().mean((1, 2, 3))
    coarse = F.conv2d(F.pad(F.avg_pool2d(grey, 2), (1, 1, 1, 1), mode="replicate"), kernel).abs().mean((1, 2, 3))
    detail = torch.log((fine + 1e-4) / (coarse + 1e-4))
    return torch.cat([energy[:, None], od, detail[:, None]], 1), logits


def conformal_threshold(scores: torch.Tensor, fpr: float) -> float:
    """The ceil((n + 1)(1 - fpr))-th smallest clean score (flag strictly above it)."""
    if not isinstance(fpr, float) or not math.isfinite(fpr) or not 0 < fpr < 1:
        raise DetectorError(f"fpr must be a number in (0, 1); got {fpr!r}")
    n = int(scores.numel())
    need = math.ceil(1 / fpr)
    if n < need:
        raise DetectorError(f"a false-positive rate of {fpr:g} needs at least {need} clean tiles to set the threshold; got {n}")
    if not bool(torch.isfinite(scores).all()):
        raise DetectorError("the detector's score is not finite on some clean tiles (the model gave NaN/inf)")
    k = min(n, math.ceil((n + 1) * (1 - fpr)))
    return float(scores.double().sort().values[k - 1])


class Detector:
    """A detector in front of ``model``: :meth:`calibrate` on clean tiles, then :meth:`score` / :meth:`flags`."""

    def __init__(self, model: nn.Module, *, name: str, params: dict[str, Any] | None = None) -> None:
        from .specs import DETECTORS, DefenceError, SPECS

        if name not in DETECTORS:
            raise DetectorError(f"{name!r} is not a detector ({', '.join(DETECTORS)})")
        spec = SPECS[name]
        known = {p.name: p for p in spec.params}
        full = spec.defaults()
        for key, value in (params or {}).items():
            if key not in known:
                raise DetectorError(f"{name}: unknown parameter {key!r}; it takes {', '.join(sorted(known))}")
            want = known[key].kind
            if isinstance(value, bool) or not isinstance(value, (int, float) if want is float else want):
                raise DetectorError(f"{name}: {key}={value!r} is not {'an integer' if want is int else 'a number'}")
            try:
                known[key].check(want(value), name)
            except DefenceError as exc:
                raise DetectorError(str(exc)) from None
            full[key] = want(value)
        self.model, self.name, self.params = model, name, full
        self.fpr = float(full["fpr"])
        self.threshold: float | None = None
        self.centre: torch.Tensor | None = None
        self.scale: torch.Tensor | None = None
        self.calibration_tiles = 0

    def _raw(self, x: torch.Tensor, bpda: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if self.name == "feature-squeeze":
            return squeeze_scores(self.model, x, bits=self.params["bits"], size=self.params["size"], bpda=bpda)
        return quality_features(self.model, x)

    def score_and_logits(self, x: torch.Tensor, *, bpda: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(score, logits) of a batch; differentiable (``bpda``: straight-through the non-differentiable steps)."""
        raw, logits = self._raw(x, bpda)
        if self.name == "feature-squeeze":
            return raw, logits
        if self.centre is None or self.scale is None:
            raise DetectorError("input-quality: calibrate on clean tiles first")
        return ((raw - self.centre.to(raw.device)) / self.scale.to(raw.device)).abs().amax(1), logits

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_and_logits(x)[0]

    @torch.no_grad()
    def calibrate(self, batches: list[torch.Tensor]) -> float:
        """Set the threshold (and, for input-quality, the centre and scale) on clean tiles: batches of any sizes."""
        n = sum(int(b.shape[0]) for b in batches)
        need = math.ceil(1 / self.fpr)
        if n < need:
            raise DetectorError(f"{self.name}: a false-positive rate of {self.fpr:g} needs at least {need} clean tiles to set "
                                f"the threshold; got {n}")
        if self.name == "input-quality":
            feats = torch.cat([quality_features(self.model, b)[0] for b in batches])
            if not bool(torch.isfinite(feats).all()):
                raise DetectorError("input-quality: a feature is not finite on some clean tiles (the model gave NaN/inf)")
            self.centre = feats.median(0).values
            mad = (feats - self.centre).abs().median(0).values * 1.4826
            self.scale = torch.maximum(mad, feats.std(0).nan_to_num(0) * 0.1).clamp_min(1e-6)
        scores = torch.cat([self.score(b) for b in batches])
        self.threshold = conformal_threshold(scores, self.fpr)
        self.calibration_tiles = n
        return self.threshold

    @torch.no_grad()
    def flags(self, x: torch.Tensor) -> torch.Tensor:
        if self.threshold is None:
            raise DetectorError(f"{self.name}: calibrate on clean tiles first")
        return self.score(x) > self.threshold


def evade(detector: Detector, images: torch.Tensor, labels: torch.Tensor, *, eps: float = 8 / 255, steps: int = 20,
          step_size: float | None = None, kappa: float = 5.0, weight: float = 1.0, slack: float = 0.05,
          seed: int = 0) -> torch.Tensor:
    """Detector-aware L-inf PGD: the adversarial batch (each tile's first iterate that fools the model and stays
    below the threshold, else the last iterate). Ascends min(CE, kappa) - weight * relu(score / t - (1 - slack)) per
    tile (CE: the cross-entropy of the label, capped so a confidently fooled tile only lowers its score; t: the
    threshold), with signed steps of ``step_size`` (default 2.5 eps / steps, as PGD) from a random start."""
    if detector.threshold is None:
        raise DetectorError(f"{detector.name}: calibrate on clean tiles first")
    for name, value in (("eps", eps), ("kappa", kappa), ("weight", weight), ("slack", slack)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DetectorError(f"{name} must be a finite number; got {value!r}")
    if not 0 < eps <= 1 or kappa < 0 or weight < 0 or not 0 <= slack < 1:
        raise DetectorError(f"need 0 < eps <= 1, kappa >= 0, weight >= 0 and 0 <= slack < 1; "
                            f"got eps={eps}, kappa={kappa}, weight={weight}, slack={slack}")
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 10_000:
        raise DetectorError(f"steps must be an integer in [1, 10000]; got {steps!r}")
    step = 2.5 * eps / steps if step_size is None else float(step_size)
    t = max(detector.threshold, 1e-6)
    x = images.detach()
    g = torch.Generator(device=x.device).manual_seed(seed)
    adv = ((x + (torch.rand(x.shape, generator=g, device=x.device) * 2 - 1) * eps).clamp(0, 1)).detach()
    best = adv.clone()
    active = torch.arange(x.shape[0], device=x.device)
    for i in range(steps + 1):
        xa = adv[active].clone().requires_grad_(i < steps)
        with torch.set_grad_enabled(i < steps):
            score, logits = detector.score_and_logits(xa, bpda=True)  # forward values are the real system's
            y = labels[active]
            ok = (logits.argmax(1) != y) & (score <= detector.threshold)
        best[active[ok]] = xa.detach()[ok]
        if i == steps:
            best[active[~ok]] = xa.detach()[~ok]
            break
        objective = F.cross_entropy(logits, y, reduction="none").clamp(max=kappa) - weight * F.relu(score / t - (1 - slack))
        grad = torch.autograd.grad(objective.sum(), xa)[0]
        xs = x[active]
        moved = torch.minimum(torch.maximum(xa.detach() + step * grad.sign(), xs - eps), xs + eps).clamp(0, 1)
        keep = ~ok
        adv[active[keep]] = moved[keep]
        active = active[keep]
        if active.numel() == 0:
            break
    return best
