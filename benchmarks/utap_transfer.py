"""UTAP's transfer: one feature-scrambling pattern computed on the reference model, applied to other architectures.

    python -m benchmarks.utap_transfer          # ~4 min on 2 cores (most of it fitting the two backbones)

The universal pattern of :func:`medfool_ref.attacks.universal.utap` (8/255 L-inf, no labels used) is computed on the
reference model from every other 224 px sample tile (the support) and applied, unchanged, to the other 224 px
tiles: on the reference model itself (white-box on its encoder), and on the ResNet-50 and ViT-S/16 layouts of
``benchmarks/archs.py`` (random seeded backbones whose batch norm and head were fitted on the shipped tiles, so they
are real if weak tile classifiers: held-out accuracy is stated beside). A tile counts as fooled when the model
classified it correctly and the pattern changes its class; beside each figure, a random sign pattern of the same
L-inf norm. Every rate has its count and 95% Wilson interval. Results go to benchmarks/results/utap-transfer-cpu.json
with the pattern's sha256 (tests/test_universal.py recomputes the pattern and compares).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import sys
from pathlib import Path
from typing import Any

import torch

from . import archs

ROOT = Path(__file__).resolve().parents[1]
EPS = 8 / 255


def split_224() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(support images, scored images, scored labels, support labels): the 224 px sample tiles, alternating."""
    from medfool_ref.inputs.samples import CLASSES, sample_tiles
    from medfool_ref.inputs.tiles import read_tile

    tiles = [t for t in sample_tiles() if read_tile(t.path).shape[-1] == 224]
    x = torch.stack([read_tile(t.path) for t in tiles])
    y = torch.tensor([CLASSES.index(t.label) for t in tiles])
    return x[0::2], x[1::2], y[1::2], y[0::2]


def pattern(seed: int = 0) -> torch.Tensor:
    """The UTAP pattern computed on the reference model from the support tiles (deterministic for a seed)."""
    from medfool_ref.attacks.universal import utap
    from medfool_ref.targets.reference import load_model

    support, _, _, _ = split_224()
    model = load_model(device="cpu").eval()
    return utap(model, support, None, eps=EPS, seed=seed).extra["perturbation"].detach()


def sha256(delta: torch.Tensor) -> str:
    return hashlib.sha256(delta.float().contiguous().numpy().tobytes()).hexdigest()


def _count(k: int, n: int) -> dict[str, Any]:
    from medfool_ref.training.reference import wilson_interval

    lo, hi = wilson_interval(k, n)
    return {"fooled": k, "of": n, "rate": k / n if n else None, "wilson95": [round(lo, 4), round(hi, 4)]}


@torch.no_grad()
def measure(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, seed: int = 4242) -> dict[str, Any]:
    from medfool_ref.attacks.universal import random_pattern

    def pred(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([model(images[i:i + 8]).argmax(1) for i in range(0, len(images), 8)])

    right = pred(x) == y
    adv = pred((x + delta).clamp(0, 1)) != y
    rand = pred((x + random_pattern(delta, EPS, seed)).clamp(0, 1)) != y
    n = int(right.sum())
    return {"correct": n, "tiles": int(y.numel()), "utap": _count(int((right & adv).sum()), n),
            "random_pattern": _count(int((right & rand).sum()), n)}


def run(seed: int = 0) -> dict[str, Any]:
    from medfool_ref.targets.reference import load_model

    delta = pattern(seed)
    _, x, y, _ = split_224()
    rows = {"tilenet": {"fitted": None, **measure(load_model(device="cpu").eval(), x, y, delta)}}
    for arch in ("resnet50", "vit_s16"):
        print(f"[utap-transfer] fitting {arch}", file=sys.stderr, flush=True)
        model, fitted = archs.build(arch, torch.device("cpu"))
        rows[arch] = {"fitted": fitted, **measure(model, x, y, delta)}
    return {"eps_255": 8, "seed": seed, "support_tiles": int(split_224()[0].shape[0]), "scored_tiles": int(y.numel()),
            "pattern_sha256": sha256(delta), "models": rows}


def main(argv: list[str] | None = None) -> int:
    from .output import machine_line, write_result

    ap = argparse.ArgumentParser(prog="python -m benchmarks.utap_transfer", description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "utap-transfer-cpu.json"))
    args = ap.parse_args(argv)
    result = {"date": dt.date.today().isoformat(), "machine": machine_line(torch.device("cpu")), "threads": torch.get_num_threads(),
              **run(args.seed), "command": "python -m benchmarks.utap_transfer " + " ".join(argv if argv is not None else sys.argv[1:])}
    lines = ["# UTAP computed on the reference model, applied to other architectures", "",
             f"{result['date']}, {result['machine']}; pattern sha256 `{result['pattern_sha256']}`; support {result['support_tiles']} "
             f"tiles, scored {result['scored_tiles']} other 224 px tiles.", "",
             "| model | held-out accuracy (fit) | correctly classified | fooled by UTAP | fooled by a random pattern |", "|---|---|---|---|---|"]
    for name, r in result["models"].items():
        acc = f"{r['fitted']['held_out_accuracy']:.0%}" if r["fitted"] else "reference"
        u, b = r["utap"], r["random_pattern"]
        lines.append(f"| {name} | {acc} | {r['correct']}/{r['tiles']} | {u['fooled']}/{u['of']} ({u['rate']:.0%}; "
                     f"{u['wilson95'][0]:.0%}-{u['wilson95'][1]:.0%}) | {b['fooled']}/{b['of']} ({b['rate']:.0%}; "
                     f"{b['wilson95'][0]:.0%}-{b['wilson95'][1]:.0%}) |")
    write_result(args.out, result, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
