"""``medfool attack``: one registered attack on one tile (or none, for fooling images), through the campaign core.

The run is one campaign: a unit is planned from the spec, run by the local engine and written to
``<out>/results.sqlite``; ``adversarial.png``, ``comparison.png`` and ``report.json`` are then
written from what the store holds, so the report describes the saved 8-bit tile.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..registry import SPECS, AttackSpec
from .budget import LONG_PASSES, PRESETS, QUICK, estimate_text, planned_passes, preset_params, timed_passes
from .params import (
    RunFailed,
    UsageError,
    class_index,
    parse_sets,
    progress_bar,
    tile_path,
)


def _spec(name: str) -> AttackSpec:
    if name not in SPECS:
        raise UsageError(f"unknown attack {name!r}; known: {', '.join(sorted(SPECS))}")
    s = SPECS[name]
    if s.inputs == "training":
        verb = SPECS[s.showcase.same_as].verb if s.showcase.same_as else s.verb
        raise UsageError(f"{name} tampers with training, not with a tile: use 'medfool poison {verb} --out DIR'")
    if s.inputs == "slide":
        raise UsageError(f"{name} attacks a whole slide, not a tile: use 'medfool slide attack SLIDE --attack pgd --tiles K --out DIR'")
    return s


def campaign(units: list[Any], target: Any, out: Path, resume: bool, label: str) -> tuple[Any, Any]:
    """Run the units into ``out``'s store; a refused parameter or input is a usage error."""
    from ..campaign.engine import LocalEngine
    from ..campaign.run import run_campaign
    from ..campaign.store import ResultsStore

    store = ResultsStore(out)
    engine = LocalEngine(inner_progress=lambda u: progress_bar(u.attack) if len(units) == 1 else None)
    run = run_campaign(units, target, store, engine=engine, resume=resume, label=label)
    for f in run.failures:
        if f.kind == "invalid":
            raise UsageError(f.error)
        raise RunFailed(f"{f.attack} failed: {f.error}")
    return store, run


def run_attack(args: argparse.Namespace) -> int:
    from ..campaign.plan import PlanError, fooling_unit, patch_units, tile_units
    from ..campaign.units import file_item
    from ..inputs.tiles import TileError, read_tile
    from ..targets.reference import ModelFileError
    from ..targets.target import reference_target

    s = _spec(args.name)
    params = preset_params(s.name, args.preset, parse_sets(s, args.set))
    if s.inputs != "none" and args.tile is None:
        raise UsageError(f"--tile is required for {args.name} (a file, or sample:CLASS such as sample:TUM)")
    if s.inputs == "tiles+training" and s.targeted == "required" and args.target is None:
        raise UsageError(f"{args.name} needs --target (the class the patch should force, e.g. NORM)")
    try:
        target = reference_target(args.model)
        path = tile_path(args.tile) if args.tile is not None else None
        notes: list[str] = []
        if path is not None:
            read_tile(path, notes)  # refused here, with the reason, before anything runs
    except (TileError, ModelFileError) as exc:
        raise UsageError(str(exc)) from None
    classes = target.classes
    wanted = args.target if args.target is not None else (s.default_target if s.command == "attack" else None)
    goal = class_index(wanted, classes, "--target") if wanted is not None else None
    if goal is not None and s.targeted == "never":
        raise UsageError(f"{args.name} is untargeted; --target is not accepted")
    label = class_index(args.label, classes, "--label") if args.label is not None else None
    out = Path(args.out)
    item = file_item(path, label=label) if path is not None else None
    _estimate(s, params, target, path, args.preset)
    try:
        if s.inputs == "tiles":
            units = tile_units(s.name, [item], params=params, target=goal, keep_images=True)
        elif s.inputs == "tiles+training" and s.name != "patch":  # a universal pattern, computed on other sample tiles
            from ..campaign.plan import universal_units

            support = _universal_support(target, out, goal, args.resume, item, s.showcase.support)
            units = universal_units(s.name, [item], support, params=params, target=goal, keep_images=True)
        elif s.inputs == "tiles+training":
            support = [] if "patch_file" in params else _patch_training_tiles(target, out, goal, args.resume)
            units = patch_units([item], support, params=params, target=goal, keep_images=True)
        else:
            units = [fooling_unit(params=params, target=goal)]
    except PlanError as exc:
        raise UsageError(str(exc)) from None
    store, run = campaign(units, target, out, args.resume, args.name)
    unit = store.units(keys=run.keys)[0]
    if s.inputs == "none":
        return _write_fooling(store, unit, out)
    return _write_tile(store, unit, classes, out, s, args, notes)


def _estimate(s: AttackSpec, params: dict[str, Any], target: Any, path: Path | None, preset: str) -> None:
    """Print the time estimate before a long plan starts (planned passes x a timed pass on this tile)."""
    import sys

    from ..inputs.tiles import read_tile

    passes = planned_passes(s.name, params, {k: e.default for k, e in s.parameters().items()})
    if passes is None or sum(passes) < LONG_PASSES:
        return
    x = read_tile(path)[None] if path is not None else None
    if x is None:
        import torch

        x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    print(estimate_text(s.name, passes, timed_passes(target.model, x.to(target.device)), preset), file=sys.stderr, flush=True)


def _patch_training_tiles(target: Any, out: Path, goal: int, resume: bool) -> list[Any]:
    """The showcase's training tiles for a universal patch: correct sample tiles of the largest size, not of the target class."""
    from ..campaign.plan import by_size
    from ..campaign.showcase import correct_items
    from ..campaign.store import ResultsStore

    correct, _ = correct_items(target, ResultsStore(out), resume=resume)
    group = by_size(correct)[-1]
    return [i for i in group if i.label != goal][:SPECS["patch"].showcase.support]


def _universal_support(target: Any, out: Path, goal: int | None, resume: bool, item: Any, limit: int) -> list[Any]:
    """The showcase's support tiles of a universal pattern, never the tile being attacked (nor a tile with its content)."""
    from ..campaign.plan import by_size
    from ..campaign.showcase import correct_items
    from ..campaign.store import ResultsStore
    from ..campaign.plan import showcase_split

    correct, _ = correct_items(target, ResultsStore(out), resume=resume)
    support, _ = showcase_split(by_size([i for i in correct if i.id != item.id]), goal, limit)
    return support


def _write_tile(store: Any, unit: dict[str, Any], classes: tuple[str, ...], out: Path, s: AttackSpec, args: argparse.Namespace,
                notes: list[str]) -> int:
    from ..inputs.tiles import from_png_bytes, read_tile, save_png
    from ..reports.figures import comparison_figure

    rec = store.items([unit["key"]])[0]
    adv = from_png_bytes(store.artifact(unit["key"], "adversarial/0.png"))
    save_png(adv, out / "adversarial.png")
    before = (classes[rec["pred_before"]], rec["conf_before"])
    after = (classes[rec["pred_8bit"]], rec["conf_8bit"])
    comparison_figure(read_tile(rec["path"]), adv, before, after, out / "comparison.png")
    extra = unit["extra"]
    report: dict[str, Any] = {
        "attack": s.name, "tile": str(args.tile), "model": str(args.model or "reference"),
        "success": rec["success_8bit"], "success_before_quantisation": rec["success"],
        "label": classes[rec["label"]], "target": classes[unit["target"]] if unit["target"] is not None else None,
        "pred_before": before[0], "pred_after": after[0],
        "confidence_before": round(before[1], 6), "confidence_after": round(after[1], 6),
        "norms": {"l0_pixels": rec["l0_8bit"], "l2": rec["l2_8bit"], "linf": rec["linf_8bit"],
                  "linf_255": round(rec["linf_8bit"] * 255, 3)},
        "norms_before_quantisation": {"l0_pixels": rec["l0"], "l2": rec["l2"], "linf_255": round(rec["linf"] * 255, 3)},
        "queries": {k: unit[k] for k in ("forward_calls", "forward_images", "backward_calls", "backward_images")},
        "iterations": unit["iterations"], "seconds": round(unit["seconds"], 4),
        "params": extra.get("attack_params", unit["params"]),
        "extra": {k: v for k, v in {**extra, **rec["extra"]}.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
        "device": unit["device"], "unit": unit["key"], "store": str(store.path), "input_notes": notes,
    }
    if s.inputs == "tiles+training" and s.name != "patch":
        report.update({"support_tiles": extra.get("support_tiles"), "on_support_tiles": extra.get("on_support_tiles"),
                       "random_pattern_success": bool(rec["extra"].get("random_success")), "pattern": str(out / "pattern.png")})
        save_png(from_png_bytes(store.artifact(unit["key"], "pattern.png")), out / "pattern.png")
    elif s.inputs == "tiles+training":
        report.update({"area": extra.get("measured_area"), "patch": extra.get("patch_from") or str(out / "patch.png"),
                       "trained_on_sample_tiles": extra.get("train_tiles", 0)})
        if "patch_from" not in extra:
            save_png(from_png_bytes(store.artifact(unit["key"], "patch.png")), out / "patch.png")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for note in notes:
        print(f"note: {note}")
    verdict = "fooled" if rec["success_8bit"] else "not fooled"
    print(f"{s.name}: {before[0]} ({before[1]:.1%}) -> {after[0]} ({after[1]:.1%}): {verdict}; "
          f"L-inf {report['norms']['linf_255']}/255, L2 {report['norms']['l2']:.3f}; wrote {out}/")
    return 0


def _write_fooling(store: Any, unit: dict[str, Any], out: Path) -> int:
    from ..inputs.tiles import from_png_bytes, save_png
    from ..reports.figures import gallery_figure

    recs = store.items([unit["key"]])
    images = [from_png_bytes(store.artifact(unit["key"], f"fooling/{r['name']}.png")) for r in recs]
    labels = [f"{r['name']} {r['extra']['target_confidence']:.2%}" for r in recs]
    gallery_figure(images, labels, out / "gallery.png", columns=min(len(labels), 5))
    for r, im in zip(recs, images):
        save_png(im, out / f"fooling-{r['name']}.png")
    report = {"attack": "fooling-images", "classes": [r["name"] for r in recs],
              "confidence": [round(r["extra"]["target_confidence"], 6) for r in recs], "success": [r["success"] for r in recs],
              "success_rate": sum(bool(r["success"]) for r in recs) / max(len(recs), 1),
              "generations": [r["extra"]["generations"] for r in recs], "forward_images": unit["forward_images"],
              "seconds": round(unit["seconds"], 3), "params": unit["extra"].get("attack_params", unit["params"]),
              "unit": unit["key"], "store": str(store.path)}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"fooling-images: {', '.join(labels)}; wrote {out}/")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    names = ", ".join(n for n, s in SPECS.items() if s.command == "attack" and s.inputs != "slide")
    p = sub.add_parser("attack", help="run a reference attack on one tile and write the adversarial tile, a figure and report.json")
    p.add_argument("name", help=f"attack name: {names}")
    p.add_argument("--tile", help="8-bit RGB tile (PNG, TIFF, JPEG) or sample:CLASS (see 'medfool tiles'); not used by fooling-images")
    p.add_argument("--model", help="weights of medfool's tile classifier (.safetensors; default: the reference model)")
    p.add_argument("--target", help="target class for a targeted attack (name such as NORM, or index)")
    p.add_argument("--label", help="true class of the tile (default: the model's own prediction)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="attack parameter, e.g. --set eps=4/255 (repeatable)")
    quick = "; ".join(f"{n}: " + ", ".join(f"{k}={v}" for k, v in q.items()) for n, q in QUICK.items())
    p.add_argument("--preset", choices=PRESETS, default="quick",
                   help=f"quick (default): about a minute on one tile on 2 CPU cores ({quick}); paper: the paper's budget "
                        "(the attack function's own defaults; one-pixel 400 x 100 takes over 10 min on one tile). "
                        "--set overrides either; a long plan prints its time estimate first")
    p.add_argument("--out", required=True, help="output folder (results.sqlite, adversarial.png, comparison.png, report.json)")
    p.add_argument("--resume", action="store_true", help="reuse a finished unit from the output folder's results store")
    p.set_defaults(func=run_attack)
