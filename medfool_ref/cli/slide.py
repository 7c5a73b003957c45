"""``medfool slide``: whole-slide images. ``info`` (levels, mpp, vendor), ``mosaic`` (a labelled mosaic of real
tiles as a pyramidal TIFF), ``predict`` (tiles through the campaign core, slide-level calls, figures), ``attack``
(a tile attack on chosen tiles, the calls before and after, the flip search, the attacked slide written back),
``train-mil`` (the attention head, deterministic) and ``demo`` (the recorded run behind the site's page).

A slide is any file OpenSlide reads or a DICOM WSI (its folder of .dcm files, or one of them); ``attack`` writes the
attacked slide as a pyramidal TIFF and/or a DICOM WSI (``--write-format``). A refused slide, layout or option is one
line, exit 2: a corrupt or truncated slide, an unsupported format, a folder that is no DICOM WSI, no tissue, a region
outside the slide, a missing mpp, a tissue mask over ``--pixel-budget`` or a grid over ``--max-tiles``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..reports.intervals import fmt_ci, interval
from .audit import add_engine_options, engine_from
from .params import UsageError, coerce, finite, parse_sets, progress_bar

SAMPLE_SLIDE = Path(__file__).resolve().parents[1] / "data" / "slides" / "CMU-1-Small-Region.svs"
SAMPLE_CREDIT = "CMU-1-Small-Region.svs from the OpenSlide test data (Carnegie Mellon University), CC0"


def _errors() -> tuple[type[Exception], ...]:
    from ..campaign.slide import SlideRunError
    from ..inputs.mosaic import MosaicError
    from ..inputs.slides import SlideError
    from ..targets.aggregate import MilError

    return SlideError, MosaicError, SlideRunError, MilError


def _guard(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except _errors() as exc:
            raise UsageError(str(exc)) from None

    return run


def slide_path(value: str) -> Path:
    """A slide file, or ``sample:cmu-1`` for the shipped CMU-1 small region."""
    return SAMPLE_SLIDE if value.lower() in ("sample:cmu-1", "sample:cmu1") else Path(value)


# --------------------------------------------------------------------------- info, mosaic


def run_info(args: argparse.Namespace) -> int:
    from ..inputs.slides import Slide

    with Slide(slide_path(args.slide)) as s:
        info = s.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    mpp = f"{info['mpp']:.4g} um/px" if info["mpp"] else "no microns per pixel (give --mpp to predict)"
    power = f", objective {info['objective_power']:g}x" if info["objective_power"] else ""
    w, h = info["dimensions"]
    print(f"{Path(info['path']).name}: {info['vendor']}, {w} x {h} px at level 0, {mpp}{power}")
    for lv in info["levels"]:
        print(f"  level {lv['level']}: {lv['dimensions'][0]} x {lv['dimensions'][1]} px, downsample {lv['downsample']:g}")
    if info["associated_images"]:
        print(f"  associated images: {', '.join(info['associated_images'])}")
    return 0


def run_mosaic(args: argparse.Namespace) -> int:
    from ..inputs.mosaic import parse_layout, truth_paths, write_mosaic

    layout = parse_layout(args.layout, tumour=args.tumour or [], glass=args.glass or ["border"])
    truth = write_mosaic(args.out, layout, seed=args.seed, kind=args.sources, which=args.split)
    w, h = truth["dimensions"]
    counts = ", ".join(f"{k} {v}" for k, v in truth["counts"].items())
    print(f"wrote {args.out}: {layout.rows}x{layout.cols} cells, {w} x {h} px at 0.5 um/px, {len(truth['levels'])} levels ({counts}); "
          f"truth in {truth_paths(args.out)[0].name} and .csv")
    print("note: a composition of real labelled tiles for testing the slide pipeline, not a real whole-slide image")
    return 0


# --------------------------------------------------------------------------- predict, attack


def _setup(args: argparse.Namespace) -> tuple[Any, Any, Any, dict[str, float], Any]:
    """The target, its attention head (or None), the slide plan, the thresholds and the head's absence reason."""
    from ..campaign.slide import head_for, plan_slide, thresholds_for
    from ..targets.aggregate import AGGREGATORS, MIL_WEIGHTS, load_mil
    from .audit import _target

    if args.batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    if args.top_k < 1:
        raise UsageError("--top-k must be >= 1")
    args.engine_object = engine_from(args) if args.engine != "local" or args.ray_address else None
    target = _target(args)
    cfg = getattr(target, "config", None)
    target_mpp = (cfg.input.mpp if cfg is not None and cfg.input.mpp else 0.5)
    side = (cfg.input.size if cfg is not None and cfg.input.size else 224)
    head = None
    if args.mil != "none" and (args.mil or MIL_WEIGHTS.is_file()):
        head = load_mil(args.mil)
    head, why = head_for(target, head)
    overrides = {}
    for pair in args.threshold or []:
        name, sep, raw = pair.partition("=")
        if not sep or name.strip() not in AGGREGATORS:
            raise UsageError(f"--threshold {pair!r}: expected AGGREGATOR=VALUE with AGGREGATOR one of {', '.join(AGGREGATORS)}")
        try:
            value = float(raw)
        except ValueError:
            raise UsageError(f"--threshold {pair}: {raw!r} is not a number") from None
        if not 0 <= value <= 1:
            raise UsageError(f"--threshold {pair}: a slide score is a probability; give a value in [0, 1]")
        overrides[name.strip()] = value
    roi = _roi(args.roi) if args.roi else None
    plan = plan_slide(slide_path(args.slide), target_mpp=target_mpp, side=side, overlap=args.overlap, min_tissue=args.min_tissue,
                      mpp=args.mpp, roi=roi, method=args.tissue, pixel_budget=args.pixel_budget, max_tiles=args.max_tiles)
    return target, head, plan, thresholds_for(target, head, overrides), why


def _roi(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--roi {text!r}: expected X,Y,W,H in level-0 pixels") from None
    return x, y, w, h


def _provenance(args: argparse.Namespace) -> dict[str, Any]:
    import datetime as dt
    import os
    import platform

    import torch

    from .. import __version__
    from ..site.slides import slide_code_sha256

    return {"medfool": __version__, "code_sha256": slide_code_sha256(), "machine": f"{platform.machine()} {platform.system()}, "
            f"{os.cpu_count()} CPUs, torch {torch.__version__}", "cpu_capability": torch.backends.cpu.get_cpu_capability(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": getattr(args, "command_line", "medfool slide")}


def _predict(args: argparse.Namespace, out: Path) -> tuple[Any, ...]:
    from ..campaign.slide import predict_slide
    from ..campaign.store import ResultsStore
    from ..inputs.mosaic import read_truth
    from ..reports.slide import slide_figures, truth_summary, write_predictions

    target, head, plan, thresholds, why = _setup(args)
    out.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(out)
    print(f"{Path(plan.path).name}: {len(plan.items)} of {plan.grid_tiles} tiles hold tissue; predicting with {target.name}", file=sys.stderr)
    pred = predict_slide(plan, target, store, head=head, thresholds=thresholds, k=args.top_k, batch_size=args.batch_size,
                         resume=args.resume, engine=args.engine_object)
    truth = read_truth(plan.path)
    write_predictions(out / "predictions.csv", plan, pred, target.classes, truth=truth)
    figures = slide_figures(plan, pred, out, mosaic=truth is not None)
    doc = {"kind": "medfool-slide-predict", "slide": plan.info, "sha256": plan.sha256, "grid": plan.grid.as_dict(),
           "tissue": {"method": plan.tissue.method, "threshold": plan.tissue.threshold, "min_fraction": plan.min_tissue,
                      "tiles_in_grid": plan.grid_tiles, "tiles_with_tissue": len(plan.items)},
           "model": target.name, "classes": list(target.classes), "positive": list(target.positive), "top_k": args.top_k,
           "calls": pred.calls, "attention": "available" if head is not None else why,
           "mosaic": truth_summary(plan, pred, target.classes, truth), "files": ["predictions.csv", *figures, "results.sqlite"],
           "provenance": _provenance(args)}
    return target, head, plan, thresholds, pred, store, truth, doc


def _print_calls(calls: dict[str, Any], prefix: str = "") -> None:
    from ..reports.slide import AGG_NAMES

    for name, c in calls.items():
        print(f"{prefix}{AGG_NAMES[name]:>14}: {c['score']:.3f} vs {c['threshold']:.3f} -> {'tumour' if c['call'] else 'no tumour'}")


def run_predict(args: argparse.Namespace) -> int:
    out = Path(args.out)
    *_, pred, _store, truth, doc = _predict(args, out)
    (out / "report.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    _print_calls(pred.calls)
    if doc["mosaic"]:
        print(f"mosaic: truly {'tumour' if truth['contains_tumour'] else 'no tumour'}; tile accuracy {fmt_ci(doc['mosaic'].get('tile_accuracy_ci'))} "
              "(a composition of real tiles)")
    print(f"wrote {out}/predictions.csv, report.json, {', '.join(f for f in doc['files'] if f.endswith('.png'))}")
    return 0


def _catalog_links(attack: str) -> list[dict[str, str]]:
    from ..catalog import load_catalog
    from ..registry import spec

    c = load_catalog()
    links = [("mil-slide-perturbation", "slide-level attack"), (spec(attack).implements, "tile attack")]
    return [{"id": i, "stable_id": c.attacks[i].stable_id, "role": role} for i, role in links]


def _goal_name(a: Any, target: Any) -> str | None:
    if a.target_class is None:
        return None
    return ("non-tumour", "tumour")[a.target_class] if a.view == "decision" else target.classes[a.target_class]


def run_attack_command(args: argparse.Namespace) -> int:
    from ..campaign.slide import attack_slide, choose, needs, write_attacked
    from ..registry import SPECS
    from ..reports.slide import before_after_figure

    if args.attack not in SPECS:
        raise UsageError(f"unknown attack {args.attack!r}; known: {', '.join(sorted(SPECS))}")
    if args.tiles is None and args.fraction is None and not args.search:
        raise UsageError("give --tiles K or --fraction F (or --search to try every eligible tile)")
    params = parse_sets(SPECS[args.attack], args.set)
    out = Path(args.out)
    folder = out / f"{Path(slide_path(args.slide)).stem}-attacked-dicom"
    if not args.no_write and args.write_format != "tiff" and folder.exists():
        raise UsageError(f"{folder}: already exists; a DICOM WSI is written into a new folder "
                         "(remove it, give another --out or --no-write)")
    target, head, plan, thresholds, pred, store, truth, doc = _predict(args, out)
    primary = "attention" if "attention" in pred.calls else "max"
    goal = args.goal if args.goal != "auto" else ("miss" if pred.calls[primary]["call"] else "overcall")
    order, eligible = choose(pred, target, goal=goal, select=args.select, count=args.tiles, fraction=args.fraction,
                             candidates=args.candidates, seed=args.seed)
    print(f"attacking {len(order)} of {eligible} eligible tiles with {args.attack} (goal: {goal}, select: {args.select})", file=sys.stderr)
    a = attack_slide(plan, pred, target, store, attack=args.attack, params=params, goal=goal, order=order, eligible=eligible,
                     select=args.select, head=head, thresholds=thresholds, candidates=args.candidates, k=args.top_k,
                     batch_size=args.batch_size, resume=args.resume, engine=args.engine_object)
    after = pred.p_tumour.copy()
    after[a.order] = a.p_tumour
    before_after_figure(plan, pred.p_tumour, after, a.order, out / "before-after.png", calls_before=pred.calls, calls_after=a.after,
                        title=f"{args.attack} on {len(a.order)} tiles ({goal})" + ("; a mosaic of real tiles" if truth else ""))
    stem = Path(plan.path).stem
    written = dicom = None
    if not args.no_write and args.write_format in ("tiff", "both"):
        written = write_attacked(plan, a, store, out / f"{stem}-attacked.tif")
    if not args.no_write and args.write_format in ("dicom", "both"):
        dicom = write_attacked(plan, a, store, folder, dicom=args.dicom_compression)
    names = [Path(w["path"]).name + ("/" if w is dicom else "") for w in (written, dicom) if w]
    doc.update({"kind": "medfool-slide-attack", "catalog": _catalog_links(args.attack),
                "attack": {"name": args.attack, "params": params, "goal": goal, "view": a.view,
                           "target_class": _goal_name(a, target), "select": args.select, "candidates": args.candidates,
                           "eligible": eligible, "attacked": len(a.order), "fraction_of_tissue_tiles": len(a.order) / len(plan.items),
                           "tile_fooled_8bit": int(a.fooled.sum()), "tile_fooled_8bit_ci": interval(int(a.fooled.sum()), len(a.order))
                           if len(a.order) else None, "tiles": [plan.items[i].id for i in a.order.tolist()]},
                "before": pred.calls, "after": a.after, "needs": needs(pred, a, thresholds, args.top_k),
                "search": {n: {k: v for k, v in s.items() if k != "curve" or args.search} for n, s in a.scan.items()} if args.search else None,
                "written": written, "written_dicom": dicom, "files": doc["files"] + ["before-after.png"] + names})
    (out / "report.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"{args.attack} on {len(a.order)} tiles: fooled as 8-bit tiles {fmt_ci(doc['attack']['tile_fooled_8bit_ci'])}")
    for name in pred.calls:
        b, c = pred.calls[name], a.after[name]
        flip = ""
        if args.search:
            s = a.scan[name]
            flip = f"; flips with {s['k']} tile(s)" if s["k"] is not None else f"; not flipped with {s['of']}"
        print(f"  {name:>9}: {b['score']:.3f} ({'T' if b['call'] else 'N'}) -> {c['score']:.3f} ({'T' if c['call'] else 'N'}){flip}")
    print(f"wrote {out}/report.json, before-after.png" + "".join(f", {n}" for n in names))
    return 0


# --------------------------------------------------------------------------- train-mil, demo


def run_train_mil(args: argparse.Namespace) -> int:
    from ..registry import Extra
    from ..targets.aggregate import MilConfig, save_mil, train_mil
    from ..targets.target import reference_target

    config = MilConfig()
    settable = {f.name: Extra(f.name, type(getattr(config, f.name)), getattr(config, f.name), minimum=0) for f in fields(config)}
    for pair in args.set or []:
        key, sep, raw = (part.strip() for part in pair.partition("="))
        if not sep or key not in settable:
            raise UsageError(f"--set {pair!r}: expected KEY=VALUE with KEY one of {', '.join(settable)}")
        setattr(config, key, coerce(settable[key], raw))
    target = reference_target(device="cpu")
    head = train_mil(target.model, target.fingerprint, positive=target.positive_indices, config=config,
                     progress=progress_bar("train-mil"))
    head.card["command"] = getattr(args, "command_line", "medfool slide train-mil")
    card = save_mil(head, args.out)
    held = card["held_out_bags"]
    print("thresholds: " + ", ".join(f"{k} {v:.4f}" for k, v in card["thresholds"].items()))
    print("held-out bags accuracy: " + ", ".join(f"{k} {held[k]['accuracy']:.1%}" for k in card["thresholds"]))
    print(f"weights sha256 {card['sha256']}; wrote {args.out}/")
    return 0


DEMO_MOSAICS = (
    {"name": "miss", "title": "Tumour mosaic: hiding the tumour (PGD stops at each tile's boundary)",
     "layout": ["--layout", "8x8", "--tumour", "2:5,2:5"], "seed": 1, "goal": "miss", "sets": ["eps=4/255"],
     "params_text": "L-inf eps 4/255, 10 steps, early stop (each tile stops once it reads non-tumour)",
     "goal_text": "a missed tumour (every tumour-called tile is a candidate)", "extra": []},
    {"name": "miss-full", "title": "Tumour mosaic: hiding the tumour (PGD runs every step)",
     "layout": ["--layout", "8x8", "--tumour", "2:5,2:5"], "seed": 1, "goal": "miss", "sets": ["eps=4/255", "early_stop=false"],
     "params_text": "L-inf eps 4/255, 10 steps, no early stop (each tile pushed as far as the budget allows)",
     "goal_text": "a missed tumour (every tumour-called tile is a candidate)", "extra": []},
    {"name": "overcall", "title": "Benign mosaic: an over-call", "layout": ["--layout", "8x8"], "seed": 2, "goal": "overcall",
     "sets": ["eps=4/255", "early_stop=false"], "params_text": "L-inf eps 4/255, 10 steps, no early stop",
     "goal_text": "an over-call (the 16 non-tumour tiles with the highest P(tumour) are candidates)", "extra": ["--tiles", "16"]},
)


def run_demo(args: argparse.Namespace) -> int:
    """CMU-1 predicted, and mosaics (of the reference model's training tiles) attacked with PGD at 4/255 with the flip
    search; writes summary.json and the figures into ``--out``, the slides and stores into ``--work``."""
    import shlex
    import shutil
    import tempfile

    from ..inputs.mosaic import STATEMENT

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="medfool-slides-"))
    work.mkdir(parents=True, exist_ok=True)
    parser = argparse.ArgumentParser(prog="medfool")
    add_commands(parser.add_subparsers(dest="command", required=True))

    def call(*argv: str) -> dict[str, Any]:
        ns = parser.parse_args(list(argv))
        ns.command_line = "medfool " + shlex.join(argv)
        ns.func(ns)
        where = Path(argv[argv.index("--out") + 1])
        return json.loads((where / "report.json").read_text(encoding="utf-8")) if (where / "report.json").is_file() else {}

    cmu = call("slide", "predict", "sample:cmu-1", "--out", str(work / "cmu1"))
    figs = {"P(tumour) per tile over the thumbnail": "cmu1-heatmap.png", "the tissue mask and the tiles kept": "cmu1-tissue.png",
            "attention weights of the attention-MIL head": "cmu1-attention.png"}
    for name in figs.values():
        if (work / "cmu1" / name.removeprefix("cmu1-")).is_file():
            shutil.copyfile(work / "cmu1" / name.removeprefix("cmu1-"), out / name)
    g = cmu["grid"]
    summary: dict[str, Any] = {
        "format": "medfool-slides-1", "statement": STATEMENT,
        "cmu1": {"slide": SAMPLE_SLIDE.name, "credit": SAMPLE_CREDIT, "dimensions": cmu["slide"]["dimensions"], "mpp": cmu["slide"]["mpp"],
                 "side": g["side"], "target_mpp": g["target_mpp"], "tiles": cmu["tissue"]["tiles_with_tissue"],
                 "grid_tiles": cmu["tissue"]["tiles_in_grid"], "calls": cmu["calls"], "figures": {k: v for k, v in figs.items() if (out / v).is_file()}},
        "mosaics": []}
    for spec in DEMO_MOSAICS:
        tif = work / f"mosaic-{spec['seed']}.tif"
        call("slide", "mosaic", "--out", str(tif), *spec["layout"], "--seed", str(spec["seed"]), "--split", "train")
        sets = [x for v in spec["sets"] for x in ("--set", v)]
        rep = call("slide", "attack", str(tif), "--attack", "pgd", *sets, "--goal", spec["goal"], "--search",
                   "--select", "top-score", *spec["extra"], "--out", str(work / spec["name"]))
        figure = f"mosaic-{spec['name']}.png"
        shutil.copyfile(work / spec["name"] / "before-after.png", out / figure)
        at = rep["attack"]
        summary["catalog"] = rep["catalog"]
        summary["mosaics"].append({
            "title": spec["title"], "layout": " ".join(spec["layout"]) + f" --seed {spec['seed']} --split train",
            "contains_tumour": rep["mosaic"]["contains_tumour"], "tiles": rep["tissue"]["tiles_with_tissue"], "goal": at["goal"],
            "goal_text": spec["goal_text"], "attack": at["name"], "params_text": spec["params_text"],
            "select": at["select"], "view": "the tumour decision, untargeted" if at["view"] == "decision" else f"targeted to {at['target_class']}",
            "eligible": at["eligible"], "attacked": at["attacked"], "tile_fooled": at["tile_fooled_8bit"],
            "tile_fooled_ci": at.get("tile_fooled_8bit_ci"),
            "before": rep["before"], "after": rep["after"], "search": {k: {x: v[x] for x in ("k", "of", "stays_flipped", "clean_call")}
                                                                      for k, v in rep["search"].items()}, "figure": figure})
    summary["provenance"] = {**_provenance(args), "work": "slides, stores and attacked TIFFs are not committed (" + str(work) + ")"}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}/summary.json and {len(list(out.glob('*.png')))} figures")
    return 0


def count(text: str) -> int:
    """An argparse type: a whole number >= 1 (1073741824 or 1e9)."""
    value = finite(text)
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(value)


SLIDE_HELP = "a slide file OpenSlide reads, a DICOM WSI (its folder of .dcm files, or one of them), or sample:cmu-1"


def _common(p: argparse.ArgumentParser) -> None:
    from ..inputs.slides import MAX_TILES, PIXEL_BUDGET

    p.add_argument("slide", help=SLIDE_HELP + " (the shipped CMU-1 small region)")
    p.add_argument("--out", required=True, help="output folder (results.sqlite, predictions.csv, figures, report.json)")
    p.add_argument("--model", default="reference", help="'reference' (default) or path/to/file.py:factory")
    p.add_argument("--weights", help=".safetensors, or a state dict torch reads with weights_only=True")
    p.add_argument("--config", help="model.yaml (its input.mpp and input.size set the tiles; default 224 px at 0.5 um/px)")
    p.add_argument("--device", help="torch device (default: cuda when available)")
    p.add_argument("--mpp", type=finite, help="level-0 microns per pixel, for a slide that does not say (or to override it)")
    p.add_argument("--overlap", type=int, default=0, help="overlap between neighbouring tiles, in model pixels (default 0)")
    p.add_argument("--min-tissue", type=finite, default=0.5, help="the least tissue fraction a tile needs (default 0.5)")
    p.add_argument("--tissue", default="saturation", choices=["saturation", "od"], help="tissue score thresholded by Otsu")
    p.add_argument("--roi", help="X,Y,W,H: only this level-0 region")
    p.add_argument("--batch-size", type=int, default=64, help="tiles per unit (default 64)")
    p.add_argument("--top-k", type=int, default=5, help="k of the top-k mean aggregator (default 5)")
    p.add_argument("--threshold", action="append", metavar="AGG=VALUE", help="override an aggregator's threshold")
    p.add_argument("--mil", help="attention head (.safetensors; default the shipped one; 'none' to leave it out)")
    p.add_argument("--resume", action="store_true", help="reuse finished units from the output folder's results store")
    p.add_argument("--pixel-budget", type=count, default=PIXEL_BUDGET, metavar="PX",
                   help=f"refuse a slide whose tissue mask would decode more pixels than this (default {PIXEL_BUDGET:,} = 2**30: "
                        "a slide without a coarse pyramid level must be decoded in full)")
    p.add_argument("--max-tiles", type=count, default=MAX_TILES, metavar="N",
                   help=f"refuse a tile grid of more positions than this (default {MAX_TILES:,} = 2**20)")
    add_engine_options(p)


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from ..inputs.mosaic import __doc__ as layout_doc
    from ..targets.reference import MODEL_DIR

    p = sub.add_parser("slide", help="whole-slide images: info, labelled mosaics, slide-level predictions and attacks")
    ssub = p.add_subparsers(dest="slide_command", required=True, metavar="ACTION")
    i = ssub.add_parser("info", help="dimensions, levels, microns per pixel, objective power and vendor of a slide")
    i.add_argument("slide", help=SLIDE_HELP)
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=_guard(run_info))
    m = ssub.add_parser("mosaic", help="compose shipped labelled tiles into a pyramidal TIFF with its ground truth",
                        description=layout_doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("--out", required=True, help="the TIFF to write (FILE.tif; FILE.truth.json and .csv beside it)")
    m.add_argument("--layout", default="8x8", help="RxC cells of 224 px at 0.5 um/px (default 8x8)")
    m.add_argument("--tumour", action="append", metavar="ROWS,COLS", help="tumour cells, e.g. 2:4,3:5 (repeatable)")
    m.add_argument("--glass", action="append", metavar="ROWS,COLS", help="glass cells, 'border' (default) or 'none' (repeatable)")
    m.add_argument("--seed", type=int, default=0, help="which tiles go where (default 0)")
    m.add_argument("--sources", default="native", choices=["native", "all"], help="native: 224 px tiles only; all: Kather 2016 resized too")
    m.add_argument("--split", default="all", choices=["all", "train", "held-out"], help="the reference model's tile split to draw from")
    m.set_defaults(func=_guard(run_mosaic))
    pr = ssub.add_parser("predict", help="per-tile predictions, slide-level calls (max, mean, top-k, attention MIL) and figures")
    _common(pr)
    pr.set_defaults(func=_guard(run_predict))
    a = ssub.add_parser("attack", help="attack chosen tiles with a tile attack; slide calls before/after; flip search; attacked TIFF")
    _common(a)
    a.add_argument("--attack", required=True, help="a registered input-alteration tile attack (pgd, fgsm, apgd, deepfool, eot, one-pixel)")
    a.add_argument("--set", action="append", metavar="KEY=VALUE", help="tile attack parameter, e.g. --set eps=4/255")
    g = a.add_mutually_exclusive_group()
    g.add_argument("--tiles", type=int, help="attack K tiles")
    g.add_argument("--fraction", type=finite, help="attack this fraction of the tissue tiles")
    a.add_argument("--select", default="top-score", choices=["top-attention", "top-score", "random"],
                   help="which eligible tiles first (default top-score: highest P(tumour))")
    a.add_argument("--goal", default="auto", choices=["auto", "miss", "overcall"],
                   help="miss: hide a tumour; overcall: make a benign slide read tumour; auto: from the clean call")
    a.add_argument("--candidates", default="called", choices=["called", "all"],
                   help="called (default): tumour-called tiles for a miss, the others for an over-call; all: every tissue tile, "
                        "pushed towards the goal's decision (a targeted attack; use --set early_stop=false)")
    a.add_argument("--search", action="store_true", help="the smallest number of attacked tiles that flips each call")
    a.add_argument("--seed", type=int, default=0, help="seed of --select random")
    a.add_argument("--no-write", action="store_true", help="do not write the attacked slide")
    a.add_argument("--write-format", default="tiff", choices=["tiff", "dicom", "both"],
                   help="the attacked slide as a pyramidal TIFF (default), a DICOM WSI (a folder of .dcm files, wsidicom), or both")
    a.add_argument("--dicom-compression", default="jpeg2000", choices=["jpeg2000", "none"],
                   help="DICOM tiles: JPEG 2000 lossless (default) or uncompressed; level 0 reads back exactly either way")
    a.set_defaults(func=_guard(run_attack_command))
    t = ssub.add_parser("train-mil", help="train the attention-MIL head on mosaic bags (deterministic) and write it with its card")
    t.add_argument("--out", default=str(MODEL_DIR), help=f"output folder (default {MODEL_DIR})")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="training setting, e.g. --set steps=200")
    t.set_defaults(func=_guard(run_train_mil))
    d = ssub.add_parser("demo", help="the recorded run behind the site's Whole slides page")
    d.add_argument("--out", default="docs/results/slides", help="folder for summary.json and figures (default docs/results/slides)")
    d.add_argument("--work", help="folder for slides, stores and attacked TIFFs (default: a temporary folder)")
    d.set_defaults(func=_guard(run_demo))
