"""The reference model's recipe and card: the cross-validation folds, the Wilson interval, the H&E
augmentations (off by default, bit for bit), the card's numbers against each other, and the shipped
weights against the card."""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from medfool_ref.inputs.samples import CLASSES, sample_tiles, split
from medfool_ref.targets.reference import DEFAULT_WEIGHTS, MODEL_DIR, load_model, sha256_of
from medfool_ref.training import loop, reference
from medfool_ref.training.loop import TrainConfig, augment, crop_bank, evaluate, train
from medfool_ref.training.reference import (
    CARD_JSON,
    KEPT,
    STUDY,
    cross_validate,
    cv_folds,
    mcnemar_p,
    model_card,
    reference_config,
    study_choice,
    wilson_interval,
)

NEW_FIELDS = {"stain_jitter": "stain", "blur_sigma": "blur", "scale_jitter": "scale"}  # TrainConfig field -> augment keyword


@pytest.fixture(scope="module")
def tiles():
    return sample_tiles()


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((MODEL_DIR / CARD_JSON).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    bank = crop_bank(sample_tiles()[::5], crop=64, per_side=2)
    return bank.images[:24].float().div(255)


# --- folds ---------------------------------------------------------------------------------------

def test_the_folds_partition_the_65_tiles(tiles) -> None:
    folds = cv_folds(tiles)
    assert len(folds) == 5
    names = [t.name for f in folds for t in f]
    assert sorted(names) == sorted(t.name for t in tiles) and len(names) == len(set(names)) == 65
    assert sorted(len(f) for f in folds) == [13] * 5


def test_the_folds_are_stratified_by_class(tiles) -> None:
    folds = cv_folds(tiles)
    for cls in CLASSES:
        per_fold = [sum(t.label == cls for t in f) for f in folds]
        total = sum(t.label == cls for t in tiles)
        assert sum(per_fold) == total
        assert max(per_fold) - min(per_fold) <= 1, (cls, per_fold)  # as even as the class's size allows


def test_the_folds_are_a_fixed_rule(tiles) -> None:
    first = [[t.name for t in f] for f in cv_folds(tiles)]
    assert first == [[t.name for t in f] for f in cv_folds(sample_tiles())]
    assert first == [[t.name for t in f] for f in cv_folds(list(tiles))]
    # the rule: tiles by class then set/file order, dealt round the folds
    ordered = [t.name for cls in CLASSES for t in tiles if t.label == cls]
    assert all(first[j % 5][j // 5] == name for j, name in enumerate(ordered))


# --- the Wilson interval -------------------------------------------------------------------------

@pytest.mark.parametrize(("k", "n", "lo", "hi"), [
    (0, 10, 0.0, 0.277533),  # upper = (z^2/n) / (1 + z^2/n), z = 1.96
    (10, 10, 0.722467, 1.0),
    (50, 100, 0.403832, 0.596168),  # 0.5 -+ z/(1 + z^2/n) * sqrt(0.25/n + z^2/(4n^2))
    (10, 15, 0.417135, 0.848237),
])
def test_wilson_interval_on_known_values(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=2e-6)


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(7, 20)
    assert lo < 7 / 20 < hi
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_mcnemar_exact_p_values() -> None:
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_p(3, 3) == 1.0
    assert mcnemar_p(1, 6) == pytest.approx(2 * (1 + 7) / 128)


# --- augmentations -------------------------------------------------------------------------------

def _old_augment(x: torch.Tensor, gen: torch.Generator, jitter: float) -> torch.Tensor:
    """The augmentation as it was before the H&E settings existed (kept here as the reference)."""
    b = x.shape[0]
    dev = x.device
    flip = torch.rand(b, device=dev, generator=gen) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    k = torch.randint(0, 4, (b,), device=dev, generator=gen)
    rotated = torch.stack([torch.rot90(x, r, dims=(-2, -1)) for r in range(4)])
    x = rotated[k, torch.arange(b, device=dev)]
    if jitter > 0:
        bright = 1 + jitter * (2 * torch.rand(b, 1, 1, 1, device=dev, generator=gen) - 1)
        contrast = 1 + jitter * (2 * torch.rand(b, 1, 1, 1, device=dev, generator=gen) - 1)
        sat = 1 + jitter * (2 * torch.rand(b, 1, 1, 1, device=dev, generator=gen) - 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast + mean * bright
        grey = x.mean(dim=1, keepdim=True)
        x = (x - grey) * sat + grey
    return x.clamp(0, 1)


def _aug(x: torch.Tensor, seed: int, jitter: float = 0.15, **kw: float) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return augment(x, gen, jitter, **kw), gen.get_state()


def test_the_new_augmentations_are_off_by_default() -> None:
    config = TrainConfig()
    assert all(getattr(config, f) == 0.0 for f in NEW_FIELDS)
    assert {f.name for f in fields(TrainConfig)} >= set(NEW_FIELDS)


@pytest.mark.parametrize("jitter", [0.0, 0.15])
def test_off_is_the_old_augmentation_bit_for_bit(crops, jitter: float) -> None:
    gen = torch.Generator().manual_seed(3)
    old = _old_augment(crops, gen, jitter)
    off = {kw: getattr(TrainConfig(), f) for f, kw in NEW_FIELDS.items()}
    new, state = _aug(crops, 3, jitter, **off)
    plain, plain_state = _aug(crops, 3, jitter)
    assert torch.equal(new, old) and torch.equal(plain, old)
    assert torch.equal(state, gen.get_state()) and torch.equal(plain_state, state)  # no extra random draws


def test_training_with_the_settings_off_is_unchanged(monkeypatch) -> None:
    """The whole loop with TrainConfig() defaults trains the same weights as with the old augmentation."""
    bank = crop_bank(sample_tiles()[::7], crop=32, per_side=2)
    config = TrainConfig(steps=3, batch_size=8, crop=32, width=4)
    new = train(bank, config).state_dict()
    monkeypatch.setattr(loop, "augment", lambda x, gen, jitter, **kw: _old_augment(x, gen, jitter))
    old = train(bank, config).state_dict()
    assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in new)


SETTINGS = [{"stain": 0.2}, {"blur": 1.5}, {"scale": 0.2}, {"stain": 0.2, "blur": 1.5, "scale": 0.2}]


@pytest.mark.parametrize("kw", SETTINGS, ids=lambda kw: "+".join(kw))
def test_augmentations_on_keep_range_shape_and_determinism_and_change_the_batch(crops, kw: dict) -> None:
    out, _ = _aug(crops, 5, 0.0, **kw)
    again, _ = _aug(crops, 5, 0.0, **kw)
    off, _ = _aug(crops, 5, 0.0)
    assert out.shape == crops.shape and out.dtype == crops.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(out, again)
    assert (out - off).abs().mean() > 1e-3  # the flips/rotations are the same draws: the difference is the new setting
    other, _ = _aug(crops, 6, 0.0, **kw)
    assert not torch.equal(out, other)


def test_blur_smooths_and_zoom_keeps_the_mean_colour(crops) -> None:
    def roughness(x: torch.Tensor) -> float:
        return float((x[..., 1:] - x[..., :-1]).abs().mean())
    blurred, _ = _aug(crops, 1, 0.0, blur=2.0)
    off, _ = _aug(crops, 1, 0.0)
    assert roughness(blurred) < roughness(off)
    zoomed, _ = _aug(crops, 1, 0.0, scale=0.2)
    assert (zoomed.mean() - off.mean()).abs() < 0.05


def test_train_passes_the_settings_to_augment(monkeypatch) -> None:
    seen = []

    def spy(x, gen, jitter, **kw):
        seen.append(kw)
        return x
    monkeypatch.setattr(loop, "augment", spy)
    bank = crop_bank(sample_tiles()[:2], crop=32, per_side=1)
    train(bank, TrainConfig(steps=1, batch_size=2, crop=32, width=4, stain_jitter=0.1, blur_sigma=0.5, scale_jitter=0.3))
    assert seen == [{"stain": 0.1, "blur": 0.5, "scale": 0.3}]


# --- cross-validation and the card ---------------------------------------------------------------

def _check_run(run: dict, cv: dict) -> None:
    """A cross-validation result's pooled figures agree with its per-fold figures and its predictions."""
    per = run["per_fold"]
    assert [f["fold"] for f in per] == list(range(cv["folds"]))
    assert [f["tiles"] for f in per] == [len(t) for t in cv["fold_tiles"]]
    assert run["tiles"] == sum(f["tiles"] for f in per)
    assert run["correct"] == sum(f["correct"] for f in per)
    assert run["accuracy"] == pytest.approx(run["correct"] / run["tiles"])
    assert run["interval_95"] == pytest.approx(list(wilson_interval(run["correct"], run["tiles"])))
    for f, truth, preds in zip(per, cv["fold_truth"], run["predictions"]):
        assert f["correct"] == sum(t == p for t, p in zip(truth, preds))
        assert f["accuracy"] == pytest.approx(f["correct"] / f["tiles"])
        assert f["tumour_tiles"] == truth.count("TUM")
        assert f["tumour_detected"] == sum(t == p == "TUM" for t, p in zip(truth, preds))
        assert f["tumour_false_positives"] == sum(t != "TUM" and p == "TUM" for t, p in zip(truth, preds))
    tum = run["tumour"]
    assert tum["tiles"] == sum(f["tumour_tiles"] for f in per)
    assert tum["detected"] == sum(f["tumour_detected"] for f in per)
    assert tum["false_positives"] == sum(f["tumour_false_positives"] for f in per)
    assert tum["non_tumour_tiles"] == run["tiles"] - tum["tiles"]
    assert tum["sensitivity_interval_95"] == pytest.approx(list(wilson_interval(tum["detected"], tum["tiles"])))


def test_the_cards_cross_validation_is_consistent(card, tiles) -> None:
    cv = card["cross_validation"]
    assert cv["folds"] == 5
    assert cv["fold_tiles"] == [[t.name for t in f] for f in cv_folds(tiles)]
    assert cv["fold_truth"] == [[t.label for t in f] for f in cv_folds(tiles)]
    recipe = cv["recipe"]
    assert recipe["tiles"] == 65
    assert TrainConfig(**recipe["config"]).as_dict() == TrainConfig(**card["config"]).as_dict()
    _check_run(recipe, cv)
    study = {r["name"]: r for r in cv["study"]}
    assert list(study) == list(STUDY)
    for name, run in study.items():
        assert run["changes"] == STUDY[name]
        assert run["config"] == reference.study_config(name).as_dict()
        _check_run(run, cv)
    kept = [r for r in cv["study"] if r["config"] == TrainConfig(**card["config"]).as_dict()]
    assert len(kept) == 1 and kept[0]["predictions"] == recipe["predictions"]
    assert TrainConfig(**card["config"]) == reference_config()  # the shipped weights are of the committed recipe


def test_the_kept_recipe_follows_the_cards_rule(card) -> None:
    cv = card["cross_validation"]
    assert study_choice(cv) == KEPT
    base = next(r for r in cv["study"] if r["name"] == "baseline")
    chosen = next(r for r in cv["study"] if r["name"] == KEPT)
    assert chosen["correct"] >= base["correct"]
    text = (MODEL_DIR / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert text.count("(kept)") == 1 and f"| {KEPT} (kept) |" in text


def test_the_markdown_card_is_rendered_from_the_json(card) -> None:
    text = (MODEL_DIR / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert text == model_card(card)
    r = card["cross_validation"]["recipe"]
    lo, hi = r["interval_95"]
    assert f"{r['correct']}/{r['tiles']} = {100 * r['accuracy']:.1f}%" in text
    assert f"{100 * lo:.1f}% to {100 * hi:.1f}%" in text
    assert "Wilson score" in text and "the fixed 50-tile training split" in text
    for name in STUDY:
        assert f"| {name}" in text
    assert "TO BE WRITTEN" not in text


def test_medfool_model_cv_reuses_the_cards_results(tmp_path: Path, monkeypatch, capsys) -> None:
    """Training is deterministic, so `medfool model cv --study` on the shipped card retrains nothing."""
    from medfool_ref.cli import main

    out = tmp_path / "model"
    out.mkdir()
    for name in (CARD_JSON, "MODEL_CARD.md"):
        shutil.copy(MODEL_DIR / name, out / name)

    def refuse(*a, **k):
        raise AssertionError("trained although the card already holds the result")
    monkeypatch.setattr(reference, "cross_validate", refuse)
    assert main(["model", "cv", "--study", "--out", str(out)]) == 0
    assert "cross-validated accuracy of the recipe" in capsys.readouterr().out
    assert (out / CARD_JSON).read_text() == (MODEL_DIR / CARD_JSON).read_text()
    assert (out / "MODEL_CARD.md").read_text() == (MODEL_DIR / "MODEL_CARD.md").read_text()
    assert main(["model", "cv", "--out", str(tmp_path / "nowhere")]) == 2


def test_a_small_cross_validation_end_to_end(tiles) -> None:
    few = [t for cls in CLASSES for t in [x for x in tiles if x.label == cls][:2]]  # 18 tiles
    config = TrainConfig(steps=2, batch_size=4, crop=32, width=4)
    run = cross_validate(config, few)
    header = reference._cv_header(few)
    _check_run(run, header)
    assert run["tiles"] == len(few) and run["config"] == config.as_dict()


def test_reference_model_card_matches_the_weights() -> None:
    card = json.loads((MODEL_DIR / "tilenet.json").read_text())
    assert sha256_of(DEFAULT_WEIGHTS) == card["sha256"]
    _, held = split(sample_tiles())
    assert [t.name for t in held] == card["held_out_tiles"]
    result = evaluate(load_model(device="cpu"), held)
    assert result["correct"] == card["held_out"]["correct"]
    assert result["predictions"] == card["held_out"]["predictions"]
    text = (MODEL_DIR / "MODEL_CARD.md").read_text()
    assert f"{card['held_out']['correct']}/{card['held_out']['tiles']} tiles" in text
