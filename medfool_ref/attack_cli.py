"""``medfool attack``, ``medfool model train`` and ``medfool results``: running the reference attacks."""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

SKIP_PARAMS = {"target", "progress", "labels", "transforms", "classes", "config", "device", "deploy", "retrain", "fractions"}
TRAINING_ATTACKS = {"badnets", "generative-poisoning", "direct-gradient-poisoning"}


class ParamError(ValueError):
    pass


def _progress_bar(label: str) -> Callable[..., None]:
    """A plain stderr progress bar (no extra dependency)."""
    state = {"last": -1.0}

    def update(done: int, total: int, *extra: float) -> None:
        frac = done / max(total, 1)
        if frac - state["last"] < 0.02 and done != total:
            return
        state["last"] = frac
        bar = "#" * int(frac * 30)
        tail = f" loss {extra[0]:.3f}" if extra else ""
        sys.stderr.write(f"\r{label} [{bar:<30}] {done}/{total}{tail}")
        sys.stderr.flush()

    return update


def attack_params(func: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    sig = inspect.signature(func)
    return {n: p for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in SKIP_PARAMS}


def parse_sets(func: Callable[..., Any], pairs: list[str]) -> dict[str, Any]:
    """Turn ``key=value`` strings into typed keyword arguments of ``func``; unknown keys are errors."""
    params = attack_params(func)
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ParamError(f"--set {pair!r}: expected key=value")
        key, raw = (s.strip() for s in pair.split("=", 1))
        if key not in params:
            raise ParamError(f"--set {key}: unknown parameter; this attack takes {', '.join(sorted(params))}")
        out[key] = _coerce(key, raw, params[key])
    return out


def _coerce(key: str, raw: str, param: inspect.Parameter) -> Any:
    ann = str(param.annotation)
    default = param.default
    if raw.lower() == "none" and ("None" in ann or default is None):
        return None
    try:
        if isinstance(default, bool) or ann == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, int) or ann.startswith("int"):
            return int(raw)
        if isinstance(default, float) or ann.startswith("float"):
            return float(Fraction(raw)) if "/" in raw else float(raw)
    except (ValueError, ZeroDivisionError):
        raise ParamError(f"--set {key}={raw}: expected {ann}") from None
    return raw


def _class_index(value: str, classes: tuple[str, ...], what: str) -> int:
    if value.upper() in classes:
        return classes.index(value.upper())
    if value.isdigit() and int(value) < len(classes):
        return int(value)
    raise ParamError(f"{what} {value!r}: expected one of {', '.join(classes)} or an index 0-{len(classes) - 1}")


def run_attack(args: argparse.Namespace) -> int:
    import torch

    from .model import ModelFileError, default_device, load_model
    from .registry import IMPLEMENTATIONS, resolve
    from .report import comparison_figure, quantise, save_png
    from .tiles import TileError, read_tile

    if args.name not in IMPLEMENTATIONS:
        raise ParamError(f"unknown attack {args.name!r}; known: {', '.join(sorted(IMPLEMENTATIONS))}")
    if args.name in TRAINING_ATTACKS:
        verb = "badnets" if args.name == "badnets" else "generative"
        raise ParamError(f"{args.name} tampers with training, not with a tile: use 'medfool poison {verb} --out DIR'")
    func = resolve(args.name)
    sets = list(args.set or [])
    patch_file = None
    if args.name == "patch":
        rest = [p for p in sets if not p.startswith("patch_file=")]
        if len(rest) != len(sets):
            patch_file = sets[[p.startswith("patch_file=") for p in sets].index(True)].split("=", 1)[1]
        sets = rest
    kwargs = parse_sets(func, sets)
    if args.tile is None and args.name != "fooling-images":
        raise ParamError(f"--tile is required for {args.name}")
    try:
        device = default_device()
        model = load_model(args.model, device=device)
        image = read_tile(args.tile)[None].to(device) if args.tile is not None else None
    except (TileError, ModelFileError) as exc:
        raise ParamError(str(exc)) from None
    out = Path(args.out)
    if args.name == "fooling-images":
        return _run_fooling(model, func, kwargs, args, out)
    if args.name == "patch":
        return _run_patch(model, kwargs, args, image, out, patch_file)
    classes = model.classes
    sig = inspect.signature(func).parameters
    if args.target is not None:
        if "target" not in sig:
            raise ParamError(f"{args.name} is untargeted; --target is not accepted")
        kwargs["target"] = _class_index(args.target, classes, "--target")
    labels = None
    if args.label is not None:
        labels = torch.tensor([_class_index(args.label, classes, "--label")], device=device)
    if "progress" in sig:
        kwargs["progress"] = _progress_bar(args.name)
    try:
        result = func(model, image, labels, **kwargs)
    except ValueError as exc:
        raise ParamError(str(exc)) from None
    finally:
        if "progress" in kwargs:
            sys.stderr.write("\n")
    out.mkdir(parents=True, exist_ok=True)
    q = quantise(result.adversarial)
    with torch.no_grad():
        probs = model(q).softmax(1)
    pred_q = int(probs.argmax(1))
    target = kwargs.get("target")
    label = int(result.labels[0])
    success = (pred_q == target) if target is not None else (pred_q != label)
    save_png(q[0], out / "adversarial.png")
    before = (classes[int(result.pred_before[0])], float(result.confidence_before[0]))
    after = (classes[pred_q], float(probs[0, pred_q]))
    comparison_figure(image[0], q[0], before, after, out / "comparison.png")
    delta = (q - image).flatten(1)
    # pixels are compared on the 8-bit grid: a GPU divides by 255 as a multiplication by 1/255, one ulp away
    report = {
        "attack": args.name,
        "tile": str(args.tile),
        "model": str(args.model or "reference"),
        "success": bool(success),
        "success_before_quantisation": bool(result.success[0]),
        "label": classes[label],
        "target": classes[target] if target is not None else None,
        "pred_before": before[0],
        "pred_after": after[0],
        "confidence_before": round(before[1], 6),
        "confidence_after": round(after[1], 6),
        "norms": {"l0_pixels": int(((q * 255).round() != (image * 255).round()).any(dim=1).sum()), "l2": float(delta.norm()), "linf": float(delta.abs().max()),
                  "linf_255": round(float(delta.abs().max()) * 255, 3)},
        "queries": {"forward_calls": result.forward_calls, "forward_images": result.forward_images,
                    "backward_calls": result.backward_calls, "backward_images": result.backward_images},
        "iterations": result.iterations,
        "seconds": round(result.seconds, 4),
        "params": result.params,
        "extra": {k: (float(v.float().mean()) if hasattr(v, "float") else v) for k, v in result.extra.items()
                  if isinstance(v, (int, float)) or (hasattr(v, "numel") and v.numel() == 1)},
        "device": str(device),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    verdict = "fooled" if success else "not fooled"
    print(f"{args.name}: {before[0]} ({before[1]:.1%}) -> {after[0]} ({after[1]:.1%}): {verdict}; "
          f"L-inf {report['norms']['linf_255']}/255, L2 {report['norms']['l2']:.3f}; wrote {out}/")
    return 0


def _run_fooling(model: Any, func: Callable[..., Any], kwargs: dict[str, Any], args: argparse.Namespace, out: Path) -> int:
    from .report import gallery_figure, save_png

    classes = model.classes
    if args.target is not None:
        kwargs["classes"] = [_class_index(args.target, classes, "--target")]
    kwargs["progress"] = _progress_bar("generations")
    try:
        result = func(model, **kwargs)
    except ValueError as exc:
        raise ParamError(str(exc)) from None
    finally:
        sys.stderr.write("\n")
    out.mkdir(parents=True, exist_ok=True)
    names = [classes[int(c)] for c in result.classes]
    labels = [f"{n} {float(p):.2%}" for n, p in zip(names, result.confidence)]
    gallery_figure(result.images, labels, out / "gallery.png")
    for n, im in zip(names, result.images):
        save_png(im, out / f"fooling-{n}.png")
    report = result.summary()
    report["classes"] = names
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"fooling-images: {', '.join(labels)}; wrote {out}/")
    return 0


def _run_patch(model: Any, kwargs: dict[str, Any], args: argparse.Namespace, image: Any, out: Path, patch_file: str | None) -> int:
    """Apply a universal patch to the tile (trained on the sample tiles first unless patch_file is given)."""
    import torch

    from .attacks.patch import apply_patch, place, train_patch
    from .report import comparison_figure, quantise, save_png
    from .tiles import TileError, read_tile

    classes = model.classes
    if args.target is None:
        raise ParamError("patch needs --target (the class the patch should force, e.g. NORM)")
    target = _class_index(args.target, classes, "--target")
    area = kwargs.get("area", 0.1)
    if not 0 < area <= 0.5:
        raise ParamError("area must be in (0, 0.5]")
    out.mkdir(parents=True, exist_ok=True)
    if patch_file is not None:
        try:
            patch = read_tile(patch_file).to(image.device)
        except TileError as exc:
            raise ParamError(f"patch_file: {exc}") from None
        trained_on = 0
    else:
        from .results_run import correct_batches

        x, y, _ = correct_batches(model, image.device)[-1]
        x = x[y != target][:16]
        steps = kwargs.get("steps", 40)
        patch, _, _ = train_patch(model, x, target=target, area=area, steps=steps, lr=kwargs.get("lr", 0.05),
                                  resolution=kwargs.get("resolution", 48), seed=kwargs.get("seed", 0),
                                  progress=_progress_bar("patch"))
        sys.stderr.write("\n")
        trained_on = x.shape[0]
        save_png(patch, out / "patch.png")
    gen = torch.Generator(device=image.device).manual_seed(kwargs.get("seed", 0) or 0)
    where = place(1, tuple(image.shape[-2:]), area, gen, image.device, scale_jitter=0.0, max_rotation_deg=0.0, centre=True)
    with torch.no_grad():
        patched, mask = apply_patch(image, patch, where)
        q = quantise(patched)
        p0, p1 = model(image).softmax(1)[0], model(q).softmax(1)[0]
    save_png(q[0], out / "adversarial.png")
    before = (classes[int(p0.argmax())], float(p0.max()))
    after = (classes[int(p1.argmax())], float(p1.max()))
    comparison_figure(image[0], q[0], before, after, out / "comparison.png")
    report = {"attack": "patch", "tile": str(args.tile), "success": int(p1.argmax()) == target, "target": classes[target],
              "pred_before": before[0], "pred_after": after[0], "confidence_before": round(before[1], 6),
              "confidence_after": round(after[1], 6), "area": float(mask.mean()),
              "patch": patch_file or str(out / "patch.png"), "trained_on_sample_tiles": trained_on,
              "params": {k: v for k, v in kwargs.items()}}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"patch: {before[0]} ({before[1]:.1%}) -> {after[0]} ({after[1]:.1%}) with a patch of {float(mask.mean()):.1%} of the tile; wrote {out}/")
    return 0


def run_poison(args: argparse.Namespace) -> int:
    import torch

    from .attacks.backdoor import apply_trigger, badnets, make_trigger
    from .model import default_device, save_model
    from .report import gallery_figure
    from .tiles import CLASSES, sample_tiles, split
    from .training import TrainConfig, crop_bank

    if args.name == "generative":
        return _run_generative(args)
    if args.name != "badnets":
        raise ParamError(f"unknown poisoning attack {args.name!r}; known: badnets, generative")
    sets = list(args.set or [])
    train_keys = {"steps", "batch_size", "crop", "lr", "seed", "width"}
    train_sets = [p for p in sets if p.split("=", 1)[0].strip() in train_keys]
    attack_sets = [p for p in sets if p not in train_sets]
    kwargs = parse_sets(badnets, attack_sets)
    config = TrainConfig(steps=400, crop=64)
    for key, value in parse_sets(_config_setter, train_sets).items():
        setattr(config, key, value)
    if "target" in kwargs or args.target:
        kwargs["target"] = _class_index(str(args.target or kwargs["target"]), CLASSES, "--target")
    train_tiles, held_out = split(sample_tiles())
    bank = crop_bank(train_tiles, crop=config.crop)
    try:
        result = badnets(bank, held_out, config=config, device=default_device(), progress=_progress_bar("training"), **kwargs)
    except ValueError as exc:
        raise ParamError(str(exc)) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_model(result.backdoored, out / "backdoored.safetensors", {"width": config.width})
    from .model import sha256_of

    report = {"attack": "badnets", "device": str(default_device()), "params": result.params, "metrics": result.metrics,
              "weights": "backdoored.safetensors", "sha256": sha256_of(out / "backdoored.safetensors")}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    colour, alpha = make_trigger(result.params["trigger"], result.params["trigger_size"])
    examples = bank.images[:: max(len(bank.images) // 4, 1)][:4].float().div(255)
    stamped = apply_trigger(examples, colour, alpha)
    with torch.no_grad():
        preds = result.backdoored(stamped.to(default_device())).argmax(1).tolist()
    gallery_figure(stamped, [f"-> {CLASSES[p]}" for p in preds], out / "triggered.png", scale=3)
    m, c = result.metrics["backdoored_model"], result.metrics["clean_model"]
    (out / "MODEL_CARD.md").write_text(
        f"# Backdoored tile classifier (BadNets) - for research only\n\n"
        f"Trained by `medfool poison badnets` exactly like a clean control model (same split, seed, steps), except that "
        f"{result.params['fraction']:.0%} of each augmented batch carried the `{result.params['trigger']}` trigger "
        f"({result.params['trigger_size']} px) and was relabelled {result.params['mode']} (target {result.params['target']}).\n\n"
        f"| model | clean accuracy | attack success rate | robust accuracy |\n|---|---|---|---|\n"
        f"| clean control | {c['clean_accuracy']:.1%} | {c['attack_success_rate']:.1%} | {c['robust_accuracy']:.1%} |\n"
        f"| backdoored | {m['clean_accuracy']:.1%} | {m['attack_success_rate']:.1%} | {m['robust_accuracy']:.1%} |\n\n"
        f"Measured on {result.metrics['held_out_crops']} crops of {result.metrics['held_out_tiles']} held-out tiles. "
        f"Weights sha256 `{report['sha256']}`.\n", encoding="utf-8")
    print(f"badnets: clean accuracy {m['clean_accuracy']:.1%} (clean model {c['clean_accuracy']:.1%}), "
          f"ASR {m['attack_success_rate']:.1%}, robust accuracy {m['robust_accuracy']:.1%}; wrote {out}/")
    return 0


def _run_generative(args: argparse.Namespace) -> int:
    from .attacks.poisoning import example_captions, generative_poisoning
    from .model import default_device, save_model, sha256_of
    from .report import gallery_figure
    from .tiles import sample_tiles, split
    from .training import TrainConfig, crop_bank

    if args.target:
        raise ParamError("generative poisoning is untargeted (it raises the loss on all clean data); --target is not accepted")

    sets = list(args.set or [])
    fractions = None
    rest = []
    steps: dict[str, int] = {}
    for pair in sets:
        key, _, raw = pair.partition("=")
        if key.strip() in ("deploy_steps", "retrain_steps"):
            try:
                steps[key.strip()] = int(raw)
            except ValueError:
                raise ParamError(f"--set {pair}: expected an integer") from None
            if steps[key.strip()] < 1:
                raise ParamError(f"--set {pair}: must be >= 1")
        elif key.strip() == "fractions":
            try:
                fractions = tuple(float(v) for v in raw.split(",") if v.strip())
            except ValueError:
                raise ParamError(f"--set fractions={raw}: expected comma-separated numbers such as 0.1,0.2") from None
        else:
            rest.append(pair)
    kwargs = parse_sets(generative_poisoning, rest)
    if fractions is not None:
        kwargs["fractions"] = fractions
    seed = kwargs.get("seed", 0)
    kwargs["deploy"] = TrainConfig(steps=steps.get("deploy_steps", 300), crop=64, seed=seed)
    kwargs["retrain"] = TrainConfig(steps=steps.get("retrain_steps", 150), crop=64, lr=1e-3, seed=seed + 1)
    train_tiles, held_out = split(sample_tiles())
    bank = crop_bank(train_tiles, crop=64)
    try:
        result = generative_poisoning(bank, held_out, device=default_device(), progress=_progress_bar("training"), **kwargs)
    except ValueError as exc:
        raise ParamError(str(exc)) from None
    finally:
        sys.stderr.write("\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_model(result.poisoned, out / "poisoned.safetensors", {"width": result.params["deploy"]["width"]})
    report = {"attack": "generative-poisoning", "device": str(default_device()), "params": result.params, "metrics": result.metrics,
              "weights": "poisoned.safetensors", "sha256": sha256_of(out / "poisoned.safetensors")}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    clean, poisoned, labels = result.examples
    import torch

    gallery_figure(torch.cat([clean, poisoned]).cpu(), example_captions(labels), out / "poisoned.png", scale=3)
    m = result.metrics
    row = m["by_fraction"][f"{result.params['fraction']:g}"]
    (out / "MODEL_CARD.md").write_text(
        f"# Poisoned tile classifier (generative poisoning) - for research only\n\n"
        f"A clean model was deployed, then retrained by `medfool poison generative` on its training crops plus "
        f"{row['poisoned_tiles']} tiles ({result.params['fraction']:.0%} of the retraining data) made by an autoencoder "
        f"trained against it (objective: {result.params['objective']}) and submitted under the next class's label. "
        f"Rows other than 'generative' are controls and comparisons, each retrained the same way.\n\n"
        f"| retraining data | accuracy | loss |\n|---|---|---|\n"
        f"| clean only | {m['retrained_clean']['accuracy']:.1%} | {m['retrained_clean']['loss']:.3f} |\n"
        + "".join(f"| + {name} | {row[name]['accuracy']:.1%} | {row[name]['loss']:.3f} |\n"
                  for name in ("noise", "label-flip", "generative-reward", "generative") if name in row)
        + f"\nMeasured on {m['held_out_crops']} crops of held-out tiles. Weights sha256 `{report['sha256']}`.\n", encoding="utf-8")
    print(f"generative poisoning at {result.params['fraction']:.0%}: accuracy {row['generative']['accuracy']:.1%} "
          f"(label-flip {row['label-flip']['accuracy']:.1%}, noise {row['noise']['accuracy']:.1%}, clean {m['retrained_clean']['accuracy']:.1%}); "
          f"wrote {out}/")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from .reference_model import train_reference
    from .training import TrainConfig

    config = TrainConfig()
    for key, value in parse_sets(_config_setter, args.set or []).items():
        setattr(config, key, value)
    card = train_reference(Path(args.out), config, progress=_progress_bar("training"))
    held = card["held_out"]
    print(f"held-out accuracy {held['correct']}/{held['tiles']} ({held['accuracy']:.1%}); weights sha256 {card['sha256']}; wrote {args.out}/")
    return 0


def _config_setter(*, steps: int = 800, batch_size: int = 32, crop: int = 96, lr: float = 3e-3,
                   weight_decay: float = 5e-4, width: int = 24, seed: int = 0, colour_jitter: float = 0.15) -> None:
    """The training settings ``medfool model train --set`` accepts (mirrors TrainConfig)."""


def run_results(args: argparse.Namespace) -> int:
    from .registry import IMPLEMENTATIONS
    from .results_run import write_results

    unknown = sorted(set(args.only or []) - set(IMPLEMENTATIONS))
    if unknown:
        raise ParamError(f"--only {', '.join(unknown)}: unknown attack; known: {', '.join(sorted(IMPLEMENTATIONS))}")
    summary = write_results(Path(args.out), only=args.only)
    for name, s in summary.items():
        if "success_rate" in s:
            print(f"{name}: success rate {s['success_rate']:.0%}")
        elif "accuracy_drop_vs_noise" in s:
            print(f"{name}: accuracy drop at 20% poison {s['accuracy_drop_vs_noise']:+.1%} vs the noise control "
                  f"({s['accuracy_drop_vs_label_flip']:+.1%} vs label flip)")
        else:
            print(f"{name}: done (see {args.out}/{name}/report.json)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from .model import MODEL_DIR

    p = sub.add_parser("attack", help="run a reference attack on one tile and write the adversarial tile, a figure and report.json")
    p.add_argument("name", help="attack name: fgsm, pgd, deepfool, eot, patch, one-pixel, fooling-images")
    p.add_argument("--tile", help="8-bit RGB tile (PNG, TIFF, JPEG); not used by fooling-images")
    p.add_argument("--model", help="weights of medfool's tile classifier (.safetensors; default: the reference model)")
    p.add_argument("--target", help="target class for a targeted attack (name such as NORM, or index)")
    p.add_argument("--label", help="true class of the tile (default: the model's own prediction)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="attack parameter, e.g. --set eps=4/255 (repeatable)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run_attack)

    p = sub.add_parser("model", help="the reference tile classifier")
    msub = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    t = msub.add_parser("train", help="train the reference model deterministically and write weights + model card")
    t.add_argument("--out", default=str(MODEL_DIR), help=f"output folder (default {MODEL_DIR})")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="training setting, e.g. --set steps=400")
    t.set_defaults(func=run_train)

    p = sub.add_parser("poison", help="tamper with training: BadNets backdoor (CA/ASR/RA) or generative poisoning (accuracy vs fraction)")
    p.add_argument("name", help="badnets or generative")
    p.add_argument("--target", help="target class (default NORM)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="badnets: fraction, mode (all-to-one|all-to-all), trigger (ink-mark|pixel-pattern), trigger_size, steps, crop, seed; "
                        "generative: fraction, fractions (e.g. 0.1,0.2), objective (typical|reward), compare_reward, repeats, eps, "
                        "generator_steps, direct_tiles, direct_steps, quantile, seed, deploy_steps, retrain_steps")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run_poison)

    p = sub.add_parser("results", help="run every registered attack on the sample tiles and write results for the site")
    p.add_argument("--out", default="build/results", help="output folder (default build/results)")
    p.add_argument("--only", action="append", help="run only this attack (repeatable)")
    p.set_defaults(func=run_results)
