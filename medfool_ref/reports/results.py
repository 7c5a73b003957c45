"""Per-attack reports of a showcase run, written from the results store (for the site's attack pages).

``<out>/<name>/report.json`` holds ``{"summary": ...}`` with the figures the attack page shows,
and beside it the figure files (comparison.png, patch.png, gallery.png, triggered.png,
poisoned.png). Every number and image is read back from the store.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Callable, Sequence

from .intervals import from_rate, interval
from ..campaign.metrics import tile_metrics
from ..campaign.showcase import Entry
from ..campaign.store import ResultsStore
from ..inputs.tiles import from_png_bytes, read_tile, save_png
from ..registry import SPECS
from .figures import comparison_figure, gallery_figure

TILE_KEYS = ("images", "successes", "success_rate", "success_after_8bit_quantisation", "robust_accuracy",
             "robust_accuracy_8bit", "median_l2", "median_linf_255", "median_l0", "forward_images", "backward_images", "seconds")
Classes = Sequence[str]


def example_record(store: ResultsStore, keys: list[str], classes: Classes, prefer: str = "TUM") -> tuple[str, dict[str, Any]] | None:
    """The tile to show: a ``prefer`` tile still fooled after 8-bit rounding if any, else any such tile, else any fooled one."""
    items = [(k, r) for k in keys for r in store.items([k])]
    for rank in (lambda r: r["success_8bit"] and classes[r["label"]] == prefer, lambda r: r["success_8bit"], lambda r: r["success"]):
        pick = next(((k, r) for k, r in items if rank(r)), None)
        if pick is not None:
            return pick
    return items[0] if items else None


def draw_example(store: ResultsStore, key: str, rec: dict[str, Any], classes: Classes, path: Path) -> bool:
    """Original | saved 8-bit adversarial | difference, with the predictions the store holds for both."""
    data = store.artifact(key, f"adversarial/{rec['pos']}.png")
    if data is None or rec["path"] is None:
        return False
    comparison_figure(read_tile(rec["path"]), from_png_bytes(data), (classes[rec["pred_before"]], rec["conf_before"]),
                      (classes[rec["pred_8bit"]], rec["conf_8bit"]), path)
    return True


def tile_summary(store: ResultsStore, name: str, entries: list[Entry], classes: Classes, folder: Path) -> dict[str, Any]:
    entry = entries[0]
    m = tile_metrics(store, entry.keys, classes)
    out: dict[str, Any] = {"attack": name, **{k: m[k] for k in TILE_KEYS}, "params": entry.params}
    if m.get("rho_mean_successful") is not None:
        out["rho_mean"] = m["rho_mean_successful"]
    if m.get("l2_unrounded_median_successful") is not None:
        out["median_l2_unrounded"] = m["l2_unrounded_median_successful"]
    if "expected_success_mean" in m:
        out["expected_success_held_out_draws"] = m["expected_success_mean"]
    if entry.control:
        c = tile_metrics(store, entry.control_keys, classes)
        out["pgd_expected_success_same_draws"] = c.get("expected_success_mean")
        out["pgd_success_untransformed"] = c["success_rate"]
    out.update(baseline_figures(m))
    if m.get("random_baseline_success_mean") is not None and m["success_rate"] is not None:
        base = round(m["random_baseline_success_mean"] * m["images"])
        word = "beats" if m["successes"] > base else "ties with" if m["successes"] == base else "does not beat"
        out["versus_random_baseline"] = f"{word} it on these tiles ({m['successes']}/{m['images']} vs {base}/{m['images']})"
    pick = example_record(store, entry.keys, classes)
    if pick is not None and draw_example(store, *pick, classes, folder / "comparison.png"):
        out["example_tile"] = pick[1]["name"]
        out["example_fooled_after_8bit"] = bool(pick[1]["success_8bit"])
    out["before_after"] = m["before_after"]
    if len(entries) > 1:  # one run per parameter set (e.g. per artefact kind): each beside its baseline, and a gallery
        out["by_run"], shown = {}, []
        for e in entries:
            em = tile_metrics(store, e.keys, classes)
            if not em["images"]:
                continue
            out["by_run"][e.label] = {"success": f"{em['successes']}/{em['images']}", **baseline_figures(em)}
            pick = example_record(store, e.keys, classes)
            data = store.artifact(pick[0], f"adversarial/{pick[1]['pos']}.png") if pick else None
            if data is not None:
                shown.append((from_png_bytes(data), f"{e.label}: {classes[pick[1]['pred_8bit']]}"))
        if shown:
            gallery_figure([im for im, _ in shown], [c for _, c in shown], folder / "runs.png", columns=len(shown))
    return out


def baseline_figures(m: dict[str, Any]) -> dict[str, Any]:
    """The in-call comparisons an attack recorded per tile (random baseline at the same queries, plain PGD), as rates."""
    keys = {"random_baseline_success_mean": "random_baseline_success", "random_draw_success_mean": "random_single_draw_success",
            "pgd_success_mean": "pgd_success_same_budget", "pgd_l0_mean": "pgd_mean_l0"}
    return {label: m[k] for k, label in keys.items() if m.get(k) is not None}


def patch_summary(store: ResultsStore, name: str, entries: list[Entry], classes: Classes, folder: Path) -> dict[str, Any]:
    spec = SPECS[name]
    out: dict[str, Any] = {"attack": name, "target": spec.showcase.target, "by_area": {}}
    shown = next((e for e in entries if e.params.get("area") == spec.budget.default), entries[0]) if spec.budget else entries[0]
    for e in entries:
        units = store.units(keys=e.keys)
        if not units:
            continue
        first = units[0]["extra"]
        other = tile_metrics(store, e.keys, classes)
        out["by_area"][spec.budget.label(e.params["area"]) if spec.budget else e.label] = {
            "on_training_tiles": first.get("on_training_tiles"), "on_other_tiles": first.get("on_other_tiles"),
            "centred_on_other_tiles": other["success_rate"], "seconds": round(units[0]["seconds"], 2)}
        out["train_tiles"] = first.get("train_tiles")
        if e is shown:
            data = store.artifact(e.keys[0], "patch.png")
            if data is not None:
                save_png(from_png_bytes(data), folder / "patch.png")
            pick = example_record(store, e.keys, classes)
            if pick is not None and draw_example(store, *pick, classes, folder / "comparison.png"):
                out["example_tile"] = pick[1]["name"]
                out["example_fooled_after_8bit"] = bool(pick[1]["success_8bit"])
            tr = first.get("on_training_tiles") or {}
            out.update({"success_rate": tr.get("adversarial"), "grey_control": tr.get("grey"), "noise_control": tr.get("noise"),
                        "params": e.params})
    return out


def universal_summary(store: ResultsStore, name: str, entries: list[Entry], classes: Classes, folder: Path) -> dict[str, Any]:
    """A universal pattern: success on the held-out tiles (never its support tiles) beside a random pattern of the same norm."""
    from ..training.reference import wilson_interval

    e = entries[0]
    units = store.units(keys=e.keys)
    recs = store.items(e.keys)
    ok = [bool(r["success_8bit"]) for r in recs]
    rnd = [bool(r["extra"].get("random_success")) for r in recs]
    n, k, kr = len(recs), sum(ok), sum(rnd)
    first = units[0]["extra"]
    out: dict[str, Any] = {
        "attack": name, "held_out_tiles": n, "success_rate": k / max(n, 1),
        "held_out_success": f"{k}/{n}, 95% Wilson {wilson_interval(k, n)[0]:.1%}-{wilson_interval(k, n)[1]:.1%}",
        "random_pattern_same_linf": f"{kr}/{n}, 95% Wilson {wilson_interval(kr, n)[0]:.1%}-{wilson_interval(kr, n)[1]:.1%}",
        "support_tiles": first.get("support_tiles"), "on_support_tiles": first.get("on_support_tiles"),
        "seconds": round(units[0]["seconds"], 2), "params": e.params}
    covered = [r for r in recs if "covered" in r["extra"]]
    if covered:
        c = [bool(r["success_8bit"]) for r in covered if r["extra"]["covered"]]
        out["held_out_classes_with_support"] = f"{sum(c)}/{len(c)}"
    data = store.artifact(e.keys[0], "pattern.png")
    if data is not None:
        save_png(from_png_bytes(data), folder / "pattern.png")
    pick = example_record(store, e.keys, classes)
    if pick is not None and draw_example(store, *pick, classes, folder / "comparison.png"):
        out["example_tile"] = pick[1]["name"]
        out["example_fooled_after_8bit"] = bool(pick[1]["success_8bit"])
    return out


def fooling_summary(store: ResultsStore, name: str, entries: list[Entry], classes: Classes, folder: Path) -> dict[str, Any]:
    e = entries[0]
    units = store.units(keys=e.keys)
    recs = store.items(e.keys)
    images = [from_png_bytes(store.artifact(units[0]["key"], f"fooling/{r['name']}.png") or b"") for r in recs]
    labels = [f"{r['name']} {r['extra']['target_confidence']:.2%}" for r in recs]
    gallery_figure(images, labels, folder / "gallery.png", columns=min(len(labels), 5))
    ok = [bool(r["success"]) for r in recs]
    return {"attack": name, "classes": [r["name"] for r in recs], "confidence": [round(r["extra"]["target_confidence"], 6) for r in recs],
            "success": ok, "success_rate": sum(ok) / max(len(ok), 1), "images": len(recs), "successes": sum(ok),
            "generations": [r["extra"]["generations"] for r in recs], "forward_images": units[0]["forward_images"],
            "seconds": round(units[0]["seconds"], 3), "params": e.params}


def badnets_summary(store: ResultsStore, name: str, entries: list[Entry], classes: Classes, folder: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"attack": name, "target": SPECS[name].showcase.target, "by_trigger": {}}
    for e in entries:
        unit = store.units(keys=e.keys)[0]
        m, p = unit["extra"]["metrics"], unit["extra"]["attack_params"]
        bad, clean = m["backdoored_model"], m["clean_model"]
        out["by_trigger"][p["trigger"]] = {
            "clean_accuracy_clean_model": clean["clean_accuracy"], "clean_accuracy_backdoored": bad["clean_accuracy"],
            "attack_success_rate": bad["attack_success_rate"], "robust_accuracy": bad["robust_accuracy"],
            "asr_of_clean_model": clean["attack_success_rate"], "trigger_size": p["trigger_size"]}
        out["held_out_crops"] = m["held_out_crops"]
        if p["trigger"] == "ink-mark":
            ex = unit["extra"]["examples"]
            images = [from_png_bytes(store.artifact(unit["key"], f"example/{k}.png") or b"") for k in range(len(ex))]
            gallery_figure(images, [f"{classes[x['label']]} -> {classes[x['pred']]}" for x in ex], folder / "triggered.png")
    first = entries[0]
    out["success_rate"] = out["by_trigger"][store.units(keys=first.keys)[0]["extra"]["attack_params"]["trigger"]]["attack_success_rate"]
    out["params"] = {k: v for k, v in first.params.items() if k in ("fraction", "mode", "steps", "crop")}
    return out


def poisoning_summary(unit: dict[str, Any]) -> dict[str, Any]:
    m, p = unit["extra"]["metrics"], unit["extra"]["attack_params"]
    row = m["by_fraction"][f"{p['fraction']:g}"]
    t = m["timing"]
    return {
        "retrained_clean": f"{m['retrained_clean']['accuracy']:.1%} ({m['retrained_clean']['loss']:.3f})",
        "by_fraction": {f"{float(k):.0%}": v for k, v in m["by_fraction"].items()},
        "accuracy_drop_vs_noise": row["noise"]["accuracy"] - row["generative"]["accuracy"],
        "accuracy_drop_vs_label_flip": row["label-flip"]["accuracy"] - row["generative"]["accuracy"],
        "accuracy_drop_reward_generator_vs_noise": (row["noise"]["accuracy"] - row["generative-reward"]["accuracy"]
                                                    if "generative-reward" in row else None),
        "timing": {"generative_s_per_tile": t["generative_s_per_tile"], "direct_s_per_tile": t.get("direct_s_per_tile"),
                   "speedup_generation_only": t.get("speedup_generation_only"), "generator_training_s": t["generator_training_s"]},
        "countermeasure": {k: v for k, v in m["countermeasure"].items() if k != "quantile"},
        "held_out_crops": m["held_out_crops"],
        "params": {"fraction": p["fraction"], "objective": p["objective"], "eps_255": round(p["eps"] * 255),
                   "labels": p["labels"], "generator_steps": p["generator_steps"], "retrainings_averaged": p["repeats"]},
    }


def generative_summary(store: ResultsStore, name: str, entries: list[Entry], classes: Classes, folder: Path) -> dict[str, Any]:
    import torch

    from ..attacks.poisoning import example_captions

    unit = store.units(keys=entries[0].keys)[0]
    n = len(unit["extra"]["examples"])
    clean = [from_png_bytes(store.artifact(unit["key"], f"example/clean-{k}.png") or b"") for k in range(n)]
    poisoned = [from_png_bytes(store.artifact(unit["key"], f"example/poisoned-{k}.png") or b"") for k in range(n)]
    labels = torch.tensor([x["label"] for x in unit["extra"]["examples"]])
    gallery_figure(clean + poisoned, example_captions(labels), folder / "poisoned.png", columns=n)
    return {"attack": name, **poisoning_summary(unit)}


SUMMARIES: dict[str, Callable[..., dict[str, Any]]] = {
    "tiles": tile_summary, "tiles+training": patch_summary, "none": fooling_summary,
}


def provenance(name: str, command: str, device: str) -> dict[str, Any]:
    """Where a result comes from: medfool's version, the hash of the code and parameters that made it, machine, date, command."""
    import datetime as dt
    import hashlib
    import os

    import torch

    from .. import __version__
    from ..registry import PACKAGE, source_fingerprint

    machine = f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    if device.startswith("cuda") and torch.cuda.is_available():
        machine += f", {torch.cuda.get_device_name(0)}"
    weights = PACKAGE / "data" / "reference-model" / "tilenet.safetensors"
    return {"medfool": __version__, "code_sha256": source_fingerprint(name), "model_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "machine": machine, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "device": device,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": command}


RATES = {"success_rate": "successes", "success_rate_8bit": "success_after_8bit_quantisation",
         "robust_accuracy": None, "robust_accuracy_8bit": None}


def rate_intervals(summary: dict[str, Any]) -> dict[str, Any]:
    """``{"ci": {rate: {k, n, lo, hi, few}}}`` for the tile rates of a summary over ``images`` tiles (else nothing)."""
    n = summary.get("images")
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        return {}
    ci = {}
    for rate, count in RATES.items():
        if isinstance(summary.get(count), int) and not isinstance(summary.get(count), bool):
            ci[rate] = interval(summary[count], n)
        elif isinstance(summary.get(rate), (int, float)):
            ci[rate] = from_rate(float(summary[rate]), n)
    return {"ci": ci} if ci else {}


def write_reports(store: ResultsStore, entries: dict[str, list[Entry]], names: list[str], classes: Classes, out: Path,
                  device: str, command: str = "medfool results") -> dict[str, dict[str, Any]]:
    """One folder per attack in ``names``: report.json (summary and provenance) and its figures."""
    import torch

    summaries: dict[str, dict[str, Any]] = {}
    for name in names:
        spec = SPECS[name]
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        if spec.showcase.same_as is not None:
            source = entries.get(spec.showcase.same_as)
            if not source or not store.units(keys=source[0].keys):
                continue
            s = poisoning_summary(store.units(keys=source[0].keys)[0])
            summary = {"attack": name, "timing": s["timing"], "params": s["params"], "reported_from": spec.showcase.same_as}
        elif name not in entries or not any(store.units(keys=e.keys) for e in entries[name]):
            continue
        elif spec.inputs == "training":
            summary = (badnets_summary if name == "badnets" else generative_summary)(store, name, entries[name], classes, folder)
        elif spec.inputs == "tiles+training" and name != "patch":
            summary = universal_summary(store, name, entries[name], classes, folder)
        else:
            summary = SUMMARIES[spec.inputs](store, name, entries[name], classes, folder)
        summary["device"] = device
        summary["machine"] = f"{platform.machine()}, torch {torch.__version__}"
        summary.update(rate_intervals(summary))
        doc = {"summary": summary, "provenance": provenance(name, command, device)}
        (folder / "report.json").write_text(json.dumps(doc, indent=2, default=float) + "\n", encoding="utf-8")
        summaries[name] = summary
    return summaries
