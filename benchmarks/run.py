"""Run the peer comparison and write JSON plus a markdown table.

    python -m benchmarks.run                      # every attack, on the default device
    python -m benchmarks.run --only pgd --only deepfool --tiles 8
    python -m benchmarks.run --device cuda --out benchmarks/results/peers-h100.json
    python -m benchmarks.run --arch resnet50 --only fgsm --only pgd --only deepfool --tiles 4 --repeats 1

``--arch`` (``benchmarks/archs.py``): ``tilenet`` (the reference model, the default), ``resnet50`` or ``vit_s16``
in plain torch: random backbones with batch norm calibrated and the last layer fitted on the shipped tiles, attacked
on the 224 px tiles they classify correctly (held-out accuracy in the results).

Needs the peers: ``pip install -e '.[bench]'`` and ``pip install --no-deps torchattacks==3.5.1``
(torchattacks pins an old ``requests`` and pulls torchvision, neither of which it imports).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from medfool_ref.campaign.showcase import correct_batches
from medfool_ref.inputs.samples import CLASSES
from medfool_ref.targets.target import module_target

from . import archs, peers

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = ("fgsm", "pgd", "deepfool", "one-pixel", "patch", "eot", "badnets")
PEERS = ("torchattacks", "foolbox", "adversarial-robustness-toolbox")


def tile_batch(model: torch.nn.Module, device: torch.device, n: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The first ``n`` initially-correct sample tiles of the most common tile size."""
    x, y, items = max(correct_batches(module_target(model, CLASSES)), key=lambda b: b[0].shape[0])
    return x[:n], y[:n], [i.name for i in items[:n]]


def _is_baseline(impl: str) -> bool:
    """The medfool row a peer is compared with: the one run exactly as the peers run."""
    return impl in ("medfool", "medfool (early_stop=False)") or impl.startswith(("medfool (Gaussian", "medfool (rotation"))


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def tile_batch_224(model: torch.nn.Module, device: torch.device, n: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The first ``n`` 224 px sample tiles ``model`` classifies correctly."""
    from medfool_ref.inputs.samples import sample_tiles
    from medfool_ref.inputs.tiles import read_tile

    tiles = [t for t in sample_tiles() if read_tile(t.path).shape[-1] == 224]
    x = torch.stack([read_tile(t.path) for t in tiles]).to(device)
    y = torch.tensor([CLASSES.index(t.label) for t in tiles], device=device)
    with torch.no_grad():
        right = torch.cat([model(x[i:i + 8]).argmax(1) for i in range(0, len(x), 8)]) == y
    if int(right.sum()) < n:
        raise SystemExit(f"error: the model gets fewer than {n} of the 224 px tiles right; ask for fewer with --tiles")
    keep = right.nonzero().squeeze(1)[:n]
    return x[keep], y[keep], [tiles[int(i)].path.name for i in keep]


def run(attacks: list[str], device: torch.device, n_tiles: int, repeats: int, arch: str = "tilenet") -> dict[str, Any]:
    model, fitted = archs.build(arch, device)
    x, y, names = tile_batch(model, device, n_tiles) if arch == "tilenet" else tile_batch_224(model, device, n_tiles)
    target = CLASSES.index("NORM")
    rows: list[peers.Row] = []
    slow = max(1, repeats // 3)
    for name in attacks:
        print(f"[bench] {name} on {x.shape[0]} tiles of {x.shape[-1]} px ({device})", file=sys.stderr, flush=True)
        if name == "fgsm":
            rows += peers.bench_fgsm(model, x, y, device, repeats)
        elif name == "pgd":
            rows += peers.bench_pgd(model, x, y, device, repeats)
        elif name == "deepfool":
            rows += peers.bench_deepfool(model, x, y, device, slow)
        elif name == "one-pixel":
            rows += peers.bench_one_pixel(model, x[:2], y[:2], device, 1, population=400, generations=3)
        elif name == "patch":
            rows += peers.bench_patch(model, x, y, device, slow, target=target)
        elif name == "eot":
            rows += peers.bench_eot(model, x, y, device, slow)
        elif name == "badnets":
            rows += peers.bench_backdoor(x, repeats, target=target)
    out_rows = [r.as_dict() for r in rows]
    for r in out_rows:
        same = [o for o in out_rows if o["attack"] == r["attack"] and _is_baseline(o["implementation"])]
        ours = min(same, key=lambda o: o["implementation"] == "medfool") if same else None  # early_stop=False first
        r["ratio_to_medfool"] = round(r["seconds"] / ours["seconds"], 3) if ours and ours["seconds"] > 0 else None
        floor = [o for o in out_rows if o["attack"] == r["attack"] and o["implementation"].startswith("floor")]
        r["ratio_to_floor"] = (round(r["seconds"] / floor[0]["seconds"], 3) if floor and floor[0]["seconds"] > 0
                               and not r["implementation"].startswith("floor") else None)
    return {
        "date": dt.date.today().isoformat(),
        "machine": machine(device),
        "versions": {"medfool": version("medfool"), "torch": torch.__version__, **{p: version(p) for p in PEERS}},
        "tiles": {"count": int(x.shape[0]), "size_px": int(x.shape[-1]), "names": names},
        "model": ("reference TileNet (data/reference-model/tilenet.safetensors)" if arch == "tilenet"
                  else f"{arch} (benchmarks/archs.py): random backbone, batch norm and last layer fitted on the shipped tiles"),
        "arch": arch, "parameters": archs.parameters(model), "fitted": fitted,
        "rows": out_rows,
    }


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"Measured {result['date']} on {m.get('gpu') or m['machine']} ({m['device']}, {m['cpu_count']} CPUs, "
             f"{m['torch_threads']} torch threads); {result['tiles']['count']} sample tiles of {result['tiles']['size_px']} px; "
             + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".", "",
             "| attack | implementation | seconds | peer / medfool | / floor | images/s | peak MiB | success | median L2 | median L∞ | fwd images | bwd images | note |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        succ = "–" if r["success_rate"] is None else f"{r['success_rate']:.0%}"
        lines.append(f"| {r['attack']} | {r['implementation']} | {_fmt(r['seconds'])} | {_fmt(r['ratio_to_medfool'])} | {_fmt(r.get('ratio_to_floor'))} | "
                     f"{_fmt(r.get('images_per_s'))} | {_fmt(r.get('peak_mb'))} | {succ} | "
                     f"{_fmt(r['median_l2'])} | {_fmt(r['median_linf'])} | {_fmt(r['forward_images'])} | {_fmt(r['backward_images'])} | {r['note']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append", choices=ATTACKS, help="run only this attack (repeatable)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--arch", choices=archs.ARCHS, default="tilenet", help="the attacked architecture (default tilenet)")
    ap.add_argument("--tiles", type=int, default=16, help="number of initially-correct tiles (default 16)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up (default 3)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "peers-cpu.json"))
    args = ap.parse_args(argv)
    try:
        for p in ("torchattacks", "foolbox", "art"):
            __import__(p)
    except ImportError as exc:
        print(f"error: the peer libraries are not installed ({exc}); see the module docstring", file=sys.stderr)
        return 2
    result = run(args.only or list(ATTACKS), torch.device(args.device), args.tiles, args.repeats, args.arch)
    from benchmarks.output import write_result

    write_result(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
