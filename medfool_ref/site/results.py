"""Results of real reference-implementation runs, shown on attack pages.

``medfool results`` writes ``<results>/<implementation>/report.json`` and ``comparison.png``
by running our code on the sample tiles; the site only reads them. Nothing is typed in by hand.
When no run exists the page says so. A report may also hold ``provenance`` (version, code hash,
machine, date, command; ``stale``: the code has changed since), shown beneath the results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .html import href
from .render import render

LABELS = {
    "images": "tiles attacked (those the reference model classifies correctly)",
    "successes": "fooled (floating point)",
    "success_rate": "success rate",
    "success_after_8bit_quantisation": "still fooled after saving as 8-bit PNG",
    "robust_accuracy": "robust accuracy (tiles still classified correctly, floating point)",
    "robust_accuracy_8bit": "robust accuracy after saving as 8-bit PNG",
    "median_l2_unrounded": "median L2 of the float solution before rounding to 8 bits (the extra norm is the price of a savable tile)",
    "example_fooled_after_8bit": "the example tile is still fooled as a saved 8-bit PNG",
    "median_l2": "median L2 of successful perturbations",
    "median_linf_255": "median L-inf of successful perturbations (/255)",
    "rho_mean": "DeepFool robustness rho = mean ||r||2 / ||x||2",
    "forward_images": "images forwarded (queries)",
    "backward_images": "images backpropagated",
    "seconds": "attack time (s)",
    "device": "device",
    "machine": "machine",
    "params": "parameters",
    "example_tile": "example tile",
    "expected_success_held_out_draws": "expected success over held-out transformation draws",
    "pgd_expected_success_same_draws": "plain PGD's expected success under the same draws",
    "pgd_success_untransformed": "plain PGD's success without transformations",
    "median_l0": "median changed pixels (L0)",
    "random_baseline_success": "random baseline at the same query count or mask size (share of tiles fooled)",
    "random_single_draw_success": "a single random draw from the same range (expected share of tiles fooled)",
    "pgd_success_same_budget": "plain PGD at the same L-inf budget and steps (success rate)",
    "pgd_mean_l0": "plain PGD's mean changed pixels (L0)",
    "versus_random_baseline": "against its random baseline",
    "by_run": "per run (tiles fooled; random baseline; single random draw)",
    "target": "target class",
    "before_after": "predictions before -> after (tiles)",
    "train_tiles": "tiles the patch was trained on",
    "grey_control": "grey patch of the same size (control)",
    "noise_control": "random-noise patch of the same size (control)",
    "by_area": "targeted success by patch area (training tiles / other tiles)",
    "classes": "classes evolved",
    "confidence": "best confidence per class",
    "generations": "generations used per class",
    "by_trigger": "per trigger, on crops of held-out tiles",
    "held_out_crops": "held-out crops evaluated",
    "retrained_clean": "deployed model retrained on clean data only (accuracy, loss)",
    "by_fraction": "held-out accuracy (loss) after retraining with each share of poisoned tiles: generative (typical) / "
                   "generative (paper's reward) / label-flip / random noise",
    "countermeasure": "loss-threshold countermeasure (Yang et al.)",
    "timing": "time per poisoned tile",
    "accuracy_drop_vs_noise": "accuracy drop against the random-noise control at 20% poison (negative: the poison did less harm)",
    "accuracy_drop_vs_label_flip": "accuracy drop against the label-flip control at 20% poison (negative: the poison did less harm)",
    "held_out_tiles": "tiles scored (never those the pattern was computed on)",
    "held_out_success": "fooled on those held-out tiles (8-bit)",
    "random_pattern_same_linf": "a random sign pattern of the same L-inf norm on the same tiles (control)",
    "support_tiles": "tiles the pattern was computed on",
    "on_support_tiles": "success on those tiles (a training figure)",
    "held_out_classes_with_support": "fooled among held-out tiles whose class had support tiles",
    "accuracy_drop_reward_generator_vs_noise": "the paper's-reward generator: accuracy drop against random noise at 20% poison",
}
FIGURES = {
    "comparison.png": "One tile from a real run: original, adversarial (8-bit), amplified difference, with the reference model's predictions.",
    "patch.png": "The universal patch trained for 10% of the tile area (target: normal mucosa).",
    "gallery.png": "Evolved images, one per class, with the reference model's confidence for that class.",
    "triggered.png": "Training crops with the ink-mark trigger, and what the backdoored model calls them (true class -> prediction).",
    "pattern.png": "The universal pattern, mapped from [-eps, eps] to [0, 1] (the first class's pattern for per-class noise).",
    "runs.png": "One tile per run (for physical artefacts: one per kind) at the worst setting found, with the reference model's call.",
    "poisoned.png": "Clean training crops (top) and the generator's poisoned versions submitted under the next class's label (bottom).",
}


def _folders(results_dirs: object) -> list[Path]:
    """The configured result folders, first one first (fresh runs before recorded ones)."""
    if results_dirs is None:
        return []
    items = results_dirs if isinstance(results_dirs, (list, tuple)) else [results_dirs]
    return [Path(str(d)) for d in items]


def chosen_folder(implementation: str, results_dirs: object) -> Path | None:
    """The folder whose run of ``implementation`` the site shows: the first that has one."""
    return next((d / implementation for d in _folders(results_dirs) if (d / implementation / "report.json").is_file()), None)


def result_files(results_dirs: object) -> list[tuple[str, Path]]:
    """(site path, file) of every figure the site should copy, from the folder each implementation's run is shown from."""
    names = sorted({p.parent.name for d in _folders(results_dirs) if d.is_dir() for p in d.glob("*/report.json")})
    out = []
    for name in names:
        folder = chosen_folder(name, results_dirs)
        out += [(f"results/{name}/{p.name}", p) for p in sorted(folder.glob("*.png")) if p.name in FIGURES]
    return out


def is_stale(implementation: str, provenance: dict[str, object]) -> bool:
    """A run is stale when it says so, or when the code and parameters that made it hash differently today."""
    if provenance.get("stale") is True:
        return True
    recorded = provenance.get("code_sha256")
    if not isinstance(recorded, str):
        return False
    from ..registry import SPECS, source_fingerprint

    return implementation in SPECS and source_fingerprint(implementation) != recorded


def _number(v: object, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "?"


def _num(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _pct(v: object, digits: int = 1) -> str:
    return _number(v, f".{digits}%")


def _sub(k: str, v: object) -> str:
    """One entry of a nested summary value (per trigger, per poison share, per patch area, or a plain value)."""
    if isinstance(v, dict) and "attack_success_rate" in v:
        return (f"{k}: CA {_pct(v.get('clean_accuracy_backdoored'))} (clean model {_pct(v.get('clean_accuracy_clean_model'))}), "
                f"ASR {_pct(v['attack_success_rate'])} (clean model {_pct(v.get('asr_of_clean_model'))}), "
                f"RA {_pct(v.get('robust_accuracy'))}")
    if isinstance(v, dict) and "generative" in v:
        shares = [v[n] for n in ("generative", "generative-reward", "label-flip", "noise") if isinstance(v.get(n), dict)]
        return f"{k}: " + " / ".join(f"{_pct(s.get('accuracy'))} ({_number(s.get('loss'), '.3f')})" for s in shares)
    if isinstance(v, dict) and "on_training_tiles" in v:
        tr, other = v["on_training_tiles"] or {}, v.get("on_other_tiles") or {}
        text = f"{k}: {_pct(tr.get('adversarial'), 0)} (grey {_pct(tr.get('grey'), 0)}, noise {_pct(tr.get('noise'), 0)})"
        if other:
            text += f" / {_pct(other.get('adversarial'), 0)} (grey {_pct(other.get('grey'), 0)}, noise {_pct(other.get('noise'), 0)})"
        return text
    if isinstance(v, dict) and "success" in v:
        return (f"{k}: {v['success']} (random baseline {_pct(v.get('random_baseline_success'), 0)}, "
                f"single draw {_pct(v.get('random_single_draw_success'), 0)})")
    return f"{k}={_num(v)}"


def _fmt(key: str, value: object) -> str:
    """A summary value as text (escaped when rendered)."""
    if key == "success_rate" and isinstance(value, float):
        return f"{value:.1%}"
    if isinstance(value, dict):
        return "; ".join(_sub(k, v) for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_num(v) for v in value)
    return _num(value)


RATES = {"success_rate": "successes", "success_rate_8bit": "success_after_8bit_quantisation", "robust_accuracy": None,
         "robust_accuracy_8bit": None}


def _with_ci(key: str, value: object, summary: dict) -> str:
    """A tile rate with its count, n and 95% Wilson interval (from the report's ``ci``, or its ``images`` for older
    reports), marked when it rests on fewer than 20 tiles; anything else as ``_fmt`` writes it."""
    from ..reports.intervals import fmt_ci, from_rate, interval

    if key not in RATES or not isinstance(value, (int, float)) or isinstance(value, bool):
        return _fmt(key, value)
    ci = (summary.get("ci") or {}).get(key)
    n, count = summary.get("images"), summary.get(RATES[key] or "")
    if ci is None and isinstance(n, int) and n > 0:
        ci = interval(count, n) if isinstance(count, int) and not isinstance(count, bool) else from_rate(float(value), n)
    return fmt_ci(ci) if ci else _fmt(key, value)


def _caption(name: str, caption: str, summary: dict) -> str:
    """The figure's caption, saying whether the tile it shows is still fooled as a saved 8-bit PNG."""
    if name != "comparison.png" or "example_fooled_after_8bit" not in summary:
        return caption
    tile = summary.get("example_tile", "the tile")
    if summary["example_fooled_after_8bit"]:
        return f"{caption} This tile ({tile}) is fooled as a saved 8-bit PNG."
    return f"{caption} This tile ({tile}) is not fooled: no tile of the run was, after saving as 8-bit PNG."


@dataclass(frozen=True)
class Run:
    """What ``results.html`` shows for one implementation: status, labelled values, figures and provenance."""

    implementation: str
    status: str  # "unconfigured", "missing" or "found"
    facts: list[tuple[str, str]] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (src, caption)
    provenance: list[tuple[str, str]] = field(default_factory=list)
    stale: bool = False


def read_run(implementation: str, results_dirs: object, here: str) -> Run:
    """Read ``<results>/<implementation>/report.json`` from the first folder that has one; unknown keys are
    skipped, missing ones left out."""
    if not _folders(results_dirs):
        return Run(implementation, "unconfigured")
    folder = chosen_folder(implementation, results_dirs)
    if folder is None:
        return Run(implementation, "missing")
    report = folder / "report.json"
    data = json.loads(report.read_text(encoding="utf-8"))
    summary = data.get("summary") or {}
    provenance = data.get("provenance") if isinstance(data.get("provenance"), dict) else {}
    return Run(
        implementation, "found",
        facts=[(LABELS[k], _with_ci(k, v, summary)) for k, v in summary.items() if k in LABELS],
        figures=[(href(here, f"results/{implementation}/{name}"), _caption(name, caption, summary))
                 for name, caption in FIGURES.items() if (folder / name).is_file()],
        provenance=[(str(k), _fmt(str(k), v)) for k, v in provenance.items() if k != "stale"],
        stale=is_stale(implementation, provenance),
    )


def results_html(implementation: str, results_dirs: object, here: str) -> str:
    """The results section of an attack page."""
    return render("results.html", run=read_run(implementation, results_dirs, here))
