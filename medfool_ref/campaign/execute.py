"""Run one unit on a target: the single code path through which every attack is run over data.

The unit's items are read from their paths and stacked on the target's device, the attack
function named by the registry is called with the unit's parameters, and the outcome is scored
the same way for every caller: per item, the predictions and confidences before and after,
success, L0/L2/L-inf norms, and the same again for the adversarial rounded to 8 bits (what a
saved PNG holds). Depends on torch, numpy and Pillow (never on the catalog).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch import nn

from ..attacks._core import AttackResult, is_success
from ..inputs.tiles import png_bytes, quantise, read_tile
from ..registry import spec as spec_of
from ..targets.target import Target
from .outcome import Artifact, ItemRecord, UnitOutcome
from .units import Item, Unit

Progress = Callable[..., None]
PREDICT = "predict"  # the clean pass: predictions only, no attack


def load_items(items: tuple[Item, ...] | list[Item], device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read a batch of same-sized tiles (files, or regions of a whole slide); labels only when every item has one."""
    if any(i.region is not None for i in items):
        from ..inputs.slides import read_regions

        images = read_regions(items)
    else:
        images = [read_tile(i.path) for i in items]
    sizes = {tuple(x.shape) for x in images}
    if len(sizes) > 1:
        raise ValueError(f"a unit's tiles must share one size; got {sorted(sizes)}")
    x = torch.stack(images).to(device)
    labels = [i.label for i in items]
    y = None if any(v is None for v in labels) else torch.tensor(labels, device=device)
    return x, y


def run_attack(name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, *,
               target: int | None = None, params: dict[str, Any] | None = None, progress: Progress | None = None) -> AttackResult:
    """Call a registered tile attack (inputs "tiles") with keyword parameters: the one place that does so."""
    s = spec_of(name)
    if s.inputs != "tiles":
        raise ValueError(f"{name} does not attack a batch of tiles on its own (its inputs: {s.inputs})")
    kwargs = dict(params or {})
    if target is not None:
        if s.targeted == "never":
            raise ValueError(f"{name} is untargeted; a target class is not accepted")
        kwargs["target"] = target
    if progress is not None and "progress" in _signature(s.function_object()):
        kwargs["progress"] = progress
    return s.function_object()(model, images, labels, **kwargs)


def _signature(func: Callable[..., Any]) -> set[str]:
    import inspect

    return set(inspect.signature(func).parameters)


def execute(unit: Unit, target: Target, *, progress: Progress | None = None) -> UnitOutcome:
    """Run ``unit`` against ``target`` and score it."""
    started = time.perf_counter()
    if unit.attack == PREDICT:
        out = _predict(unit, target)
    elif unit.attack == "certify":  # randomized smoothing's CERTIFY (campaign/certify.py; issue 22)
        from .certify_exec import run_certify_unit

        out = run_certify_unit(unit, target, progress)
    else:
        kind = spec_of(unit.attack).inputs
        if kind == "tiles+training" and unit.attack != "patch":  # a universal pattern (campaign/universal.py)
            from .universal import run_universal

            def run_kind(u: Unit, t: Target, p: Progress | None) -> UnitOutcome:
                return run_universal(u, t, p, load_items=load_items, view=view, probs=_probs, scored=_scored,
                                     outcome=_outcome, positive=_positive)
        else:
            run_kind = {"tiles": _tiles, "tiles+training": _patch, "none": _fooling, "training": _training}[kind]
        out = run_kind(unit, target, progress)
    out.seconds = out.seconds or time.perf_counter() - started
    out.device = str(target.device)
    return out


def _outcome(unit: Unit, records: list[ItemRecord], **kw: Any) -> UnitOutcome:
    return UnitOutcome(unit.key, unit.attack, unit.label, unit.kwargs, unit.target, records, **kw)


@torch.no_grad()
def _probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).float().softmax(1)


def _predict(unit: Unit, target: Target) -> UnitOutcome:
    x, _ = load_items(unit.items, target.device)
    p = _probs(target.model, x)
    conf, pred = p.max(1)
    finite = torch.isfinite(p).all(1).tolist()  # a model's NaN/inf output: a model error for that tile, never a prediction
    records = [ItemRecord(i.id, i.name, i.path, i.label, None, int(pr), float(c), extra={"probs": [round(float(v), 6) for v in row],
                                                                                       "finite": ok})
               for i, pr, c, row, ok in zip(unit.items, pred.tolist(), conf.tolist(), p.cpu(), finite)]
    return _outcome(unit, records, seconds=0.0, forward_calls=1, forward_images=x.shape[0])


def _clean_probs(model: nn.Module, x: torch.Tensor, r: AttackResult) -> torch.Tensor:
    """The clean probabilities: taken from the attack's own clean pass (score once), except on a model whose
    differentiated passes are approximate (bf16), where the clean pass is made again in float32."""
    if getattr(model, "approximate_gradients", False):
        return _probs(model, x)
    return r.clean_probs  # the attack's own clean pass, or one made now (an attack that skipped it, PGD)


def _norms(x: torch.Tensor, adv: torch.Tensor) -> tuple[list[int], list[float], list[float]]:
    d = (adv - x).flatten(1)
    l0 = ((adv * 255).round() != (x * 255).round()).any(dim=1).flatten(1).sum(1)  # on the 8-bit grid, a pixel once
    return l0.tolist(), d.norm(dim=1).tolist(), d.abs().amax(dim=1).tolist()


def view(unit: Unit, target: Target, y: torch.Tensor | None) -> tuple[nn.Module, torch.Tensor | None]:
    """The model a unit attacks and its labels: the classifier, or (option view="decision") the tumour decision
    as a two-class model whose labels are the tiles' true decisions."""
    if unit.opts.get("view") != "decision":
        return target.model, y
    pos = torch.tensor(target.positive_indices, device=target.device)
    return target.decision_model(), None if y is None else torch.isin(y, pos).long()


def _scored(unit: Unit, model: nn.Module, x: torch.Tensor, adv: torch.Tensor, labels: torch.Tensor, goal: torch.Tensor | None,
            p0: torch.Tensor, extra: dict[str, torch.Tensor] | None = None, positive: list[int] | None = None) -> list[ItemRecord]:
    """Per-item records for a batch of adversarials: float and 8-bit predictions, success and norms (and, given
    the positive classes, P(positive) before and after)."""
    q = quantise(adv)
    p1 = _probs(model, adv)
    pq = p1 if torch.equal(q, adv) else _probs(model, q)  # an adversarial already on the 8-bit grid is scored once
    extra = dict(extra or {})
    extra["finite_after"], extra["finite_8bit"] = torch.isfinite(p1).all(1).cpu(), torch.isfinite(pq).all(1).cpu()
    if positive:
        for key, p in (("p_positive_before", p0), ("p_positive_after", p1), ("p_positive_8bit", pq)):
            extra[key] = p[:, positive].sum(1).cpu()
    c0, y0 = p0.max(1)
    c1, y1 = p1.max(1)
    cq, yq = pq.max(1)
    ok, okq = is_success(y1, labels, goal), is_success(yq, labels, goal)
    n_f, n_q = _norms(x, adv), _norms(x, q)
    per_item = {k: v.tolist() for k, v in extra.items()}
    records = []
    for i, item in enumerate(unit.items):
        records.append(ItemRecord(
            item.id, item.name, item.path, int(labels[i]), None if goal is None else int(goal[i]), int(y0[i]), float(c0[i]),
            int(y1[i]), float(c1[i]), bool(ok[i]), int(yq[i]), float(cq[i]), bool(okq[i]),
            n_f[0][i], n_f[1][i], n_f[2][i], n_q[0][i], n_q[1][i], n_q[2][i],
            extra={k: v[i] for k, v in per_item.items()} | ({} if item.label is not None else {"label_source": "prediction"})))
    return records


def _split_extra(extra: dict[str, Any], n: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Per-item tensors (shape (n,)) apart from unit-level JSON values."""
    per, unit = {}, {}
    for k, v in extra.items():
        if isinstance(v, torch.Tensor):
            if v.ndim == 1 and v.shape[0] == n:
                per[k] = v.detach().float().cpu()
            elif v.numel() == 1:
                unit[k] = float(v)
        elif isinstance(v, (int, float, str, bool, dict, type(None))):
            unit[k] = v
    return per, unit


def _positive(unit: Unit, target: Target) -> list[int] | None:
    return target.positive_indices if unit.opts.get("view") != "decision" else None


def _tiles(unit: Unit, target: Target, progress: Progress | None) -> UnitOutcome:
    x, y = load_items(unit.items, target.device)
    model, y = view(unit, target, y)
    r = run_attack(unit.attack, model, x, y, target=unit.target, params=unit.kwargs, progress=progress)
    per, unit_extra = _split_extra(r.extra, x.shape[0])
    draws = int(unit.opts.get("transform_draws", 0))
    if draws:
        from ..attacks.eot import HELD_OUT_SEED_OFFSET, expected_success

        per["expected_success"] = expected_success(model, r.adversarial, r.labels, target=r.target, draws=draws,
                                                   seed=int(unit.kwargs.get("seed") or 0) + HELD_OUT_SEED_OFFSET).cpu()
    p0 = _clean_probs(model, x, r)
    records = _scored(unit, model, x, r.adversarial, r.labels, r.target, p0, per, _positive(unit, target))
    artifacts = [Artifact(f"adversarial/{i}.png", "image/png", png_bytes(quantise(r.adversarial[i])))
                 for i in range(x.shape[0])] if unit.keep_images else []
    return _outcome(unit, records, seconds=r.seconds, forward_calls=r.forward_calls, forward_images=r.forward_images,
                    backward_calls=r.backward_calls, backward_images=r.backward_images, iterations=r.iterations,
                    extra={"attack_params": r.params, **unit_extra}, artifacts=artifacts)


def _patch(unit: Unit, target: Target, progress: Progress | None) -> UnitOutcome:
    """A universal patch: trained on the support tiles (or read from the patch file), applied to the unit's tiles."""
    from ..attacks._core import seeded_generator
    from ..attacks.patch import adversarial_patch, apply_patch, place, placement_success

    kw = unit.kwargs
    if unit.target is None:
        raise ValueError("patch needs a target class (the class the patch should force, e.g. NORM)")
    area, seed, draws = kw.get("area", 0.1), kw.get("seed", 0), kw.get("eval_draws", 8)
    started = time.perf_counter()
    extra: dict[str, Any] = {}
    counts: dict[str, int] = {}
    if unit.opts.get("support_role") == "patch":
        patch = read_tile(unit.support[0].path).to(target.device)
        extra["patch_from"] = unit.support[0].name
    else:
        xs, ys = load_items(unit.support, target.device)
        model, ys = view(unit, target, ys)
        params = {k: v for k, v in kw.items() if k != "patch_file"}
        r = adversarial_patch(model, xs, ys, target=unit.target, progress=progress, **params)
        patch = r.extra["patch"]
        extra["on_training_tiles"] = r.extra["placements"]
        extra["train_tiles"] = xs.shape[0]
        counts = {"forward_calls": r.forward_calls, "forward_images": r.forward_images,
                  "backward_calls": r.backward_calls, "backward_images": r.backward_images, "iterations": r.iterations}
    records: list[ItemRecord] = []
    artifacts = [Artifact("patch.png", "image/png", png_bytes(patch))]
    if unit.items:
        x, y = load_items(unit.items, target.device)
        model, y = view(unit, target, y)
        p0 = _probs(model, x)
        labels = y if y is not None else p0.argmax(1)
        goal = torch.full_like(labels, unit.target)
        eligible = labels != unit.target
        if bool(eligible.any()):
            extra["on_other_tiles"] = placement_success(model, x[eligible], patch, target=unit.target, area=area,
                                                        draws=draws, seed=seed + 12_345)
        gen = seeded_generator(seed, target.device)
        where = place(x.shape[0], tuple(x.shape[-2:]), area, gen, target.device, scale_jitter=0.0, max_rotation_deg=0.0,
                      centre=True)
        with torch.no_grad():
            patched, mask = apply_patch(x, patch, where)
        extra["measured_area"] = float(mask.mean())
        records = _scored(unit, model, x, patched, labels, goal, p0, positive=_positive(unit, target))
        if unit.keep_images:
            artifacts += [Artifact(f"adversarial/{i}.png", "image/png", png_bytes(quantise(patched[i]))) for i in range(x.shape[0])]
    return _outcome(unit, records, seconds=time.perf_counter() - started, extra=extra, artifacts=artifacts, **counts)


def _fooling(unit: Unit, target: Target, progress: Progress | None) -> UnitOutcome:
    from ..attacks.fooling import fooling_images

    classes = [unit.target] if unit.target is not None else None
    r = fooling_images(target.model, classes=classes, progress=progress, **unit.kwargs)
    p = _probs(target.model, r.images)
    conf, pred = p.max(1)
    records = []
    for k, c in enumerate(r.classes.tolist()):
        name = target.classes[c]
        records.append(ItemRecord(f"class:{name}", name, None, None, c, None, None, int(pred[k]), float(conf[k]), bool(r.success[k]),
                                  extra={"target_confidence": float(r.confidence[k]), "generations": int(r.generations[k])}))
    artifacts = [Artifact(f"fooling/{target.classes[c]}.png", "image/png", png_bytes(r.images[k]))
                 for k, c in enumerate(r.classes.tolist())]
    return _outcome(unit, records, seconds=r.seconds, forward_images=r.forward_images, extra={"attack_params": r.params},
                    artifacts=artifacts)


def _training(unit: Unit, target: Target, progress: Progress | None) -> UnitOutcome:
    """A training-time attack: the unit's items are the training tiles, its support the held-out tiles."""
    if unit.attack == "badnets":
        return _badnets(unit, target, progress)
    if unit.attack == "generative-poisoning":
        return _generative(unit, target, progress)
    raise ValueError(f"{unit.attack} is reported from another attack's run, not run on its own")


def _badnets(unit: Unit, target: Target, progress: Progress | None) -> UnitOutcome:
    from ..attacks.backdoor import apply_trigger, badnets, make_trigger
    from ..targets.reference import model_bytes
    from ..training.loop import TrainConfig, crop_bank

    kw = unit.kwargs
    config = TrainConfig(**{k: kw[k] for k in ("steps", "crop", "batch_size", "lr", "width", "seed") if k in kw})
    if unit.target is None:
        raise ValueError("badnets needs a target class")
    bank = crop_bank(list(unit.items), crop=config.crop)
    attack_kw = {k: kw[k] for k in ("fraction", "mode", "trigger", "trigger_size") if k in kw}
    r = badnets(bank, list(unit.support), config=config, target=unit.target, device=target.device, progress=progress, **attack_kw)
    colour, alpha = make_trigger(r.params["trigger"], r.params["trigger_size"])
    picks = torch.linspace(0, len(bank.images) - 1, 5).long()
    stamped = apply_trigger(bank.images[picks].float().div(255), colour, alpha)
    with torch.no_grad():
        preds = r.backdoored(stamped.to(target.device)).argmax(1).tolist()
    examples = [{"label": int(bank.labels[i]), "pred": p} for i, p in zip(picks.tolist(), preds)]
    artifacts = [Artifact("backdoored.safetensors", "application/octet-stream", model_bytes(r.backdoored, config.width))]
    artifacts += [Artifact(f"example/{k}.png", "image/png", png_bytes(stamped[k])) for k in range(stamped.shape[0])]
    return _outcome(unit, [], seconds=0.0, extra={"metrics": r.metrics, "attack_params": r.params, "examples": examples},
                    artifacts=artifacts)


def _generative(unit: Unit, target: Target, progress: Progress | None) -> UnitOutcome:
    from ..attacks.poisoning import generative_poisoning
    from ..targets.reference import model_bytes
    from ..training.loop import TrainConfig, crop_bank

    kw = dict(unit.kwargs)
    seed = kw.get("seed", 0)
    deploy = TrainConfig(steps=kw.pop("deploy_steps", 300), crop=64, seed=seed)
    retrain = TrainConfig(steps=kw.pop("retrain_steps", 150), crop=64, lr=1e-3, seed=seed + 1)
    if "fractions" in kw:
        kw["fractions"] = tuple(kw["fractions"])
    bank = crop_bank(list(unit.items), crop=64)
    r = generative_poisoning(bank, list(unit.support), deploy=deploy, retrain=retrain, device=target.device,
                             progress=progress, **kw)
    clean, poisoned, labels = r.examples
    artifacts = [Artifact("poisoned.safetensors", "application/octet-stream", model_bytes(r.poisoned, deploy.width))]
    artifacts += [Artifact(f"example/clean-{k}.png", "image/png", png_bytes(clean[k])) for k in range(clean.shape[0])]
    artifacts += [Artifact(f"example/poisoned-{k}.png", "image/png", png_bytes(poisoned[k])) for k in range(poisoned.shape[0])]
    return _outcome(unit, [], seconds=0.0, extra={"metrics": r.metrics, "attack_params": r.params,
                                                   "examples": [{"label": int(v)} for v in labels.tolist()]},
                    artifacts=artifacts)
