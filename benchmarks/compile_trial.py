"""``torch.compile`` tried on the gradient attacks' inner loop: is it faster after warm-up, and is it correct?

    python -m benchmarks.compile_trial                        # tilenet and resnet50 on the CPU (about 10 min)
    python -m benchmarks.compile_trial --arch resnet50 --tiles 8

PGD (8/255, 10 steps) runs on the eager model and on ``torch.compile(model)`` (inductor, default mode), with
sample-wise early stopping off (every step on the whole batch: one shape) and on (medfool's default: the batch
shrinks as tiles are fooled, so the compiled graph meets new shapes). Reported per case: the first call (the
compilation), the median of the timed calls after it, the speed-up over eager, and correctness: the largest
difference between the two adversarial batches, how many tiles' success agrees, and the compiled model's largest
logit difference from eager on the clean tiles. Not part of the tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn: Any, repeats: int) -> tuple[float, list[float], Any]:
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return first, times, out


def trial(arch: str, device: torch.device, n_tiles: int, repeats: int) -> dict[str, Any]:
    from benchmarks import archs
    from benchmarks.run import tile_batch, tile_batch_224
    from medfool_ref.attacks.gradient import pgd

    model, fitted = archs.build(arch, device)
    x, y, _ = tile_batch(model, device, n_tiles) if arch == "tilenet" else tile_batch_224(model, device, n_tiles)
    torch._dynamo.reset()
    compiled = torch.compile(model)
    with torch.no_grad():
        t0 = time.perf_counter()
        logits_c = compiled(x)
        first_forward = time.perf_counter() - t0
        logit_diff = float((logits_c - model(x)).abs().max())
    rows = []
    for early_stop in (False, True):
        def attack(m: Any) -> Any:
            return pgd(m, x, y, eps=8 / 255, steps=10, early_stop=early_stop, seed=0)

        e_first, e_times, e_out = _timed(lambda: attack(model), repeats)
        c_first, c_times, c_out = _timed(lambda: attack(compiled), repeats)
        e_med, c_med = statistics.median(e_times), statistics.median(c_times)
        rows.append({
            "early_stop": early_stop, "eager_first_s": round(e_first, 3), "eager_median_s": round(e_med, 3),
            "compiled_first_s": round(c_first, 3), "compiled_median_s": round(c_med, 3),
            "speedup_after_warmup": round(e_med / c_med, 3),
            "max_abs_adv_diff": float((c_out.adversarial - e_out.adversarial).abs().max()),
            "success_agreement": f"{int((c_out.success == e_out.success).sum())}/{x.shape[0]}",
            "success_eager": int(e_out.success.sum()), "success_compiled": int(c_out.success.sum()),
        })
        print(arch, json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"arch": arch, "tiles": int(x.shape[0]), "size_px": int(x.shape[-1]), "parameters": archs.parameters(model),
            "fitted": fitted, "first_compiled_forward_s": round(first_forward, 3), "clean_logit_max_abs_diff": logit_diff,
            "repeats": repeats, "pgd": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compile_trial", description=__doc__.split("\n")[0])
    ap.add_argument("--arch", action="append", choices=("tilenet", "resnet50", "vit_s16"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiles", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", help="JSON path (default benchmarks/results/compile-<device>.json)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    import tempfile

    # a fresh inductor cache, so that the first call measures the compilation and not an earlier run's cache
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="medfool-inductor-")
    from benchmarks.output import machine_line, write_result

    result = {"date": dt.date.today().isoformat(), "device": str(device), "machine": machine_line(device),
              "command": "python -m benchmarks.compile_trial " + " ".join(argv if argv is not None else sys.argv[1:]),
              "trials": [trial(a, device, args.tiles, args.repeats) for a in args.arch or ["tilenet", "resnet50"]]}
    write_result(args.out or ROOT / "benchmarks" / "results" / f"compile-{'cpu' if device.type == 'cpu' else 'cuda'}.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
