"""``medfool results``: real runs of every registered attack on the sample tiles, for the site.

Each runner attacks tiles the reference model classifies correctly with a stated budget (small
enough for two CPU cores), and writes ``<out>/<name>/report.json`` (a summary) plus a figure.
Nothing here is typed in: every number on an attack page comes from these runs.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Callable

import torch

from .model import TileClassifier, default_device, load_model
from .registry import IMPLEMENTATIONS, resolve
from .report import comparison_figure, gallery_figure, quantise, save_png
from .tiles import CLASSES, read_tile, sample_tiles

Batch = tuple[torch.Tensor, torch.Tensor, list[str]]


def correct_batches(model: torch.nn.Module, device: torch.device) -> list[Batch]:
    """The sample tiles the model gets right, one batch per tile size."""
    groups: dict[int, list[tuple[torch.Tensor, int, str]]] = {}
    for t in sample_tiles():
        x = read_tile(t.path)
        groups.setdefault(x.shape[-1], []).append((x, t.index, t.name))
    out = []
    for items in groups.values():
        x = torch.stack([i[0] for i in items]).to(device)
        y = torch.tensor([i[1] for i in items], device=device)
        with torch.no_grad():
            ok = model(x).argmax(1) == y
        names = [i[2] for i, k in zip(items, ok.tolist()) if k]
        out.append((x[ok], y[ok], names))
    return out


def _med(values: list[torch.Tensor]) -> float | None:
    v = torch.cat(values) if values else torch.empty(0)
    return float(v.median()) if v.numel() else None


def _example_figure(model: TileClassifier, folder: Path, x0: torch.Tensor, adv0: torch.Tensor) -> None:
    q0 = quantise(adv0)
    with torch.no_grad():
        p0, p1 = model(x0[None]).softmax(1)[0], model(q0[None]).softmax(1)[0]
    comparison_figure(x0, q0, (CLASSES[int(p0.argmax())], float(p0.max())), (CLASSES[int(p1.argmax())], float(p1.max())),
                      folder / "comparison.png")


def _per_tile_attack(name: str, params: dict[str, Any], limit: int | None = None) -> Callable[..., dict[str, Any]]:
    """Runner for attacks that take a batch of tiles and return an AttackResult."""

    def run(model: TileClassifier, batches: list[Batch], folder: Path) -> dict[str, Any]:
        func = resolve(name)
        images = successes = quant_ok = 0
        seconds = 0.0
        l2: list[torch.Tensor] = []
        linf: list[torch.Tensor] = []
        l0: list[torch.Tensor] = []
        counts = {"forward_images": 0, "backward_images": 0}
        extra: dict[str, list[float]] = {}
        example = None
        for x, y, names in batches:
            if limit is not None:
                x, y, names = x[:limit], y[:limit], names[:limit]
            if x.shape[0] == 0:
                continue
            r = func(model, x, y, **params)
            with torch.no_grad():
                pq = model(quantise(r.adversarial)).argmax(1)
            quant_ok += int(((pq != y) if r.target is None else (pq == r.target)).sum())
            images += x.shape[0]
            successes += int(r.success.sum())
            seconds += r.seconds
            l2.append(r.l2[r.success])
            linf.append(r.linf[r.success])
            l0.append(r.l0[r.success].float())
            counts["forward_images"] += r.forward_images
            counts["backward_images"] += r.backward_images
            for key in ("rho", "expected_success"):
                if key in r.extra:
                    vals = r.extra[key][r.success] if key == "rho" else r.extra[key]
                    extra.setdefault(key, []).extend(vals.tolist())
            tum = (y == CLASSES.index("TUM")) & r.success
            if example is None and bool(tum.any()):
                i = int(tum.nonzero()[0])
                example = (x[i], r.adversarial[i], names[i])
            elif example is None and bool(r.success.any()):
                i = int(r.success.nonzero()[0])
                example = (x[i], r.adversarial[i], names[i])
        summary: dict[str, Any] = {"attack": name, "images": images, "successes": successes,
                                   "success_rate": successes / max(images, 1), "success_after_8bit_quantisation": quant_ok,
                                   "median_l2": _med(l2), "median_linf_255": None if _med(linf) is None else _med(linf) * 255,
                                   "median_l0": _med(l0), **counts, "seconds": round(seconds, 3)}
        if "rho" in extra:
            summary["rho_mean"] = sum(extra["rho"]) / len(extra["rho"])
        if "expected_success" in extra:
            summary["expected_success_held_out_draws"] = sum(extra["expected_success"]) / len(extra["expected_success"])
        if example is not None:
            _example_figure(model, folder, example[0], example[1])
            summary["example_tile"] = example[2]
        return summary

    return run


def _eot_runner(model: TileClassifier, batches: list[Batch], folder: Path) -> dict[str, Any]:
    from .attacks import eot, expected_success, pgd

    x, y, names = batches[0]
    x, y, names = x[:12], y[:12], names[:12]
    r = eot(model, x, y, eps=8 / 255, steps=10, samples=8)
    p = pgd(model, x, y, eps=8 / 255, steps=10)
    p_exp = expected_success(model, p.adversarial, y, seed=r.params["seed"] + 1_000_003)
    i = int(r.extra["expected_success"].argmax())
    _example_figure(model, folder, x[i], r.adversarial[i])
    return {"attack": "eot", "images": x.shape[0], "successes": int(r.success.sum()), "success_rate": r.success_rate,
            "expected_success_held_out_draws": r.extra["expected_success_mean"],
            "pgd_expected_success_same_draws": float(p_exp.mean()), "pgd_success_untransformed": p.success_rate,
            "median_linf_255": float(r.linf.median() * 255), "forward_images": r.forward_images,
            "backward_images": r.backward_images, "seconds": round(r.seconds, 3), "example_tile": names[i],
            "params": {k: v for k, v in r.params.items() if k in ("eps", "steps", "samples", "eval_draws")}}


def _patch_runner(model: TileClassifier, batches: list[Batch], folder: Path) -> dict[str, Any]:
    from .attacks import adversarial_patch, placement_success

    norm = CLASSES.index("NORM")
    x, y, _ = batches[-1]
    keep = y != norm
    x, y = x[keep][:16], y[keep][:16]
    summary: dict[str, Any] = {"attack": "patch", "target": "NORM", "train_tiles": x.shape[0], "by_area": {}}
    for area in (0.05, 0.1, 0.2):
        r = adversarial_patch(model, x, y, target=norm, area=area, steps=40)
        held = [placement_success(model, hx[hy != norm], r.extra["patch"], target=norm, area=area, draws=4)
                for hx, hy, _ in batches[:-1]]
        summary["by_area"][f"{area:.0%}"] = {
            "on_training_tiles": r.extra["placements"],
            "on_other_tiles": held[0] if held else None,
            "seconds": round(r.seconds, 2),
        }
        if area == 0.1:
            save_png(r.extra["patch"], folder / "patch.png")
            i = int(r.success.nonzero()[0]) if bool(r.success.any()) else 0
            _example_figure(model, folder, x[i], r.adversarial[i])
    a10 = summary["by_area"]["10%"]["on_training_tiles"]
    summary.update({"success_rate": a10["adversarial"], "grey_control": a10["grey"], "noise_control": a10["noise"],
                    "params": {"steps": 40, "resolution": 48, "lr": 0.05}})
    return summary


def _fooling_runner(model: TileClassifier, batches: list[Batch], folder: Path) -> dict[str, Any]:
    from .attacks import fooling_images

    r = fooling_images(model, generations=100)
    labels = [f"{CLASSES[int(c)]} {float(p):.2%}" for c, p in zip(r.classes, r.confidence)]
    gallery_figure(r.images, labels, folder / "gallery.png")
    s = r.summary()
    s["classes"] = [CLASSES[int(c)] for c in r.classes]
    s["images"] = len(labels)
    s["successes"] = int(r.success.sum())
    return s


def _badnets_runner(model: TileClassifier, batches: list[Batch], folder: Path) -> dict[str, Any]:
    from .attacks.backdoor import apply_trigger, badnets, make_trigger
    from .tiles import split
    from .training import TrainConfig, crop_bank

    train_tiles, held_out = split(sample_tiles())
    config = TrainConfig(steps=400, crop=64)
    bank = crop_bank(train_tiles, crop=config.crop)
    summary: dict[str, Any] = {"attack": "badnets", "target": "NORM", "by_trigger": {}}
    for trigger, size in (("pixel-pattern", 8), ("ink-mark", 12)):
        r = badnets(bank, held_out, config=config, trigger=trigger, trigger_size=size, fraction=0.1, device=default_device())
        m, c = r.metrics["backdoored_model"], r.metrics["clean_model"]
        summary["by_trigger"][trigger] = {"clean_accuracy_clean_model": c["clean_accuracy"], "clean_accuracy_backdoored": m["clean_accuracy"],
                                          "attack_success_rate": m["attack_success_rate"], "robust_accuracy": m["robust_accuracy"],
                                          "asr_of_clean_model": c["attack_success_rate"], "trigger_size": size}
        if trigger == "ink-mark":
            colour, alpha = make_trigger(trigger, size)
            picks = torch.linspace(0, len(bank.images) - 1, 5).long()
            stamped = apply_trigger(bank.images[picks].float().div(255), colour, alpha)
            with torch.no_grad():
                preds = r.backdoored(stamped.to(next(r.backdoored.parameters()).device)).argmax(1).tolist()
            gallery_figure(stamped, [f"{CLASSES[int(bank.labels[i])]} -> {CLASSES[p]}" for i, p in zip(picks, preds)], folder / "triggered.png", scale=3)
    first = summary["by_trigger"]["pixel-pattern"]
    summary.update({"success_rate": first["attack_success_rate"], "held_out_crops": r.metrics["held_out_crops"],
                    "params": {"fraction": 0.1, "mode": "all-to-one", "steps": config.steps, "crop": config.crop}})
    return summary


_POISONING: dict[str, Any] = {}


def _poisoning_result() -> Any:
    """One generative-poisoning experiment (it also times the direct-gradient baseline), shared by both entries."""
    if "result" not in _POISONING:
        from .attacks.poisoning import generative_poisoning
        from .tiles import split
        from .training import crop_bank

        train_tiles, held_out = split(sample_tiles())
        _POISONING["result"] = generative_poisoning(crop_bank(train_tiles, crop=64), held_out, fractions=(0.1, 0.2, 0.3),
                                                    repeats=3, device=default_device())
    return _POISONING["result"]


def _poisoning_summary(r: Any) -> dict[str, Any]:
    m = r.metrics
    row = m["by_fraction"][f"{r.params['fraction']:g}"]
    t = m["timing"]
    return {
        "retrained_clean": f"{m['retrained_clean']['accuracy']:.1%} ({m['retrained_clean']['loss']:.3f})",
        "by_fraction": {f"{float(k):.0%}": v for k, v in m["by_fraction"].items()},
        "accuracy_drop_vs_noise": row["noise"]["accuracy"] - row["generative"]["accuracy"],
        "accuracy_drop_vs_label_flip": row["label-flip"]["accuracy"] - row["generative"]["accuracy"],
        "accuracy_drop_reward_generator_vs_noise": row["noise"]["accuracy"] - row["generative-reward"]["accuracy"],
        "timing": {"generative_s_per_tile": t["generative_s_per_tile"], "direct_s_per_tile": t.get("direct_s_per_tile"),
                   "speedup_generation_only": t.get("speedup_generation_only"), "generator_training_s": t["generator_training_s"]},
        "countermeasure": {k: v for k, v in m["countermeasure"].items() if k != "quantile"},
        "held_out_crops": m["held_out_crops"],
        "params": {"fraction": r.params["fraction"], "objective": r.params["objective"], "eps_255": round(r.params["eps"] * 255),
                   "labels": r.params["labels"], "generator_steps": r.params["generator_steps"],
                   "retrainings_averaged": r.params["repeats"]},
    }


def _generative_runner(model: TileClassifier, batches: list[Batch], folder: Path) -> dict[str, Any]:
    from .attacks.poisoning import example_captions

    r = _poisoning_result()
    clean, poisoned, labels = r.examples
    gallery_figure(torch.cat([clean, poisoned]).cpu(), example_captions(labels), folder / "poisoned.png", scale=3)
    return _poisoning_summary(r)


def _direct_runner(model: TileClassifier, batches: list[Batch], folder: Path) -> dict[str, Any]:
    s = _poisoning_summary(_poisoning_result())
    return {"timing": s["timing"], "params": s["params"]}


RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "generative-poisoning": _generative_runner,
    "direct-gradient-poisoning": _direct_runner,
    "badnets": _badnets_runner,
    "fgsm": _per_tile_attack("fgsm", {"eps": 8 / 255}),
    "pgd": _per_tile_attack("pgd", {"eps": 8 / 255, "steps": 10}),
    "deepfool": _per_tile_attack("deepfool", {"overshoot": 0.02, "max_iter": 50}),
    "one-pixel": _per_tile_attack("one-pixel", {"pixels": 1, "population": 100, "generations": 10}, limit=2),
    "eot": _eot_runner,
    "patch": _patch_runner,
    "fooling-images": _fooling_runner,
}


def write_results(out: Path, only: list[str] | None = None) -> dict[str, dict[str, Any]]:
    device = default_device()
    model = load_model(device=device)
    batches = correct_batches(model, device)
    summaries: dict[str, dict[str, Any]] = {}
    for name in sorted(IMPLEMENTATIONS):
        if only and name not in only:
            continue
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        summary = RUNNERS[name](model, batches, folder)
        summary["device"] = str(device)
        summary["machine"] = f"{platform.machine()}, torch {torch.__version__}"
        (folder / "report.json").write_text(json.dumps({"summary": summary}, indent=2, default=float) + "\n", encoding="utf-8")
        summaries[name] = summary
    return summaries
