"""The audit's throughput and memory: tiles per second, the PGD part against a torchattacks loop, flat memory.

    python -m benchmarks.audit_scale                      # 1,000 and 10,000 tiles, then the PGD comparison
    python -m benchmarks.audit_scale --tiles 1000 --out benchmarks/results/audit-scale-cpu.json

The tiles are real: 96 px crops of the shipped H&E tiles, each under one of the 8 flips and rotations
and a one-step brightness offset, so that every file has its own bytes (the results store keys units
by content, and copies would be deduplicated). Each audit runs in a fresh process; its peak resident
memory is read from the operating system. Not part of the tests (no timing is asserted anywhere).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BATTERY = "fgsm,pgd"  # the gradient attacks at one budget: what scales with the number of tiles


def make_tiles(folder: Path, n: int, side: int = 96) -> Path:
    """``n`` distinct 8-bit tiles in a folder per class, cut from the shipped tiles."""
    from medfool_ref.inputs.samples import sample_tiles

    tiles = sample_tiles()
    rng = np.random.default_rng(0)
    arrays = [np.asarray(Image.open(t.path).convert("RGB")) for t in tiles]
    for i in range(n):
        k = i % len(tiles)
        a = arrays[k]
        top, left = rng.integers(0, a.shape[0] - side + 1), rng.integers(0, a.shape[1] - side + 1)
        crop = np.rot90(a[top:top + side, left:left + side], k=i // len(tiles) % 4)
        if (i // (4 * len(tiles))) % 2:
            crop = crop[:, ::-1]
        crop = np.clip(crop.astype(int) + (i // (8 * len(tiles))) % 3 - 1, 0, 255).astype(np.uint8)
        out = folder / tiles[k].label
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(crop)).save(out / f"{i:05d}.png")
    return folder


# runs one command and prints its peak resident memory (kB on Linux), so each audit is measured on its own
_PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)")


def audit(data: Path, out: Path, attacks: str, budgets: str, device: str) -> dict[str, Any]:
    exe = Path(sys.executable).parent / "medfool"
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PEAK, str(exe), "audit", "--data", str(data), "--out", str(out), "--attacks", attacks,
                           "--budgets", budgets, "--batch-size", "64", "--device", device], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    peak_kb = int(proc.stderr.strip().splitlines()[-1])
    doc = json.loads((out / "report.json").read_text())
    return {"tiles": doc["data"]["tiles"], "attacks": attacks, "budgets": budgets, "seconds": round(seconds, 1),
            "tiles_per_second": round(doc["data"]["tiles"] / seconds, 1), "peak_rss_mb": round(peak_kb / 1024)}


def pgd_versus_torchattacks(n: int, device: str) -> dict[str, Any]:
    """The PGD part of an audit (campaign core: units, store, scoring) against the loop a user would write."""
    import torch
    import torchattacks

    from medfool_ref.campaign.plan import tile_units
    from medfool_ref.campaign.run import run_campaign
    from medfool_ref.campaign.store import ResultsStore
    from medfool_ref.inputs.datasets import load_dataset
    from medfool_ref.targets.target import reference_target

    target = reference_target(device=device)
    with tempfile.TemporaryDirectory() as tmp:
        data = load_dataset(make_tiles(Path(tmp) / "tiles", n), target.classes)
        eps, steps = 8 / 255, 10
        t0 = time.perf_counter()
        units = tile_units("pgd", data.items, params={"eps": eps, "steps": steps, "early_stop": False}, batch_size=64)
        run_campaign(units, target, ResultsStore(Path(tmp) / "store"), progress=False)
        ours = time.perf_counter() - t0
        from medfool_ref.campaign.execute import load_items

        attack = torchattacks.PGD(target.model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=True)
        t0 = time.perf_counter()
        fooled = 0
        for i in range(0, len(data.items), 64):  # what a user writes: read a batch, attack it, count
            x, y = load_items(data.items[i:i + 64], target.device)
            adv = attack(x, y)
            with torch.no_grad():
                fooled += int((target.model(adv).argmax(1) != y).sum())
        theirs = time.perf_counter() - t0
    return {"tiles": n, "medfool_campaign_s": round(ours, 2), "torchattacks_loop_s": round(theirs, 2),
            "ratio_torchattacks_over_medfool": round(theirs / ours, 3),
            "note": "both: PGD 8/255, 10 steps, every step on every tile (early_stop=False), batches of 64; medfool's time "
                    "includes reading, keying, scoring in float and 8-bit, and writing every tile's record to SQLite"}


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(prog="python -m benchmarks.audit_scale", description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", type=int, action="append", help="tile counts (default 1000 and 10000)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "audit-scale-cpu.json"))
    args = ap.parse_args(argv)
    rows = []
    for n in args.tiles or [1000, 10000]:
        with tempfile.TemporaryDirectory() as tmp:
            data = make_tiles(Path(tmp) / "tiles", n)
            rows.append(audit(data, Path(tmp) / "out", BATTERY, "8", args.device))
            print(rows[-1], file=sys.stderr, flush=True)
    result = {"date": dt.date.today().isoformat(), "device": args.device,
              "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
              "audits": rows, "pgd": pgd_versus_torchattacks(min(args.tiles or [1000]), args.device),
              "command": "python -m benchmarks.audit_scale " + " ".join(argv or sys.argv[1:])}
    from benchmarks.output import write_result

    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
