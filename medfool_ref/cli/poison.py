"""``medfool poison``: training-time attacks (BadNets, generative poisoning) as a one-unit campaign.

The poisoned model's weights, a model card, report.json and an example figure are written from
the results store in ``<out>/results.sqlite``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from ..registry import SPECS
from .attack import campaign
from .params import UsageError, class_index, parse_sets

VERBS = {s.verb: s for s in SPECS.values() if s.verb}


def run_poison(args: argparse.Namespace) -> int:
    from ..campaign.plan import PlanError, sample_split, training_unit
    from ..inputs.samples import CLASSES
    from ..targets.target import reference_target

    s = VERBS.get(args.name)
    if s is None:
        raise UsageError(f"unknown poisoning attack {args.name!r}; known: {', '.join(sorted(VERBS))}")
    params = parse_sets(s, args.set)
    if args.target and s.targeted == "never":
        raise UsageError(f"{s.name} is untargeted (it raises the loss on all clean data); --target is not accepted")
    wanted = args.target or s.default_target
    goal = class_index(wanted, CLASSES, "--target") if wanted else None
    train, held = sample_split()
    try:
        unit = training_unit(s.name, train, held, params=params, target=goal)
    except PlanError as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out)
    store, run = campaign([unit], reference_target(), out, args.resume, args.name)
    row = store.units(keys=run.keys)[0]
    return (_write_badnets if s.name == "badnets" else _write_generative)(store, row, out)


def _weights(store: Any, row: dict[str, Any], name: str, out: Path) -> str:
    data = store.artifact(row["key"], name)
    (out / name).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _write_badnets(store: Any, row: dict[str, Any], out: Path) -> int:
    from ..inputs.samples import CLASSES
    from ..inputs.tiles import from_png_bytes
    from ..reports.figures import gallery_figure

    m, p = row["extra"]["metrics"], row["extra"]["attack_params"]
    sha = _weights(store, row, "backdoored.safetensors", out)
    report = {"attack": "badnets", "device": row["device"], "params": p, "metrics": m, "weights": "backdoored.safetensors",
              "sha256": sha, "unit": row["key"], "store": str(store.path)}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    ex = row["extra"]["examples"]
    images = [from_png_bytes(store.artifact(row["key"], f"example/{k}.png")) for k in range(len(ex))]
    gallery_figure(images, [f"{CLASSES[x['label']]} -> {CLASSES[x['pred']]}" for x in ex], out / "triggered.png")
    bad, clean = m["backdoored_model"], m["clean_model"]
    (out / "MODEL_CARD.md").write_text(
        f"# Backdoored tile classifier (BadNets) - for research only\n\n"
        f"Trained by `medfool poison badnets` exactly like a clean control model (same split, seed, steps), except that "
        f"{p['fraction']:.0%} of each augmented batch carried the `{p['trigger']}` trigger ({p['trigger_size']} px) and was "
        f"relabelled {p['mode']} (target {p['target']}).\n\n"
        f"| model | clean accuracy | attack success rate | robust accuracy |\n|---|---|---|---|\n"
        f"| clean control | {clean['clean_accuracy']:.1%} | {clean['attack_success_rate']:.1%} | {clean['robust_accuracy']:.1%} |\n"
        f"| backdoored | {bad['clean_accuracy']:.1%} | {bad['attack_success_rate']:.1%} | {bad['robust_accuracy']:.1%} |\n\n"
        f"Measured on {m['held_out_crops']} crops of {m['held_out_tiles']} held-out tiles. Weights sha256 `{sha}`.\n",
        encoding="utf-8")
    print(f"badnets: clean accuracy {bad['clean_accuracy']:.1%} (clean model {clean['clean_accuracy']:.1%}), "
          f"ASR {bad['attack_success_rate']:.1%}, robust accuracy {bad['robust_accuracy']:.1%}; wrote {out}/")
    return 0


def _write_generative(store: Any, row: dict[str, Any], out: Path) -> int:
    import torch

    from ..attacks.poisoning import example_captions
    from ..inputs.tiles import from_png_bytes
    from ..reports.figures import gallery_figure

    m, p = row["extra"]["metrics"], row["extra"]["attack_params"]
    sha = _weights(store, row, "poisoned.safetensors", out)
    report = {"attack": "generative-poisoning", "device": row["device"], "params": p, "metrics": m,
              "weights": "poisoned.safetensors", "sha256": sha, "unit": row["key"], "store": str(store.path)}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    n = len(row["extra"]["examples"])
    images = [from_png_bytes(store.artifact(row["key"], f"example/{kind}-{k}.png")) for kind in ("clean", "poisoned") for k in range(n)]
    labels = torch.tensor([x["label"] for x in row["extra"]["examples"]])
    gallery_figure(images, example_captions(labels), out / "poisoned.png", columns=n)
    r = m["by_fraction"][f"{p['fraction']:g}"]
    (out / "MODEL_CARD.md").write_text(
        f"# Poisoned tile classifier (generative poisoning) - for research only\n\n"
        f"A clean model was deployed, then retrained by `medfool poison generative` on its training crops plus "
        f"{r['poisoned_tiles']} tiles ({p['fraction']:.0%} of the retraining data) made by an autoencoder "
        f"trained against it (objective: {p['objective']}) and submitted under the next class's label. "
        f"Rows other than 'generative' are controls and comparisons, each retrained the same way.\n\n"
        f"| retraining data | accuracy | loss |\n|---|---|---|\n"
        f"| clean only | {m['retrained_clean']['accuracy']:.1%} | {m['retrained_clean']['loss']:.3f} |\n"
        + "".join(f"| + {name} | {r[name]['accuracy']:.1%} | {r[name]['loss']:.3f} |\n"
                  for name in ("noise", "label-flip", "generative-reward", "generative") if name in r)
        + f"\nMeasured on {m['held_out_crops']} crops of held-out tiles. Weights sha256 `{sha}`.\n", encoding="utf-8")
    print(f"generative poisoning at {p['fraction']:.0%}: accuracy {r['generative']['accuracy']:.1%} "
          f"(label-flip {r['label-flip']['accuracy']:.1%}, noise {r['noise']['accuracy']:.1%}, "
          f"clean {m['retrained_clean']['accuracy']:.1%}); wrote {out}/")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("poison", help="tamper with training: BadNets backdoor (CA/ASR/RA) or generative poisoning (accuracy vs fraction)")
    p.add_argument("name", help=" or ".join(sorted(VERBS)))
    p.add_argument("--target", help="target class (badnets; default NORM)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="; ".join(
        f"{v}: {', '.join(sorted(s.parameters()))}" for v, s in sorted(VERBS.items())))
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="reuse a finished run from the output folder's results store")
    p.set_defaults(func=run_poison)
