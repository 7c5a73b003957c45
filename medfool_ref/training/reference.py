"""``medfool model train`` and ``medfool model cv``: the committed, deterministic recipe for the shipped
reference model, and its 5-fold cross-validation by tile.

``train_reference`` writes ``tilenet.safetensors``, ``tilenet.json`` (the card's numbers, the weights'
sha256) and ``MODEL_CARD.md``; ``cross_validate`` estimates the recipe's accuracy on unseen tiles from
all 65 tiles (each tile tested once, by a model that never saw it) with a 95% Wilson interval, and
``write_cv`` puts that on the card, with ``study=True`` for each augmentation setting in :data:`STUDY`
too. Depends on torch, numpy and Pillow only.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from ..inputs.samples import CLASS_NAMES, CLASSES, KATHER2016_MAP, Tile, sample_tiles, split
from ..targets.reference import MODEL_DIR, save_model, sha256_of
from ..targets.tilenet import ARCHITECTURE
from .loop import TrainConfig, crop_bank, evaluate, train

CARD_JSON = "tilenet.json"
FOLDS = 5
Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal
FOLD_RULE = ("the tiles, sorted by class and then in set/file order, are dealt to the folds in turn "
             "(the j-th tile goes to test fold j mod 5)")

# The augmentation study: each entry changes the recipe the study started from (TrainConfig(): flips,
# 90-degree rotations and brightness/contrast/saturation jitter) by the settings given.
STUDY: dict[str, dict[str, float]] = {
    "baseline": {},
    "stain": {"stain_jitter": 0.2},
    "blur": {"blur_sigma": 1.5},
    "scale": {"scale_jitter": 0.2},
    "stain+blur": {"stain_jitter": 0.2, "blur_sigma": 1.5},
    "stain+blur+scale": {"stain_jitter": 0.2, "blur_sigma": 1.5, "scale_jitter": 0.2},
}
KEPT = "baseline"  # the study entry the reference recipe uses (see the model card for why)

Progress = Callable[[int, int, float], None]


def reference_config() -> TrainConfig:
    """The recipe of the shipped weights: the study's starting point with the kept augmentations."""
    return replace(TrainConfig(), **STUDY[KEPT])


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for the default ``z``); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} outside 0..{n}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    if successes == 0:
        lo = 0.0
    if successes == n:
        hi = 1.0
    return lo, hi


def cv_folds(tiles: list[Tile], folds: int = FOLDS) -> list[list[Tile]]:
    """Deterministic stratified folds by tile (no randomness): see :data:`FOLD_RULE`.

    Every tile is in exactly one test fold; each class's tiles are spread over the folds as evenly as
    possible (counts differ by at most one), and the fold sizes differ by at most one.
    """
    ordered = [t for cls in CLASSES for t in tiles if t.label == cls]
    return [ordered[f::folds] for f in range(folds)]


def cross_validate(config: TrainConfig, tiles: list[Tile] | None = None, folds: int = FOLDS,
                   progress: Callable[[int], Progress | None] | None = None) -> dict[str, object]:
    """Train on all folds but one, test on that one, for each fold; pool the test predictions.

    ``progress(fold)`` may return a training progress callback for that fold.
    """
    torch.use_deterministic_algorithms(True)
    tiles = tiles if tiles is not None else sample_tiles()
    parts = cv_folds(tiles, folds)
    tum = "TUM"
    per_fold, predictions = [], []
    seconds = 0.0
    for f, test in enumerate(parts):
        held = {id(t) for t in test}
        train_tiles = [t for t in tiles if id(t) not in held]
        bank = crop_bank(train_tiles, crop=config.crop)
        started = time.perf_counter()
        model = train(bank, config, device="cpu", progress=progress(f) if progress else None)
        seconds += time.perf_counter() - started
        r = evaluate(model, test)
        pairs = list(zip(r["truth"], r["predictions"]))
        per_fold.append({
            "fold": f,
            "tiles": r["tiles"],
            "correct": r["correct"],
            "accuracy": r["correct"] / r["tiles"],
            "tumour_tiles": sum(t == tum for t, _ in pairs),
            "tumour_detected": sum(t == tum and p == tum for t, p in pairs),
            "tumour_false_positives": sum(t != tum and p == tum for t, p in pairs),
        })
        predictions.append(r["predictions"])
    n = sum(f["tiles"] for f in per_fold)
    correct = sum(f["correct"] for f in per_fold)
    tum_tiles = sum(f["tumour_tiles"] for f in per_fold)
    detected = sum(f["tumour_detected"] for f in per_fold)
    return {
        "config": config.as_dict(),
        "tiles": n,
        "correct": correct,
        "accuracy": correct / n,
        "interval_95": list(wilson_interval(correct, n)),
        "per_fold": per_fold,
        "tumour": {
            "tiles": tum_tiles,
            "detected": detected,
            "sensitivity": detected / max(tum_tiles, 1),
            "sensitivity_interval_95": list(wilson_interval(detected, tum_tiles)),
            "false_positives": sum(f["tumour_false_positives"] for f in per_fold),
            "non_tumour_tiles": n - tum_tiles,
        },
        "predictions": predictions,
        "training_seconds": round(seconds, 1),
    }


def _cv_header(tiles: list[Tile], folds: int = FOLDS) -> dict[str, object]:
    return {
        "folds": folds,
        "rule": FOLD_RULE,
        "interval": "95% Wilson score interval for the pooled proportion (correct / tiles over the test folds)",
        "fold_tiles": [[t.name for t in part] for part in cv_folds(tiles, folds)],
        "fold_truth": [[t.label for t in part] for part in cv_folds(tiles, folds)],
    }


def study_config(name: str) -> TrainConfig:
    return replace(TrainConfig(), **STUDY[name])


def _carried_cv(old: dict | None, recipe: dict, tiles: list[Tile]) -> dict | None:
    """What of a card's earlier cross-validation still holds for ``recipe``: the same folds, the study runs
    whose settings are still in :data:`STUDY`, and the recipe's result if one of those (or the earlier
    recipe result) has exactly this recipe. None when nothing carries over."""
    cv: dict[str, object] = _cv_header(tiles)
    if not old or old.get("fold_tiles") != cv["fold_tiles"]:
        return None
    runs = [r for r in old.get("study", []) if r["name"] in STUDY and _full(r["config"]) == study_config(r["name"]).as_dict()]
    if runs:
        cv["study"] = runs
    found = [r for r in runs if _full(r["config"]) == recipe]
    if found:
        cv["recipe"] = {k: v for k, v in found[0].items() if k not in ("name", "changes")}
    elif old.get("recipe") and _full(old["recipe"]["config"]) == recipe:
        cv["recipe"] = old["recipe"]
    return cv if len(cv) > len(_cv_header(tiles)) else None


def _write_card(out_dir: Path, card: dict) -> None:
    (out_dir / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (out_dir / "MODEL_CARD.md").write_text(model_card(card), encoding="utf-8")


def write_cv(out_dir: Path = MODEL_DIR, *, study: bool = False, rerun: bool = False,
             progress: Callable[[str, int], Progress | None] | None = None) -> dict:
    """Cross-validate the recipe of the weights in ``out_dir`` (the card's ``config``) and write the result
    into its ``tilenet.json`` and ``MODEL_CARD.md``; the weights themselves are not touched.

    With ``study`` every entry of :data:`STUDY` is cross-validated too (the card is written after each,
    so an interrupted study keeps what it finished). Results already on the card for exactly the same
    settings and folds are reused (training is deterministic), unless ``rerun``.
    """
    card = json.loads((out_dir / CARD_JSON).read_text(encoding="utf-8"))
    card["config"] = recipe = _full(card["config"])  # settings added since default to off: the same recipe
    tiles = sample_tiles()
    cv = (None if rerun else _carried_cv(card.get("cross_validation"), recipe, tiles)) or _cv_header(tiles)
    card["cross_validation"] = cv
    if study:
        done = {r["name"]: r for r in cv.get("study", [])}
        runs = []
        for name, changes in STUDY.items():
            if name not in done:
                config = study_config(name)
                result = cross_validate(config, tiles, progress=(lambda f, name=name: progress(name, f)) if progress else None)
                done[name] = {"name": name, "changes": dict(changes), **result}
            runs.append(done[name])
            cv["study"] = runs + [r for n, r in done.items() if n not in {x["name"] for x in runs}]
            if done[name]["config"] == recipe:
                cv["recipe"] = {k: v for k, v in done[name].items() if k not in ("name", "changes")}
            if "recipe" in cv:
                _write_card(out_dir, card)
        cv["study"] = runs
    if "recipe" not in cv:
        cv["recipe"] = cross_validate(TrainConfig(**recipe), tiles,
                                      progress=(lambda f: progress("recipe", f)) if progress else None)
    _write_card(out_dir, card)
    return card


def _full(config: dict | None) -> dict | None:
    """A card's config with every TrainConfig field (fields added later default to off)."""
    return None if config is None else TrainConfig(**config).as_dict()


def train_reference(out_dir: Path = MODEL_DIR, config: TrainConfig | None = None,
                    progress: Progress | None = None) -> dict[str, object]:
    """Train the shipped weights on the fixed 50-tile training split (``split``) and write them with the card.

    A cross-validation already on the card in ``out_dir`` is kept as far as it still holds (it describes
    the recipe and the folds, not one training run): see ``_carried_cv``; ``medfool model cv`` adds
    what is missing.
    """
    config = config or reference_config()
    torch.use_deterministic_algorithms(True)
    tiles = sample_tiles()
    train_tiles, held_out = split(tiles)
    bank = crop_bank(train_tiles, crop=config.crop)
    started = time.perf_counter()
    model = train(bank, config, device="cpu", progress=progress)
    seconds = time.perf_counter() - started
    held = evaluate(model, held_out)
    seen = evaluate(model, train_tiles)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = out_dir / CARD_JSON
    old_cv = None
    if previous.is_file():
        old_cv = _carried_cv(json.loads(previous.read_text(encoding="utf-8")).get("cross_validation"),
                             config.as_dict(), tiles)
    weights = out_dir / "tilenet.safetensors"
    save_model(model, weights, {"width": config.width})
    card = {
        "architecture": ARCHITECTURE,
        "classes": list(CLASSES),
        "tumour_class": "TUM",
        "weights": weights.name,
        "sha256": sha256_of(weights),
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": config.as_dict(),
        "train_tiles": [t.name for t in train_tiles],
        "held_out_tiles": [t.name for t in held_out],
        "crops_per_train_tile": int(bank.images.shape[0] // len(train_tiles)),
        "held_out": held,
        "train": {k: seen[k] for k in ("tiles", "accuracy", "correct")},
        "training_seconds": round(seconds, 1),
        "trained_on": f"{platform.machine()} CPU, torch {torch.__version__}",
    }
    if old_cv:
        card["cross_validation"] = old_cv
    _write_card(out_dir, card)
    return card


def mcnemar_p(gained: int, lost: int) -> float:
    """Exact two-sided McNemar p-value for paired right/wrong outcomes (a binomial test on discordant tiles)."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _interval(iv: list[float]) -> str:
    return f"{_pct(iv[0])} to {_pct(iv[1])}"


def _augmentations(cfg: dict) -> str:
    extra = []
    if cfg.get("scale_jitter", 0) > 0:
        z = cfg["scale_jitter"]
        extra.append(f"a random zoom by a factor log-uniform in [{1 / (1 + z):.2f}, {1 + z:.2f}]")
    if cfg.get("stain_jitter", 0) > 0:
        sj = cfg["stain_jitter"]
        extra.append(f"H&E stain jitter in HED optical-density space (each stain x U(1 ± {sj:g}), + U(± {0.4 * sj:g}))")
    if cfg.get("blur_sigma", 0) > 0:
        extra.append(f"Gaussian blur with sigma up to {cfg['blur_sigma']:g} px")
    base = f"random flips and 90-degree rotations, brightness/contrast/saturation jitter of ±{cfg['colour_jitter']}"
    return base + "".join(f", {e}" for e in extra)


def _cv_section(card: dict) -> str:
    cv = card.get("cross_validation")
    if not cv or "recipe" not in cv:
        text = ("**Cross-validation.** Not run for this recipe yet: `medfool model cv` (5 trainings) adds the "
                "5-fold cross-validated accuracy.\n")
        return text + (_study_section(card) if cv else "")
    r = cv["recipe"]
    tum = r["tumour"]
    rows = "\n".join(f"| {f['fold'] + 1} | {f['correct']}/{f['tiles']} | {_pct(f['accuracy'])} | "
                     f"{f['tumour_detected']}/{f['tumour_tiles']} | {f['tumour_false_positives']} |" for f in r["per_fold"])
    text = f"""**Cross-validated accuracy (5 folds by tile): {r['correct']}/{r['tiles']} = {_pct(r['accuracy'])},
95% interval {_interval(r['interval_95'])}.** This estimates how the recipe does on tiles it has not
seen, from all 65 tiles: for each of {cv['folds']} folds a model is trained from scratch with the same recipe
on the other folds' tiles and tested on that fold's whole tiles; the test predictions are pooled, so
each tile is tested exactly once, by a model that never saw it. The interval is the Wilson score
interval for the pooled proportion. It treats the 65 tiles as independent (tiles from one slide are
not quite) and leaves out the variation from the training seed, so the real uncertainty is, if
anything, larger. Pooled tumour sensitivity {tum['detected']}/{tum['tiles']} (95% interval
{_interval(tum['sensitivity_interval_95'])}); {tum['false_positives']} of {tum['non_tumour_tiles']} non-tumour tiles called tumour.

Folds, a fixed rule with no randomness: {cv['rule']}. Each class's tiles are thus spread over the folds
as evenly as possible, and the test folds hold {', '.join(str(len(f)) for f in cv['fold_tiles'])} tiles.
The fold models serve the estimate only and are not shipped.

| fold | correct | accuracy | tumour detected | non-tumour called tumour |
|---|---|---|---|---|
{rows}
"""
    return text + _study_section(card)


KEEP_P = 0.05  # a setting replaces the baseline only if it beats it in the paired test at this level


def _paired(run: dict, base: dict, cv: dict) -> tuple[int, int, float]:
    """Tiles ``run`` gets right and ``base`` wrong, the reverse, and the exact McNemar p-value."""
    fx, fb = _flags(run, cv), _flags(base, cv)
    gained = sum(a and not b for a, b in zip(fx, fb))
    lost = sum(b and not a for a, b in zip(fx, fb))
    return gained, lost, mcnemar_p(gained, lost)


def study_choice(cv: dict) -> str:
    """The rule for the recipe: the study setting with the most correct tiles among those that beat the
    baseline in the paired test at p < KEEP_P (ties: the fewer changes, then study order); else the baseline."""
    runs = cv["study"]
    base = next(r for r in runs if r["name"] == "baseline")
    passing = [r for r in runs if r is not base and r["correct"] > base["correct"] and _paired(r, base, cv)[2] < KEEP_P]
    if not passing:
        return "baseline"
    return max(passing, key=lambda r: (r["correct"], -len(r["changes"]), -runs.index(r)))["name"]


def _verdict(card: dict) -> str:
    cv = card["cross_validation"]
    runs = cv["study"]
    base = next(r for r in runs if r["name"] == "baseline")
    others = [r for r in runs if r is not base]
    rule = (f"The rule for changing the recipe: a setting replaces the baseline only if it beats it in the\n"
            f"paired test at p < {KEEP_P:g} (uncorrected for testing {len(others)} settings, so a lenient bar); among\n"
            f"several, the one with the most correct tiles.")
    kept = next((r["name"] for r in runs if r["config"] == card["config"]), None)
    if kept == "baseline":
        above = [r["correct"] - base["correct"] for r in others]
        best = max(others, key=lambda r: (r["correct"], -_paired(r, base, cv)[2]))
        g, lo, pv = _paired(best, base, cv)
        hint = (f"Every H&E setting scored above the baseline here (by {min(above)} to {max(above)} tiles), a\nhint "
                f"that they help" if min(above) > 0 else
                f"The settings scored {min(above):+d} to {max(above):+d} tiles against the baseline")
        return f"""**What was kept, and why.** {hint}, but none by more than the noise of 65 tiles and one training
seed: the 95% intervals overlap widely, and the largest gain ({best['name']}: +{g} / -{lo} tiles) has
p = {pv:.2f}.
{rule} No setting meets it, so the reference recipe stays as it was, with the H&E augmentations off,
and **the shipped weights were not retrained** for the study (same recipe, same sha256, same held-out
predictions as before it). Each setting was tried at one strength only. The settings stay in
`TrainConfig`, off by default, for experiments that want them.
"""
    if kept is None:
        return f"**What was kept.** The shipped weights' recipe is not one of the study's settings. {rule}\n"
    g, lo, pv = _paired(next(r for r in runs if r["name"] == kept), base, cv)
    return f"""**What was kept, and why.**
{rule} `{kept}` meets it (+{g} / -{lo} tiles against the baseline,
p = {pv:.3f}), so the reference recipe (`medfool model train`) switches it on and the shipped weights
were retrained with it; with 65 tiles and one training seed the size of the gain is still uncertain.
"""


def _study_section(card: dict) -> str:
    cv = card["cross_validation"]
    text = ""
    runs = cv.get("study")
    if runs:
        base = next((x for x in runs if x["name"] == "baseline"), None)
        lines = []
        for x in runs:
            changes = ", ".join(f"{k}={v:g}" for k, v in x["changes"].items()) or "(flips, rotations, colour jitter)"
            paired = "-"
            if base is not None and x is not base:
                gained, lost, pv = _paired(x, base, cv)
                paired = f"+{gained} / -{lost} (p = {pv:.2f})"
            per_fold = " ".join(str(f["correct"]) for f in x["per_fold"])
            kept = " (kept)" if x["config"] == card["config"] else ""
            lines.append(f"| {x['name']}{kept} | {changes} | {x['correct']}/{x['tiles']} = {_pct(x['accuracy'])} | "
                         f"{_interval(x['interval_95'])} | {per_fold} | {x['tumour']['detected']}/{x['tumour']['tiles']}, "
                         f"{x['tumour']['false_positives']} | {paired} |")
        text += f"""
**Augmentation study.** The same 5-fold cross-validation for the recipe as it was (baseline) and with the
H&E augmentations of `TrainConfig` switched on (`medfool model cv --study`); everything else (seed,
steps, folds) is the same, so the runs are paired tile by tile. "vs baseline" counts the tiles a setting
gets right that the baseline gets wrong (+) and the reverse (-), with an exact McNemar p-value. The
settings: `stain_jitter=s` scales each stain's optical density (haematoxylin, eosin, DAB; Ruifrok and
Johnston's vectors) by U(1-s, 1+s) and shifts it by U(-0.4s, 0.4s); `blur_sigma=b` blurs each crop with
a Gaussian of sigma U(0, b) px; `scale_jitter=z` zooms each crop by a factor log-uniform in
[1/(1+z), 1+z].

| setting | changes | CV accuracy | 95% interval | correct per fold | tumour detected, false positives | vs baseline |
|---|---|---|---|---|---|---|
{chr(10).join(lines)}

{_verdict(card) if base is not None else ""}"""
    return text


def _flags(run: dict, cv: dict) -> list[bool]:
    """Per-tile right/wrong of a cross-validation run, tile by tile in fold order."""
    return [p == t for truth, preds in zip(cv["fold_truth"], run["predictions"]) for t, p in zip(truth, preds)]


def model_card(card: dict) -> str:
    held = card["held_out"]
    cfg = card["config"]
    mapping = ", ".join(f"{k[3:]}->{v}" for k, v in KATHER2016_MAP.items())
    pairs = "\n".join(f"| {name} | {truth} | {pred} |" for name, truth, pred in
                      zip(card["held_out_tiles"], held["truth"], held["predictions"]))
    classes = ", ".join(f"{c} ({CLASS_NAMES[c]})" for c in card["classes"])
    return f"""# Model card: medfool reference tile classifier (`{card['architecture']}`)

**Purpose.** A small, real pathology tile classifier for running and testing medfool's reference
attacks. It is *not* a diagnostic model: it was trained on 50 tiles.

**Task.** Tissue type of a colorectal H&E tile, {len(card['classes'])} classes: {classes}.
The tumour-versus-rest decision is explicit: the tile is called tumour when `TUM` has the highest
probability (`TileClassifier.tumour_probability` gives P(TUM)).

**Data.** The 65 real H&E tiles shipped in `medfool_ref/data/tiles/` (Kather et al. 2016 texture tiles,
CRC-VAL-HE-7K and NCT-CRC-HE-100K samples, all CC BY 4.0; attribution in each folder's PROVENANCE.md).
Kather 2016 labels are mapped onto the NCT scheme: {mapping}.

**What the shipped weights are trained on: the fixed 50-tile training split**, not all 65 tiles. Within
each class, every fourth tile in set/file order is held out: {len(card['train_tiles'])} training tiles,
{len(card['held_out_tiles'])} held-out tiles. Keeping that split leaves the shipped model a held-out check of
its own beside the cross-validated estimate below, and it is the split the attack showcase and the
poisoning experiments use. Training uses {card['crops_per_train_tile']} overlapping {cfg['crop']} px crops per
training tile, class-balanced sampling, {_augmentations(cfg)}. Evaluation uses whole tiles (150 or 224 px;
the network is fully convolutional).

**Training.** `medfool model train` (seed {cfg['seed']}, {cfg['steps']} AdamW steps of {cfg['batch_size']} crops,
one-cycle learning rate up to {cfg['lr']}, weight decay {cfg['weight_decay']}, width {cfg['width']};
{card['parameters']:,} parameters); {card['training_seconds']} s on {card['trained_on']}. Deterministic on a
given machine and torch build.

{_cv_section(card)}
**Held-out accuracy of the shipped weights: {held['correct']}/{held['tiles']} tiles = {held['accuracy']:.1%}.**
Tumour sensitivity {held['tumour_sensitivity']:.0%} (of {held['truth'].count('TUM')} held-out tumour tiles),
{held['tumour_false_positives']} non-tumour tile(s) called tumour. Training tiles: {card['train']['correct']}/{card['train']['tiles']}.
With 15 held-out tiles these figures are coarse (one tile is {1 / held['tiles']:.1%}; 95% Wilson interval
{_interval(list(wilson_interval(held['correct'], held['tiles'])))}); the cross-validated figure above is the better
estimate. The model overfits its training tiles. It is good enough to show that attacks flip real
decisions, and no more.

| held-out tile | truth | prediction |
|---|---|---|
{pairs}

**Weights.** `{card['weights']}` (safetensors, sha256 `{card['sha256']}`), with the normalisation
(mean/std of the training crops) inside the model: inputs are RGB in [0, 1].

**Loading other models.** `medfool_ref.targets.reference.load_model` loads only this architecture from
`.safetensors` files and refuses pickled `.pt`/`.pth` files. Any other `torch.nn.Module` that maps
[0, 1] RGB batches to logits can be passed to the attack functions from Python.
"""
