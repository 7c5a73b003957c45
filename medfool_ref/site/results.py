"""Results of real reference-implementation runs, shown on attack pages.

``medfool results`` writes ``<results>/<implementation>/report.json`` and ``comparison.png``
by running our code on the sample tiles; the site only reads them. Nothing is typed in by hand.
When no run exists the page says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from .html import dl, esc, href

LABELS = {
    "images": "tiles attacked (those the reference model classifies correctly)",
    "successes": "fooled (floating point)",
    "success_rate": "success rate",
    "success_after_8bit_quantisation": "still fooled after saving as 8-bit PNG",
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
    "target": "target class",
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
    "accuracy_drop_reward_generator_vs_noise": "the paper's-reward generator: accuracy drop against random noise at 20% poison",
}
FIGURES = {
    "comparison.png": "One tile from a real run: original, adversarial (8-bit), amplified difference, with the reference model's predictions.",
    "patch.png": "The universal patch trained for 10% of the tile area (target: normal mucosa).",
    "gallery.png": "Evolved images, one per class, with the reference model's confidence for that class.",
    "triggered.png": "Training crops with the ink-mark trigger, and what the backdoored model calls them (true class -> prediction).",
    "poisoned.png": "Clean training crops (top) and the generator's poisoned versions submitted under the next class's label (bottom).",
}


def result_files(results_dir: Path | None) -> list[tuple[str, Path]]:
    """(site path, file) of every figure the site should copy."""
    if results_dir is None or not results_dir.is_dir():
        return []
    return [(f"results/{p.parent.name}/{p.name}", p) for p in sorted(results_dir.glob("*/*.png")) if p.name in FIGURES]


def _fmt(key: str, value: object) -> str:
    if key == "success_rate" and isinstance(value, float):
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        parts = []
        for k, v in value.items():
            if isinstance(v, dict) and "attack_success_rate" in v:
                parts.append(f"{k}: CA {v['clean_accuracy_backdoored']:.1%} (clean model {v['clean_accuracy_clean_model']:.1%}), "
                             f"ASR {v['attack_success_rate']:.1%} (clean model {v['asr_of_clean_model']:.1%}), RA {v['robust_accuracy']:.1%}")
            elif isinstance(v, dict) and "generative" in v:
                parts.append(f"{k}: " + " / ".join(f"{v[n]['accuracy']:.1%} ({v[n]['loss']:.3f})"
                                                  for n in ("generative", "generative-reward", "label-flip", "noise") if n in v))
            elif isinstance(v, dict) and "on_training_tiles" in v:
                tr, other = v["on_training_tiles"], v.get("on_other_tiles") or {}
                parts.append(f"{k}: {tr['adversarial']:.0%} (grey {tr['grey']:.0%}, noise {tr['noise']:.0%})"
                             + (f" / {other['adversarial']:.0%} (grey {other['grey']:.0%}, noise {other['noise']:.0%})" if other else ""))
            else:
                parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
        return "; ".join(parts)
    if isinstance(value, list):
        return ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def results_html(implementation: str, results_dir: object, here: str) -> str:
    if results_dir is None:
        return '<p class="mf-none">No results folder is configured for this build.</p>'
    folder = Path(str(results_dir)) / implementation
    report = folder / "report.json"
    if not report.is_file():
        return (f'<p class="mf-none">No run of <code>{esc(implementation)}</code> is recorded for this build '
                "(<code>medfool results</code> writes one; <code>make serve</code> runs it).</p>")
    summary = json.loads(report.read_text(encoding="utf-8")).get("summary", {})
    rows = [(LABELS.get(k, k), esc(_fmt(k, v))) for k, v in summary.items() if k in LABELS]
    figure = ""
    for name, caption in FIGURES.items():
        if (folder / name).is_file():
            src = href(here, f"results/{implementation}/{name}")
            figure += f'<figure><img src="{src}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'

    return "<h3>Results of a real run on the sample tiles</h3>" + dl(rows) + figure
