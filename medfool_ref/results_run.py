"""``medfool results``: real runs of every registered attack on the sample tiles, for the site.

For each attack: one batch per tile size of the tiles the reference model classifies correctly,
the attack's default budget, the summary (success rate, median norms, queries, time) in
``<out>/<name>/report.json`` and a comparison figure of one tumour tile.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from .model import default_device, load_model
from .registry import IMPLEMENTATIONS, resolve
from .report import comparison_figure, quantise
from .tiles import CLASSES, read_tile, sample_tiles

# budgets used for the site (small enough for two CPU cores)
SITE_PARAMS: dict[str, dict[str, object]] = {
    "fgsm": {"eps": 8 / 255},
    "pgd": {"eps": 8 / 255, "steps": 10},
    "deepfool": {"overshoot": 0.02, "max_iter": 50},
}


def correct_batches(model: torch.nn.Module, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    """The sample tiles the model gets right, one batch per tile size."""
    groups: dict[int, list[tuple[torch.Tensor, int, str]]] = {}
    for t in sample_tiles():
        x = read_tile(t.path)
        groups.setdefault(x.shape[-1], []).append((x, t.index, t.name))
    out = []
    for items in groups.values():
        x = torch.stack([i[0] for i in items]).to(device)
        y = torch.tensor([i[1] for i in items], device=device)
        with torch.no_grad():
            ok = model(x).argmax(1) == y
        names = [i[2] for i, k in zip(items, ok.tolist()) if k]
        out.append((x[ok], y[ok], names))
    return out


def write_results(out: Path, only: list[str] | None = None) -> dict[str, dict[str, object]]:
    device = default_device()
    model = load_model(device=device)
    batches = correct_batches(model, device)
    summaries: dict[str, dict[str, object]] = {}
    for name in sorted(IMPLEMENTATIONS):
        if only and name not in only:
            continue
        func = resolve(name)
        params = SITE_PARAMS.get(name, {})
        successes = images = 0
        seconds = 0.0
        l2: list[torch.Tensor] = []
        linf: list[torch.Tensor] = []
        quant_ok = 0
        calls = {"forward_images": 0, "backward_images": 0}
        example = None
        extra: dict[str, list[float]] = {}
        for x, y, names in batches:
            if x.shape[0] == 0:
                continue
            r = func(model, x, y, **params)
            q = quantise(r.adversarial)
            with torch.no_grad():
                pq = model(q).argmax(1)
            quant_ok += int((pq != y).sum())
            successes += int(r.success.sum())
            images += x.shape[0]
            seconds += r.seconds
            l2.append(r.l2[r.success])
            linf.append(r.linf[r.success])
            calls["forward_images"] += r.forward_images
            calls["backward_images"] += r.backward_images
            if "rho" in r.extra:
                extra.setdefault("rho", []).extend(r.extra["rho"][r.success].tolist())
            tum = (y == CLASSES.index("TUM")) & r.success
            if example is None and bool(tum.any()):
                i = int(tum.nonzero()[0])
                example = (x[i], q[i], r, i, names[i])
        l2_all, linf_all = torch.cat(l2), torch.cat(linf)
        summary: dict[str, object] = {
            "attack": name, "params": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in params.items()},
            "images": images, "successes": successes, "success_rate": successes / max(images, 1),
            "success_after_8bit_quantisation": quant_ok,
            "median_l2": float(l2_all.median()) if l2_all.numel() else None,
            "median_linf_255": float(linf_all.median() * 255) if linf_all.numel() else None,
            **calls, "seconds": round(seconds, 3), "device": str(device),
            "machine": f"{platform.machine()}, torch {torch.__version__}",
        }
        if "rho" in extra:
            summary["rho_mean"] = sum(extra["rho"]) / len(extra["rho"])
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        if example is not None:
            x0, q0, r, i, tile_name = example
            with torch.no_grad():
                p0, p1 = model(x0[None]).softmax(1)[0], model(q0[None]).softmax(1)[0]
            comparison_figure(x0, q0, (CLASSES[int(p0.argmax())], float(p0.max())), (CLASSES[int(p1.argmax())], float(p1.max())),
                              folder / "comparison.png")
            summary["example_tile"] = tile_name
        (folder / "report.json").write_text(json.dumps({"summary": summary}, indent=2) + "\n", encoding="utf-8")
        summaries[name] = summary
    return summaries
