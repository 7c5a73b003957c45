"""Whole slides: tiles per second (read + tissue check [+ inference]) and peak memory, medfool beside histolab.

    python -m benchmarks.slide_scale                               # CMU-1 small region and a 20,000 px mosaic
    python -m benchmarks.slide_scale --side 20000 --work /tmp/wsi --histolab-python /tmp/histolab-venv/bin/python
    python -m benchmarks.slide_scale --arch resnet50 --arch vit_s16     # predict on CMU-1 per architecture

Rows, each measured in a fresh process (peak resident memory: the process's VmHWM; wall time of the work itself,
after imports and model loading):

- ``medfool baseline``: imports, the model and the plan only (no tile read): the memory the other medfool rows start from.
- ``medfool tiles``: plan the slide (tissue on a low-resolution read, 224 px tiles at 0.5 um/px) and read every
  tissue tile through ``read_regions`` (the pool of reader threads), batch by batch: read + tissue check.
- ``medfool predict``: the same through the campaign core with the reference model (``predict_slide``): read +
  tissue check + inference, results store included.
- ``mosaic`` (in ``mosaic``): writing the 20,000 px mosaic itself, a pyramidal tiled TIFF streamed tile by tile.
- ``medfool predict, <arch>`` (``--arch resnet50``, ``--arch vit_s16``): the predict row on CMU-1 with a benchmark
  architecture of ``benchmarks/archs.py`` (224 px input; no MIL head, which belongs to the reference model).
- ``histolab``: histolab's ``GridTiler`` (224 px at level 0, no overlap, ``tissue_percent=50``) over the whole slide
  (an all-true extraction mask, so its grid is ours), iterating its tile generator without saving PNGs: read +
  histolab's per-tile tissue check. histolab 0.7 pins numpy 1.24 / Pillow 10 / openslide-python 1.3, so it lives in
  its own virtual environment (``--histolab-python``; LD_LIBRARY_PATH points its openslide-python at openslide-bin).

TIAToolbox is not measured: ``pip install tiatoolbox`` would replace torch (with a CUDA build), numpy, Pillow,
scikit-learn, matplotlib and openslide-python in this environment, i.e. it does not install cleanly beside medfool.
Not part of the tests (no timing is asserted anywhere).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CMU1 = ROOT / "medfool_ref" / "data" / "slides" / "CMU-1-Small-Region.svs"

CHILD = r'''
import json, os, resource, sys, time
mode, slide, out = sys.argv[1], sys.argv[2], sys.argv[3]
grid = None
if mode == "mosaic":  # write the benchmark's mosaic (streamed, tile by tile): its time and peak memory
    from medfool_ref.inputs.mosaic import CELL, parse_layout, write_mosaic

    n = max(3, round(int(out) / CELL))
    t0 = time.perf_counter()
    truth = write_mosaic(slide, parse_layout(f"{n}x{n}", tumour=[f"{n // 3}:{n // 2},{n // 3}:{n // 2}"]), seed=0)
    seconds, n = time.perf_counter() - t0, n * n
elif mode == "histolab":
    import numpy as np
    from histolab.masks import BinaryMask
    from histolab.slide import Slide
    from histolab.tiler import GridTiler

    class Whole(BinaryMask):
        def _mask(self, slide):
            w, h = slide.thumbnail.size
            return np.ones((h, w), bool)

    t0 = time.perf_counter()
    s = Slide(slide, processed_path=out)
    tiler = GridTiler(tile_size=(224, 224), level=0, check_tissue=True, tissue_percent=50.0, pixel_overlap=0)
    n = sum(1 for _ in tiler._tiles_generator(s, Whole()))
    seconds = time.perf_counter() - t0
else:
    import torch
    from medfool_ref.campaign.slide import plan_slide, predict_slide, thresholds_for
    from medfool_ref.campaign.store import ResultsStore
    from medfool_ref.inputs.slides import read_regions
    from medfool_ref.targets.aggregate import load_mil
    from medfool_ref.targets.target import reference_target

    arch = os.environ.get("MEDFOOL_BENCH_ARCH", "tilenet")
    if arch == "tilenet":
        target, head = reference_target(device="cpu"), load_mil()
    else:  # a benchmark architecture (fitted before the clock starts); the MIL head belongs to the reference model
        from benchmarks.archs import build
        from medfool_ref.inputs.samples import CLASSES
        from medfool_ref.targets.target import module_target

        target, head = module_target(build(arch, torch.device("cpu"))[0], CLASSES, arch), None
    t0 = time.perf_counter()
    plan = plan_slide(slide, target_mpp=0.5, side=224)
    if mode == "baseline":  # imports, model and the plan only: what the other medfool rows start from
        pass
    elif mode == "tiles":
        for i in range(0, len(plan.items), 64):
            read_regions(plan.items[i:i + 64])
    else:
        predict_slide(plan, target, ResultsStore(out), head=head, thresholds=thresholds_for(target, head), batch_size=64,
                      progress=False)
    seconds = time.perf_counter() - t0
    n, grid = len(plan.items), plan.grid_tiles
# VmHWM: the peak of this process image (ru_maxrss would carry over the parent's peak across fork + exec)
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")]
print(json.dumps({"tiles": n, "grid_tiles": grid, "seconds": seconds,
                  "peak_rss_mb": (hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024}))
'''


def child(python: str, mode: str, slide: Path, out: Path | str, env: dict[str, str] | None = None) -> dict[str, Any]:
    if isinstance(out, Path):
        out.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([python, "-c", CHILD, mode, str(slide), str(out)], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, **(env or {})}, check=False)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1]}
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    doc["tiles_per_second"] = doc["tiles"] / doc["seconds"] if doc["seconds"] and mode != "baseline" else None
    return doc


def make_mosaic(path: Path, side: int) -> dict[str, Any]:
    """Write the mosaic in a fresh process (time, peak memory); or describe the one already there."""
    row = child(sys.executable, "mosaic", path, str(side)) if not path.is_file() else {"note": "reused from an earlier run"}
    truth = json.loads(path.with_suffix(".truth.json").read_text(encoding="utf-8"))
    return {**row, "cells": f"{truth['layout']['rows']}x{truth['layout']['cols']}", "dimensions": truth["dimensions"],
            "levels": len(truth["levels"]), "file_mb": round(path.stat().st_size / 2**20, 1)}


def histolab_env(python: str) -> dict[str, str]:
    """LD_LIBRARY_PATH to openslide-bin's library inside histolab's environment (its openslide-python predates it)."""
    code = "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('openslide_bin').origin))"
    res = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return {"LD_LIBRARY_PATH": res.stdout.strip()} if res.returncode == 0 else {}


def versions(histolab_python: str | None) -> dict[str, str]:
    import openslide
    import tifffile
    import torch

    from medfool_ref import __version__

    out = {"medfool": __version__, "torch": torch.__version__, "openslide": openslide.__library_version__,
           "openslide-python": openslide.__version__, "tifffile": tifffile.__version__}
    if histolab_python:
        res = subprocess.run([histolab_python, "-c", "import histolab, numpy; print(histolab.__version__, numpy.__version__)"],
                             capture_output=True, text=True, env={**os.environ, **histolab_env(histolab_python)}, check=False)
        if res.returncode == 0:
            h, n = res.stdout.split()
            out.update({"histolab": h, "histolab's numpy": n})
    return out


def per_arch(args: argparse.Namespace, work: Path) -> int:
    """The predict row on CMU-1 for the reference model and each ``--arch``, in one run: the pipeline's throughput per model."""
    import shutil

    rows = []
    for arch in ["tilenet", *args.arch]:
        shutil.rmtree(work / f"predict-{arch}", ignore_errors=True)
        r = child(sys.executable, "predict", CMU1, work / f"predict-{arch}", {"MEDFOOL_BENCH_ARCH": arch})
        rows.append({"slide": CMU1.name, "arch": arch, "implementation": "medfool predict (read + tissue + inference)", **r})
        print(json.dumps(rows[-1]), flush=True)
    out = args.out if args.out != str(ROOT / "benchmarks" / "results" / "slide-scale-cpu.json") else \
        str(ROOT / "benchmarks" / "results" / "slide-scale-archs-cpu.json")
    doc = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": {"machine": f"{platform.machine()} {platform.system()}", "cpu_count": os.cpu_count()},
           "versions": versions(None), "command": "python -m benchmarks.slide_scale " + " ".join(sys.argv[1:]),
           "grid": "224 px tiles at 0.5 um/px, no overlap, level 0, >= 50% tissue; batches of 64 on the CPU; the benchmark "
                   "architectures' backbones are random with batch norm and head fitted on the shipped tiles (no MIL head)",
           "rows": rows}
    Path(out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", type=int, default=20000, help="side of the mosaic in level-0 pixels (default 20000)")
    p.add_argument("--work", default="/tmp/medfool-slide-scale", help="folder for the mosaic and the stores")
    p.add_argument("--histolab-python", help="a python with histolab installed (its own virtual environment)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "slide-scale-cpu.json"))
    p.add_argument("--arch", action="append", choices=("resnet50", "vit_s16"),
                   help="also run 'predict' on CMU-1 with this benchmark architecture (repeatable; max, mean and top-k calls)")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.arch:
        return per_arch(args, work)
    mosaic = work / f"mosaic-{args.side}.tif"
    mosaic_info = make_mosaic(mosaic, args.side)
    print(json.dumps({"mosaic": mosaic_info}), flush=True)
    load = [os.getloadavg()[0]]
    rows = []
    for name, slide in (("CMU-1-Small-Region.svs", CMU1), (mosaic.name, mosaic)):
        for mode in ("baseline", "tiles", "predict", "histolab"):
            if mode == "histolab" and not args.histolab_python:
                continue
            python = args.histolab_python if mode == "histolab" else sys.executable
            env = histolab_env(python) if mode == "histolab" else None
            r = child(python, mode, slide, work / f"{mode}-{slide.stem}", env)
            rows.append({"slide": name, "implementation": {"baseline": "medfool baseline (imports, model, plan; no tiles read)",
                         "tiles": "medfool tiles (read + tissue)", "predict":
                         "medfool predict (read + tissue + inference)", "histolab": "histolab GridTiler (read + tissue)"}[mode], **r})
            print(json.dumps(rows[-1]), flush=True)
    load.append(os.getloadavg()[0])
    doc = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": {"machine": f"{platform.machine()} {platform.system()}", "cpu_count": os.cpu_count(),
                       "load_average_1min_before_after": load},
           "versions": versions(args.histolab_python), "command": "python -m benchmarks.slide_scale " + " ".join(argv or sys.argv[1:]),
           "grid": "224 px tiles at 0.5 um/px (CMU-1 at 0.499 um/px: 224 level-0 px), no overlap, level 0; medfool keeps tiles "
                   ">= 50% tissue (Otsu on saturation at low resolution), histolab tissue_percent=50 on each tile",
           "mosaic": {"path": str(mosaic), **mosaic_info, "statement": "a composition of real labelled tiles, not a real slide"},
           "tiatoolbox": "not measured: pip would replace torch, numpy, Pillow, scikit-learn, matplotlib and openslide-python",
           "rows": rows}
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
