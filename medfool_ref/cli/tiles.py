"""``medfool tiles``: the shipped sample tiles, with their labels and paths (usable as ``--tile sample:CLASS``)."""

from __future__ import annotations

import argparse


def run_tiles(args: argparse.Namespace) -> int:
    from ..inputs.samples import CLASS_NAMES, sample_tiles

    seen: set[str] = set()
    for t in sample_tiles(verify=False):
        if args.label and t.label != args.label.upper():
            continue
        first = t.label not in seen
        seen.add(t.label)
        hint = f"sample:{t.label}" if first else ""
        print(f"{t.label:5} {hint:12} {t.path}  ({CLASS_NAMES[t.label]}; {t.dataset})")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("tiles", help="list the shipped sample tiles (labels and paths); --tile sample:CLASS takes the first of a class")
    p.add_argument("--label", help="only this class (e.g. TUM)")
    p.set_defaults(func=run_tiles)
