"""Run a universal pattern (UAP, common noise, UTAP): computed on the unit's support tiles, scored on its items.

The support tiles and the scored tiles are disjoint by construction (:func:`universal_units` refuses an overlap),
so every per-item figure is held-out. Beside each tile's result the record holds the success of a random sign
pattern of the same L-inf norm (``random_success``) and, for per-class patterns, whether the tile's class had
support tiles (``covered``).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from ..inputs.tiles import png_bytes, quantise
from ..registry import spec as spec_of
from ..targets.target import Target
from .outcome import Artifact, UnitOutcome
from .units import Unit

def pattern_png(delta: torch.Tensor, eps: float) -> bytes:
    """A pattern (or the first of per-class patterns) mapped from [-eps, eps] to [0, 1] for viewing."""
    d = delta[0] if delta.ndim == 4 else delta
    return png_bytes(((d / (2 * max(eps, 1e-12))) + 0.5).clamp(0, 1))


def run_universal(unit: Unit, target: Target, progress: Callable[..., None] | None, *, load_items: Callable[..., Any],
                  view: Callable[..., Any], probs: Callable[..., Any], scored: Callable[..., Any], outcome: Callable[..., Any],
                  positive: Callable[..., Any]) -> UnitOutcome:
    """Compute the pattern on the support tiles and score the unit's tiles; the executor passes its scoring helpers
    (``campaign/execute.py``), so that scoring is the same as for every other attack."""
    from ..attacks.universal import evaluate

    s = spec_of(unit.attack)
    kw = dict(unit.kwargs)
    started = time.perf_counter()
    xs, ys = load_items(unit.support, target.device)
    model, ys = view(unit, target, ys)
    call = dict(kw)
    if unit.target is not None:
        call["target"] = unit.target
    if progress is not None:
        call["progress"] = progress
    r = s.function_object()(model, xs, ys, **call)
    delta = r.extra["perturbation"]
    eps = float(r.params["eps"])
    covered_classes = r.extra.get("support_classes")
    extra: dict[str, Any] = {"attack_params": r.params, "support_tiles": xs.shape[0],
                             "on_support_tiles": round(r.success_rate, 4), "support_classes": covered_classes}
    artifacts = [Artifact("pattern.png", "image/png", pattern_png(delta, eps))]
    records = []
    if unit.items:
        x, y = load_items(unit.items, target.device)
        model, y = view(unit, target, y)
        p0 = probs(model, x)
        labels = y if y is not None else p0.argmax(1)
        goal = None if unit.target is None else torch.full_like(labels, unit.target)
        if delta.ndim == 4:  # a per-class pattern is picked by the tile's class
            labels_for = labels
        else:
            labels_for = None
        ev = evaluate(model, x, labels, delta, eps=eps, seed=int(kw.get("seed") or 0) + 4242, target=goal)
        per = {"random_success": ev["random_success"].float().cpu()}
        if labels_for is not None:
            per["covered"] = torch.tensor([float(int(c) in set(covered_classes or [])) for c in labels.tolist()])
        records = scored(unit, model, x, ev["adversarial"], labels, goal, p0, per, positive(unit, target))
        if unit.keep_images:
            artifacts += [Artifact(f"adversarial/{i}.png", "image/png", png_bytes(quantise(ev["adversarial"][i])))
                          for i in range(x.shape[0])]
    return outcome(unit, records, seconds=time.perf_counter() - started, forward_calls=r.forward_calls,
                    forward_images=r.forward_images, backward_calls=r.backward_calls, backward_images=r.backward_images,
                    iterations=r.iterations, extra=extra, artifacts=artifacts)
