"""The audit's precision modes side by side: float32, bf16 autocast, channels-last, per architecture.

    python -m benchmarks.precision                                   # the three architectures, CPU (about 25 min)
    python -m benchmarks.precision --arch resnet50 --tiles 16 --apgd-steps 20
    python -m benchmarks.precision --arch tilenet --arch resnet50 --mode float32 --mode float32+compiled \
        --out benchmarks/results/precision-cpu-compile.json

Each mode (``--mode``; float32+compiled: the model through ``torch.compile``) runs the same gradient part of the audit battery (FGSM, PGD 10 steps, APGD-CE) at the four
L-inf budgets through the campaign core on real tiles (the shipped sample tiles, resized to 224 px inside
the model for the 224 px architectures), in a fresh results store. Reported per mode: wall time, tiles per
second, and success (attack by budget, pooled over every attacked tile and budget, and the per-tile worst
case) judged on the float32 model, with its difference to float32 in points. Not part of the tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
MODES = {"float32": ("float32", False, False), "bf16": ("bf16", False, False), "float32+channels-last": ("float32", True, False),
         "bf16+channels-last": ("bf16", True, False), "float32+compiled": ("float32", False, True)}
DEFAULT_MODES = ("float32", "bf16", "float32+channels-last", "bf16+channels-last")
PROBES = ["fgsm", "pgd", "apgd-ce"]


class At224(nn.Module):
    """Tiles of any size resized (bilinear, differentiable) to the architecture's 224 px input."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 224 or x.shape[-2] != 224:
            x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        return self.model(x)


def one_mode(arch: str, model: nn.Module, items: list, precision: str, channels_last: bool, compiled: bool, apgd_steps: int,
             batch_size: int) -> dict[str, Any]:
    from medfool_ref.campaign.audit import fooled_by_tile, run_audit
    from medfool_ref.campaign.store import ResultsStore
    from medfool_ref.inputs.samples import CLASSES
    from medfool_ref.targets.precision import mode_name, with_precision
    from medfool_ref.targets.target import module_target

    target = with_precision(module_target(model, CLASSES, arch), precision, channels_last, compiled)
    device = target.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultsStore(Path(tmp))
        t0 = time.perf_counter()
        plan = run_audit(items, target, store, probes=PROBES, overrides={"apgd-ce": {"steps": apgd_steps}}, batch_size=batch_size,
                         progress=False)
        seconds = time.perf_counter() - t0
        rows, pooled, attacked, worst = [], 0, 0, {}
        for e in plan.entries:
            fooled = fooled_by_tile(store, e, e.eps)
            n, k = len(fooled), sum(fooled.values())
            pooled, attacked = pooled + k, attacked + n
            rows.append({"attack": e.probe.id, "eps_255": round(e.eps * 255, 3), "tiles": n, "fooled": k})
            w = worst.setdefault(round(e.eps * 255, 3), {})
            for item, ok in fooled.items():
                w[item] = w.get(item, False) or ok
        # robust accuracy over all audited tiles: the correct tiles no attack fooled, over every tile
        correct = len(next(iter(worst.values()))) if worst else 0
    doc = {"mode": mode_name(precision, channels_last, compiled), "seconds": round(seconds, 2), "tiles": len(items), "correct_tiles": correct,
           "tiles_per_second": round(len(items) / seconds, 3), "attacks": rows, "pooled_success": round(pooled / max(attacked, 1), 4),
           "pooled_pairs": attacked,
           "worst_case_robust_accuracy": {str(k): round(sum(not v for v in w.values()) / len(items), 4) for k, w in worst.items()}}
    if device.type == "cuda":
        doc["peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return doc


def run(arch: str, device: torch.device, n_tiles: int, apgd_steps: int, modes: list[tuple[str, bool, bool]], batch_size: int
        ) -> dict[str, Any]:
    from benchmarks.archs import build, parameters
    from medfool_ref.inputs.datasets import load_dataset
    from medfool_ref.inputs.samples import CLASSES

    model, fitted = build(arch, device)
    if arch != "tilenet":
        model = At224(model).eval()
    items = load_dataset("sample", tuple(CLASSES), max_tiles=n_tiles).items
    out: dict[str, Any] = {"arch": arch, "parameters": parameters(model), "fitted": fitted, "tiles": len(items),
                           "apgd_steps": apgd_steps, "modes": []}
    warm = []
    for precision, cl, comp in modes:  # warm-up: the first pass of each mode builds its kernels (timed apart: compilation)
        t0 = time.perf_counter()
        one_mode(arch, model, items[:2], precision, cl, comp, 2, batch_size)
        warm.append(round(time.perf_counter() - t0, 2))
    for (precision, cl, comp), w in zip(modes, warm):
        out["modes"].append({**one_mode(arch, model, items, precision, cl, comp, apgd_steps, batch_size), "warmup_seconds": w})
        print(arch, json.dumps({k: v for k, v in out["modes"][-1].items() if k != "attacks"}), file=sys.stderr, flush=True)
    base = out["modes"][0]
    for m in out["modes"]:
        m["speed_vs_float32"] = round(base["seconds"] / m["seconds"], 3)
        m["pooled_success_points_vs_float32"] = round(100 * (m["pooled_success"] - base["pooled_success"]), 2)
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Audit precision modes ({result['device']}, {result['date']})", "",
             f"{result['machine']}; gradient part of the battery ({', '.join(PROBES)}) at 1, 2, 4, 8 /255; success judged in float32.", "",
             "| arch | mode | tiles | s | tiles/s | speed vs float32 | pooled success | points vs float32 | worst case 1/2/4/8 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for a in result["archs"]:
        for m in a["modes"]:
            wc = "/".join(f"{v:.1%}" for v in m["worst_case_robust_accuracy"].values())
            lines.append(f"| {a['arch']} | {m['mode']} | {m['tiles']} | {m['seconds']} | {m['tiles_per_second']} | {m['speed_vs_float32']}x | "
                         f"{m['pooled_success']:.1%} of {m['pooled_pairs']} | {m['pooled_success_points_vs_float32']:+.2f} | {wc} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.precision", description=__doc__.split("\n")[0])
    ap.add_argument("--arch", action="append", choices=("tilenet", "resnet50", "vit_s16"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiles", type=int, help="tiles per architecture (default: all 65 for tilenet, 16 for the 224 px ones)")
    ap.add_argument("--apgd-steps", type=int, help="APGD-CE steps (default: the audit's 100 for tilenet, 20 for the 224 px ones)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--mode", action="append", choices=tuple(MODES), help="modes to run, the first is the reference (default: "
                    "float32, bf16 and, but for the ViT, the two channels-last ones)")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/precision-<device>.json, and .md beside it)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    archs = []
    for arch in args.arch or ["tilenet", "resnet50", "vit_s16"]:
        big = arch != "tilenet"
        names = args.mode or [m for m in DEFAULT_MODES if not (arch == "vit_s16" and "channels-last" in m)]  # the ViT: one conv only
        modes = [MODES[m] for m in names]
        archs.append(run(arch, device, args.tiles or (16 if big else 65), args.apgd_steps or (20 if big else 100), modes,
                         args.batch_size))
    from benchmarks.output import machine_line, write_result

    result = {"date": dt.date.today().isoformat(), "device": str(device), "machine": machine_line(device),
              "command": "python -m benchmarks.precision " + " ".join(argv if argv is not None else sys.argv[1:]), "archs": archs}
    out = args.out or ROOT / "benchmarks" / "results" / f"precision-{'cpu' if device.type == 'cpu' else 'cuda'}.json"
    write_result(out, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
