"""What a defence costs the audit per attack step: PGD through each registered input defence, against the model alone.

    python -m benchmarks.defended                            # tilenet (16 tiles) and resnet50 (4 tiles): ~10 min on 2 cores
    python -m benchmarks.defended --arch tilenet --tiles 16 --steps 10 --repeats 3

For every system the same PGD (8/255, ``steps`` steps, every step on every tile: ``early_stop=False``) runs on the
same initially-correct tiles; the figure is seconds per step (median of ``repeats`` timed runs after a warm-up) and
the ratio to the undefended model's, with peak memory beside it. Each defence is timed in the two modes the
defended audit uses: **adaptive** (BPDA: the real transformation forward, a stand-in gradient backward; EOT over
``draws`` random draws per tile in one batch for a randomised defence) and **plain** (autograd through the real
chain). The issue's goal: a deterministic defence adds at most 30% per step (BPDA adds no extra forward); for EOT
the reference is ``draws`` times the undefended step (what a loop over draws would cost at best).
Not part of the tests (no timing is asserted anywhere).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import torch

from . import archs
from .peers import timed
from .run import machine, tile_batch, tile_batch_224

ROOT = Path(__file__).resolve().parents[1]
DEFENCES = ("jpeg", "bit-depth", "median", "stain-norm", "resize-pad")


def _pgd_seconds(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, repeats: int) -> tuple[float, float, float]:
    """(seconds per step, peak MB, success) of PGD 8/255 with every step on every tile."""
    from medfool_ref.campaign.execute import run_attack

    params = {"eps": 8 / 255, "steps": steps, "step_size": 2 / 255, "early_stop": False}
    seconds, adv = timed(lambda: run_attack("pgd", model, x, y, params=params), x.device, repeats)
    with torch.no_grad():
        success = float((model(adv.adversarial).argmax(1) != y).float().mean())
    return seconds / steps, float(timed.peak_mb or 0.0), success  # type: ignore[attr-defined]


def run(arch: str, n_tiles: int, steps: int, repeats: int, draws: int, device: torch.device) -> dict[str, Any]:
    from medfool_ref.defences.specs import SPECS, parse_all
    from medfool_ref.defences.system import Defended

    model, fitted = archs.build(arch, device)
    x, y, names = tile_batch(model, device, n_tiles) if arch == "tilenet" else tile_batch_224(model, device, n_tiles)
    print(f"[bench] {arch}: PGD x {steps} steps on {x.shape[0]} tiles of {x.shape[-1]} px", file=sys.stderr, flush=True)
    base, base_mb, base_success = _pgd_seconds(model, x, y, steps, repeats)
    rows: list[dict[str, Any]] = [{"system": "undefended", "mode": "-", "seconds_per_step": round(base, 4), "ratio": 1.0,
                                   "peak_mb": base_mb, "success": round(base_success, 3)}]
    for name in DEFENCES:
        spec = SPECS[name]
        for adaptive in (True, False):
            system = Defended(model, parse_all([name]), adaptive=adaptive, draws=draws).eval()
            per_step, mb, success = _pgd_seconds(system, x, y, steps, repeats)
            mode = ("adaptive: " + ("EOT over %d draws" % draws if spec.randomised else
                                    "white-box" if spec.differentiable else "BPDA")) if adaptive else "plain"
            row = {"system": name, "mode": mode, "seconds_per_step": round(per_step, 4), "ratio": round(per_step / base, 3),
                   "peak_mb": mb, "success": round(success, 3)}
            if adaptive and spec.randomised:
                row["ratio_to_a_loop_over_draws"] = round(per_step / (draws * base), 3)
            rows.append(row)
            print(f"[bench]   {name} ({mode}): {per_step:.4f} s/step, {per_step / base:.2f}x", file=sys.stderr, flush=True)
    return {"arch": arch, "parameters": archs.parameters(model), "fitted": fitted,
            "tiles": {"count": int(x.shape[0]), "size_px": int(x.shape[-1]), "names": names},
            "steps": steps, "repeats": repeats, "eot_draws": draws, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# The defended audit's cost per attack step ({result['date']})", "",
             f"Machine: {result['machine']['platform']}, {result['machine']['cpu_count']} CPUs, "
             f"{result['machine']['torch_threads']} torch threads, {result['machine']['device']}; torch {torch.__version__}.",
             f"Command: `{result['command']}`", ""]
    for a in result["archs"]:
        lines += [f"## {a['arch']} ({a['parameters']:,} parameters), {a['tiles']['count']} tiles of {a['tiles']['size_px']} px, "
                  f"PGD 8/255 x {a['steps']} steps, median of {a['repeats']}", "",
                  "| system | mode | s per step | x undefended | peak MB | PGD success |", "|---|---|---|---|---|---|"]
        for r in a["rows"]:
            extra = f" ({r['ratio_to_a_loop_over_draws']:.2f}x a loop over draws)" if "ratio_to_a_loop_over_draws" in r else ""
            lines.append(f"| {r['system']} | {r['mode']} | {r['seconds_per_step']:.4f} | {r['ratio']:.2f}{extra} | "
                         f"{r['peak_mb']:.0f} | {r['success']:.0%} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.defended", description=__doc__.split("\n")[0])
    ap.add_argument("--arch", action="append", choices=("tilenet", "resnet50", "vit_s16"),
                    help="architectures (default: tilenet and resnet50)")
    ap.add_argument("--tiles", type=int, help="tiles per batch (default 16 for tilenet, 4 for the 224 px backbones)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs after one warm-up (the median is reported)")
    ap.add_argument("--draws", type=int, default=8, help="EOT draws for resize-pad (default 8, the audit's)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "defended-cpu.json"))
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    result = {"date": dt.date.today().isoformat(), "machine": machine(device),
              "archs": [run(a, args.tiles or (16 if a == "tilenet" else 4), args.steps, args.repeats, args.draws, device)
                        for a in args.arch or ["tilenet", "resnet50"]],
              "command": "python -m benchmarks.defended " + " ".join(argv if argv is not None else sys.argv[1:])}
    from .output import write_result

    write_result(args.out, result)
    Path(args.out).with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
