"""The Ray engine's cost and gain: overhead per unit against the local engine, and the speed-up with workers.

    python -m benchmarks.ray_engine                       # writes benchmarks/results/ray-engine-cpu.json

Two campaigns on the shipped tiles, each run on the local engine and on a local Ray instance:
many tiny units (FGSM on one tile each: the time is all overhead) and heavier units (PGD, 40 steps
on batches of 4 tiles: the time is the model's). Per-unit overhead = (Ray - local) / units on the
tiny campaign with one worker; speed-up = local / Ray with N workers on the heavy one. Ray's start-up
is timed apart. Not part of the tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _campaign(kind: str):
    from medfool_ref.campaign.plan import sample_items, tile_units

    items = sample_items()
    if kind == "tiny":
        return tile_units("fgsm", items, batch_size=1)
    return tile_units("pgd", items, params={"steps": 40, "early_stop": False}, batch_size=4)


def _time(units, engine, target) -> float:
    from medfool_ref.campaign.run import run_campaign
    from medfool_ref.campaign.store import ResultsStore

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = run_campaign(units, target, ResultsStore(Path(tmp)), engine=engine, progress=False)
        assert not run.failures, run.failures[0].error
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    import ray
    import torch

    from medfool_ref.campaign.engine import LocalEngine
    from medfool_ref.campaign.ray_engine import RayEngine
    from medfool_ref.targets.target import reference_target

    ap = argparse.ArgumentParser(prog="python -m benchmarks.ray_engine", description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ray-engine-cpu.json"))
    args = ap.parse_args(argv)
    target = reference_target(device="cpu")
    rows = {}
    for kind in ("tiny", "heavy"):
        units = _campaign(kind)
        local = _time(units, LocalEngine(), target)
        for workers in sorted({1, args.workers}):
            engine = RayEngine(num_cpus=workers)
            t0 = time.perf_counter()
            engine._init()
            startup = time.perf_counter() - t0
            on_ray = _time(units, engine, target)
            engine.shutdown()
            rows[f"{kind}, {workers} worker(s)"] = {"units": len(units), "local_s": round(local, 2), "ray_s": round(on_ray, 2),
                                                    "ray_startup_s": round(startup, 2),
                                                    "overhead_per_unit_ms": round(1000 * (on_ray - local) / len(units), 1),
                                                    "speed_up": round(local / on_ray, 2)}
            print(kind, workers, rows[f"{kind}, {workers} worker(s)"], file=sys.stderr, flush=True)
    result = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, "
              f"torch {torch.__version__}, ray {ray.__version__}", "rows": rows, "command": "python -m benchmarks.ray_engine"}
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
