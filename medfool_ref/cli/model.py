"""``medfool model train``: retrain the reference tile classifier with its committed recipe."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from ..registry import Extra
from .params import UsageError, coerce, progress_bar


def run_train(args: argparse.Namespace) -> int:
    from ..training.loop import TrainConfig
    from ..training.reference import train_reference

    config = TrainConfig()
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
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from ..targets.reference import MODEL_DIR

    p = sub.add_parser("model", help="the reference tile classifier")
    msub = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    t = msub.add_parser("train", help="train the reference model deterministically and write weights + model card")
    t.add_argument("--out", default=str(MODEL_DIR), help=f"output folder (default {MODEL_DIR})")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="training setting, e.g. --set steps=400")
    t.set_defaults(func=run_train)
