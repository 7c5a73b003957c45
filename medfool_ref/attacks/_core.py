"""What every reference attack shares: input checks, model-call counting and the result object.

Conventions (after adv_lib and Foolbox): images are (B, C, H, W) in [0, 1] on the model's
device; the model maps them to logits (normalisation lives inside the model); parameters are
keyword-only and checked with clear ``ValueError``s; the caller's tensors are never modified.
Depends on torch only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

Progress = Callable[[int, int], None]


class CountingModel(nn.Module):
    """Counts forward calls and the images they carried, and backward passes requested through it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_calls = 0
        self.forward_images = 0
        self.backward_calls = 0
        self.backward_images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_calls += 1
        self.forward_images += x.shape[0]
        return self.model(x)

    def grad(self, outputs: torch.Tensor, inputs: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Gradient of ``outputs`` w.r.t. ``inputs``; with ``is_grads_batched`` one call stands for many."""
        self.backward_calls += 1
        batched = kwargs.get("is_grads_batched", False)
        self.backward_images += inputs.shape[0] * (kwargs["grad_outputs"].shape[0] if batched else 1)
        (g,) = torch.autograd.grad(outputs, inputs, **kwargs)
        return g


@dataclass(eq=False)
class AttackResult:
    """Per-sample outcome of one attack on one batch.

    The adversarial's own predictions (``success``, ``pred_after``, ``confidence_after``) are scored lazily, by one
    pass without gradients on first use: the campaign executor scores every adversarial itself (in float and on the
    8-bit grid), so an attack run through it never pays for a second scoring pass ("score once"). The query counts
    are the attack's own, taken when it finished; the scoring pass is not an attack query.
    """

    attack: str
    adversarial: torch.Tensor
    labels: torch.Tensor
    target: torch.Tensor | None
    clean: torch.Tensor
    l0: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    forward_calls: int
    forward_images: int
    backward_calls: int
    backward_images: int
    iterations: int
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    scorer: nn.Module | None = field(default=None, repr=False)  # scores the adversarial (and the clean tiles) when first asked
    known_clean_logits: torch.Tensor | None = field(default=None, repr=False)  # from a pass the attack made anyway
    _after: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        if self.scorer is None:
            raise ValueError("this result has no model to score its images with")
        with torch.no_grad():
            return self.scorer(x)

    @property
    def clean_logits(self) -> torch.Tensor:
        if self.known_clean_logits is None:
            self.known_clean_logits = self._score(self.clean).detach()
        return self.known_clean_logits

    @property
    def clean_probs(self) -> torch.Tensor:
        return self.clean_logits.float().softmax(1)

    @property
    def pred_before(self) -> torch.Tensor:
        return self.clean_logits.argmax(1)

    @property
    def confidence_before(self) -> torch.Tensor:
        return self.clean_probs.amax(1)

    def set_scores(self, probs: torch.Tensor) -> None:
        """Adopt the adversarial's class probabilities from a pass the caller made anyway."""
        if probs.ndim != 2 or probs.shape[0] != self.adversarial.shape[0]:
            raise ValueError(f"probabilities of shape {tuple(probs.shape)} do not match a batch of {self.adversarial.shape[0]}")
        conf, pred = probs.max(1)
        self._after = (pred, conf)

    def _scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._after is None:
            self.set_scores(self._score(self.adversarial).float().softmax(1))
        assert self._after is not None
        return self._after

    @property
    def pred_after(self) -> torch.Tensor:
        return self._scores()[0]

    @property
    def confidence_after(self) -> torch.Tensor:
        return self._scores()[1]

    @property
    def success(self) -> torch.Tensor:
        return is_success(self.pred_after, self.labels, self.target)

    @property
    def success_rate(self) -> float:
        ok = self.success
        return float(ok.float().mean()) if ok.numel() else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-ready aggregates: success rate, median norms, query counts, time."""
        ok = self.success
        def med(t: torch.Tensor) -> float | None:
            return float(t[ok].median()) if bool(ok.any()) else None
        out = {
            "attack": self.attack,
            "images": int(ok.numel()),
            "success_rate": round(self.success_rate, 4),
            "successes": int(ok.sum()),
            "median_l2_successful": med(self.l2),
            "median_linf_successful": med(self.linf),
            "median_l0_successful": med(self.l0.float()),
            "forward_calls": self.forward_calls,
            "forward_images": self.forward_images,
            "backward_calls": self.backward_calls,
            "backward_images": self.backward_images,
            "iterations": self.iterations,
            "seconds": round(self.seconds, 4),
            "params": self.params,
        }
        out.update(self.extra)
        return out


# --------------------------------------------------------------------------- checks


def check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor, not {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W); got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1]; got {images.dtype}")
    if images.numel() and (float(images.min()) < 0 or float(images.max()) > 1):
        raise ValueError("images must lie in [0, 1]")


def check_positive(name: str, value: float, *, upper: float | None = None, allow_zero: bool = False) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}; got {value}")
    if upper is not None and value > upper:
        raise ValueError(f"{name} must be <= {upper}; got {value}")


def check_int(name: str, value: int, *, low: int = 1, high: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be between {low} and {high if high is not None else 'any'}; got {value}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def prepare(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, target: int | torch.Tensor | None,
            num_classes: int | None = None, *, clean_logits: Callable[[CountingModel, torch.Tensor], torch.Tensor] | None = None,
            lazy_clean: bool = False
            ) -> tuple[CountingModel, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Validate inputs; return the counting model, a private copy of the images, labels, target and clean logits.

    ``clean_logits`` lets an attack obtain the clean logits from a forward pass it needs anyway
    (FGSM's gradient pass) instead of a separate no-grad pass. With ``lazy_clean`` and labels given, no clean pass
    is made at all (logits and predictions come back as None; the result scores the clean tiles only if asked, and
    the attack checks the labels' range with :func:`check_classes` on its first pass).
    """
    check_images(images)
    device = model_device(model)
    if images.device != device:
        raise ValueError(f"images are on {images.device} but the model is on {device}")
    counted = CountingModel(model)
    x = images.detach().clone()
    logits = pred = None
    if not (lazy_clean and labels is not None):
        if clean_logits is None:
            with torch.no_grad():
                logits = counted(x)
        else:
            logits = clean_logits(counted, x)
        pred = logits.detach().argmax(1)
    n_cls = num_classes or (None if logits is None else logits.shape[1])
    if labels is None:
        assert pred is not None
        y = pred.clone()
    else:
        if not isinstance(labels, torch.Tensor) or labels.shape != (x.shape[0],):
            raise ValueError(f"labels must be a tensor of shape ({x.shape[0]},)")
        y = labels.detach().to(device=device, dtype=torch.long).clone()
        if bool((y < 0).any()) or (n_cls is not None and bool((y >= n_cls).any())):
            raise ValueError(f"labels must be class indices in [0, {n_cls or 'classes'})")
    t = None
    if target is not None:
        t = torch.as_tensor(target, device=device, dtype=torch.long).clone()
        if t.ndim == 0:
            t = t.expand(x.shape[0]).clone()
        if t.shape != (x.shape[0],) or bool((t < 0).any()) or (n_cls is not None and bool((t >= n_cls).any())):
            raise ValueError(f"target must be a class index in [0, {n_cls or 'classes'}) or one per image")
    return counted, x, y, t, logits, pred


def check_classes(logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None) -> None:
    """The range check of labels and target that :func:`prepare` leaves to the first pass under ``lazy_clean``."""
    n_cls = logits.shape[1]
    if bool((labels >= n_cls).any()):
        raise ValueError(f"labels must be class indices in [0, {n_cls})")
    if target is not None and bool((target >= n_cls).any()):
        raise ValueError(f"target must be a class index in [0, {n_cls}) or one per image")


def is_success(pred: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    return pred == target if target is not None else pred != labels


def confirmed(counted: CountingModel, adv: torch.Tensor, ok: torch.Tensor, labels: torch.Tensor,
              target: torch.Tensor | None) -> torch.Tensor:
    """``ok`` (success read off a differentiated pass), re-checked by a pass without gradients where those two can
    disagree: a model flagged ``approximate_gradients`` (bf16 autocast on the differentiated passes only). Otherwise
    ``ok`` as it is, at no cost. Early stopping uses it, so a sample is never frozen on a success the model's own
    float32 pass would refuse."""
    if not getattr(counted.model, "approximate_gradients", False) or not bool(ok.any()):
        return ok
    idx = ok.nonzero().squeeze(1)
    with torch.no_grad():
        pred = counted(adv[idx].detach()).argmax(1)
    out = ok.clone()
    out[idx] = is_success(pred, labels[idx], None if target is None else target[idx])
    return out


def finish(name: str, counted: CountingModel, clean: torch.Tensor, adv: torch.Tensor, labels: torch.Tensor,
           target: torch.Tensor | None, clean_logits: torch.Tensor | None, iterations: int, started: float,
           params: dict[str, Any], extra: dict[str, Any] | None = None) -> AttackResult:
    """Build the result of an attack: norms now, the adversarial's predictions only when asked (see AttackResult)."""
    delta = (adv - clean).flatten(1)
    changed = (adv != clean).any(dim=1).flatten(1)  # a pixel counts once whatever its channels
    return AttackResult(
        attack=name, adversarial=adv.detach(), labels=labels, target=target, clean=clean,
        l0=changed.sum(1), l2=delta.norm(dim=1), linf=delta.abs().amax(dim=1) if delta.shape[1] else delta.sum(1),
        forward_calls=counted.forward_calls, forward_images=counted.forward_images,
        backward_calls=counted.backward_calls, backward_images=counted.backward_images,
        iterations=iterations, seconds=time.perf_counter() - started, params=params, extra=extra or {},
        scorer=counted.model, known_clean_logits=None if clean_logits is None else clean_logits.detach(),
    )


def seeded_generator(seed: int | None, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(0 if seed is None else seed)
    return gen



def quantise(x: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit grid a PNG holds."""
    return (x * 255).round().clamp(0, 255) / 255


@torch.no_grad()
def scale_onto_grid(counted: CountingModel, x: torch.Tensor, delta: torch.Tensor, labels: torch.Tensor,
                    target: torch.Tensor | None, *, ratio: float = 1.1, coarse: int = 16, fine: int = 8,
                    chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The smallest scale s >= 1 (to a factor ratio^(1/fine)) at which round8(x + s * delta) still fools the model.

    For minimal-perturbation attacks, whose float solution sits just past the boundary and can fall
    back after 8-bit rounding. The candidate scales of all images are scored as batches: a coarse
    geometric grid ratio^1 .. ratio^coarse, then ``fine`` steps inside the first bracket that fools.
    Returns the rounded adversarials (the unscaled rounding where no scale fools), their success
    and the scale used.
    """
    def fools(xs: torch.Tensor, ds: torch.Tensor, ys: torch.Tensor, ts: torch.Tensor | None, scales: torch.Tensor) -> torch.Tensor:
        n, k = scales.shape
        cand = quantise((xs[:, None] + scales.view(n, k, 1, 1, 1) * ds[:, None]).clamp(0, 1)).flatten(0, 1)
        preds = torch.cat([counted(cand[i:i + chunk]).argmax(1) for i in range(0, n * k, chunk)]).view(n, k)
        return is_success(preds, ys[:, None], None if ts is None else ts[:, None])

    scale = torch.ones(x.shape[0], device=x.device, dtype=x.dtype)
    ok = fools(x, delta, labels, target, scale[:, None])[:, 0]
    idx = (~ok).nonzero().squeeze(1)
    if idx.numel():
        xs, ds, ys = x[idx], delta[idx], labels[idx]
        ts = None if target is None else target[idx]
        powers = ratio ** torch.arange(1, coarse + 1, device=x.device, dtype=x.dtype)
        hit = fools(xs, ds, ys, ts, powers.expand(idx.numel(), coarse))
        found = hit.any(1)
        upper = powers[hit.float().argmax(1)]  # the first coarse scale that fools
        if bool(found.any()):
            steps = ratio ** (torch.arange(1, fine + 1, device=x.device, dtype=x.dtype) / fine - 1)  # (1/ratio, 1]
            f = found.nonzero().squeeze(1)
            fine_hit = fools(xs[f], ds[f], ys[f], None if ts is None else ts[f], upper[f, None] * steps[None])
            upper[f] = torch.where(fine_hit.any(1), upper[f] * steps[fine_hit.float().argmax(1)], upper[f])
        scale[idx] = torch.where(found, upper, torch.ones_like(upper))
        ok[idx] = found
    return quantise((x + scale.view(-1, 1, 1, 1) * delta).clamp(0, 1)), ok, scale
