"""``medfool model train`` and ``medfool model cv``: retrain the reference tile classifier with its committed
recipe, and cross-validate that recipe (and the augmentation study) into its model card."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from ..registry import Extra
from .params import UsageError, coerce, progress_bar


def _fold_bar(name: str, fold: int):  # type: ignore[no-untyped-def]
    return progress_bar(f"{name}: fold {fold + 1}/5")


def run_train(args: argparse.Namespace) -> int:
    from ..training.reference import reference_config, train_reference, write_cv

    config = reference_config()
    settable = {f.name: Extra(f.name, type(getattr(config, f.name)), getattr(config, f.name)) for f in fields(config)}
    for pair in args.set or []:
        key, sep, raw = (part.strip() for part in pair.partition("="))
        if not sep:
            raise UsageError(f"--set {pair!r}: expected key=value")
        if key not in settable:
            raise UsageError(f"--set {key}: unknown setting; training takes {', '.join(settable)}")
        setattr(config, key, coerce(settable[key], raw))
    card = train_reference(Path(args.out), config, progress=progress_bar("training"))
    held = card["held_out"]
    print(f"held-out accuracy {held['correct']}/{held['tiles']} ({held['accuracy']:.1%}); weights sha256 {card['sha256']}; wrote {args.out}/")
    if args.cv:
        card = write_cv(Path(args.out), progress=_fold_bar)
        _print_cv(card)
    return 0


def run_cv(args: argparse.Namespace) -> int:
    from ..training.reference import CARD_JSON, write_cv

    if not (Path(args.out) / CARD_JSON).is_file():
        raise UsageError(f"{args.out}: no {CARD_JSON}; run `medfool model train` first")
    card = write_cv(Path(args.out), study=args.study, rerun=args.rerun, progress=_fold_bar)
    _print_cv(card)
    return 0


def _print_cv(card: dict) -> None:
    cv = card["cross_validation"]
    for run in cv.get("study", []):
        lo, hi = run["interval_95"]
        print(f"{run['name']:>18}: {run['correct']}/{run['tiles']} ({run['accuracy']:.1%}; 95% {lo:.1%} to {hi:.1%})")
    r = cv["recipe"]
    lo, hi = r["interval_95"]
    per_fold = " ".join(f"{f['correct']}/{f['tiles']}" for f in r["per_fold"])
    print(f"cross-validated accuracy of the recipe {r['correct']}/{r['tiles']} ({r['accuracy']:.1%}; 95% Wilson interval "
          f"{lo:.1%} to {hi:.1%}); per fold {per_fold}")


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from ..targets.reference import MODEL_DIR

    p = sub.add_parser("model", help="the reference tile classifier")
    msub = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    t = msub.add_parser("train", help="train the reference model deterministically and write weights + model card")
    t.add_argument("--out", default=str(MODEL_DIR), help=f"output folder (default {MODEL_DIR})")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="training setting, e.g. --set steps=400")
    t.add_argument("--cv", action="store_true", help="also cross-validate the recipe (5 more trainings) into the card")
    t.set_defaults(func=run_train)
    c = msub.add_parser("cv", help="5-fold cross-validation by tile of the card's recipe, written into the card "
                                   "(the weights are not touched)")
    c.add_argument("--out", default=str(MODEL_DIR), help=f"model folder whose card to update (default {MODEL_DIR})")
    c.add_argument("--study", action="store_true", help="also run the augmentation study (5 trainings per setting)")
    c.add_argument("--rerun", action="store_true",
                   help="retrain every fold even where the card already holds a result for the same settings")
    c.set_defaults(func=run_cv)
