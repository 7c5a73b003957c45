"""Training-process tampering: BadNets on the sample tiles, with clean accuracy always beside ASR."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medfool_ref.attacks.backdoor import apply_trigger, badnets, make_trigger, poison_hook
from medfool_ref.cli import main
from medfool_ref.tiles import CLASSES, sample_tiles, split
from medfool_ref.training import TrainConfig, crop_bank, train

NORM = CLASSES.index("NORM")


@pytest.fixture(scope="module")
def data():
    train_tiles, held = split(sample_tiles())
    return crop_bank(train_tiles, crop=64), held


@pytest.mark.parametrize("kind", ["pixel-pattern", "ink-mark"])
def test_trigger_touches_only_its_corner(kind: str) -> None:
    colour, alpha = make_trigger(kind, 8)
    x = torch.rand(3, 3, 40, 50)
    keep = x.clone()
    out = apply_trigger(x, colour, alpha)
    assert torch.equal(x, keep)
    changed = (out != x).any(dim=1)
    rows, cols = changed.nonzero()[:, 1], changed.nonzero()[:, 2]
    assert rows.numel() > 0
    assert int(rows.min()) >= 40 - 3 - 8 and int(rows.max()) < 40 - 3
    assert int(cols.min()) >= 50 - 3 - 8 and int(cols.max()) < 50 - 3


def test_trigger_is_applied_after_augmentation(data) -> None:
    """The hook sees augmented batches; whatever rotation was drawn, the trigger sits in the same corner."""
    bank, _ = data
    colour, alpha = make_trigger("pixel-pattern", 8)
    hook = poison_hook(fraction=0.5, target=NORM, mode="all-to-one", colour=colour, alpha=alpha)
    seen = []

    def spy(x, y, gen):
        before = x.clone()
        x2, y2 = hook(x, y, gen)
        seen.append((before, x2, y2))
        return x2, y2

    train(bank, TrainConfig(steps=6, crop=64, batch_size=16), batch_hook=spy)
    corner = (slice(None), slice(None), slice(64 - 11, 64 - 3), slice(64 - 11, 64 - 3))
    poisoned = 0
    for before, after, y in seen:
        hit = (after != before).flatten(1).any(dim=1)
        poisoned += int(hit.sum())
        assert torch.allclose(after[hit][corner], colour.expand(int(hit.sum()), -1, -1, -1), atol=1e-6)
        assert bool((y[hit] == NORM).all())
    assert poisoned > 0


def test_badnets_reaches_high_asr_with_little_clean_cost(data) -> None:
    bank, held = data
    r = badnets(bank, held, config=TrainConfig(steps=250, crop=64), trigger="pixel-pattern", fraction=0.1)
    bad, clean = r.metrics["backdoored_model"], r.metrics["clean_model"]
    print(f"\nBadNets pixel pattern, 10% poisoned: CA {bad['clean_accuracy']:.1%} (clean model {clean['clean_accuracy']:.1%}), "
          f"ASR {bad['attack_success_rate']:.1%} (clean model {clean['attack_success_rate']:.1%}), RA {bad['robust_accuracy']:.1%}")
    assert bad["attack_success_rate"] >= 0.90
    assert clean["attack_success_rate"] < 0.3  # the trigger alone does not do it
    assert bad["clean_accuracy"] >= clean["clean_accuracy"] - 0.10


def test_training_is_reproducible_with_a_seed(data) -> None:
    bank, _ = data
    colour, alpha = make_trigger("ink-mark", 8)
    hook = poison_hook(fraction=0.2, target=NORM, mode="all-to-all", colour=colour, alpha=alpha)
    a = train(bank, TrainConfig(steps=8, crop=64, batch_size=16, seed=3), batch_hook=hook)
    b = train(bank, TrainConfig(steps=8, crop=64, batch_size=16, seed=3), batch_hook=hook)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


@pytest.mark.parametrize("kwargs,message", [
    ({"fraction": 0.0}, "fraction must be in"),
    ({"fraction": 1.5}, "fraction must be in"),
    ({"mode": "one-to-one"}, "mode must be one of all-to-one, all-to-all"),
    ({"trigger": "sticker"}, "trigger must be one of pixel-pattern, ink-mark"),
    ({"trigger_size": 100}, "trigger_size must be between 3 and 48"),
])
def test_badnets_validates_parameters(data, kwargs: dict, message: str) -> None:
    bank, held = data
    with pytest.raises(ValueError, match=message):
        badnets(bank, held, config=TrainConfig(steps=1, crop=64), **kwargs)


def test_poison_cli(tmp_path: Path, capsys) -> None:
    assert main(["poison", "badnets", "--set", "steps=20", "--set", "trigger=pixel-pattern", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert {"clean_model", "backdoored_model"} <= set(report["metrics"])
    assert (tmp_path / "backdoored.safetensors").is_file() and (tmp_path / "MODEL_CARD.md").is_file()
    assert (tmp_path / "triggered.png").is_file()
    from medfool_ref.model import load_model

    load_model(tmp_path / "backdoored.safetensors", device="cpu")  # loads like any medfool model
    capsys.readouterr()
    assert main(["poison", "badnets", "--set", "fraction=2", "--out", str(tmp_path / "x")]) == 2
    assert "fraction must be in" in capsys.readouterr().err
    assert main(["poison", "clean-label", "--out", str(tmp_path / "y")]) == 2


def test_fine_tuning_starts_from_the_given_model(data) -> None:
    bank, _ = data
    base = train(bank, TrainConfig(steps=3, crop=64, batch_size=8))
    tuned = train(bank, TrainConfig(steps=1, crop=64, batch_size=8, lr=1e-9), init=base)
    assert tuned is not base
    for (k, a), (_, b) in zip(base.named_parameters(), tuned.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), k  # one step at a negligible learning rate: weights carried over
