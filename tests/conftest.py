from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sitebuild import ROOT, build  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _threads_restored():
    """torch's thread count is process-wide: a module that changes it (a one-thread fixture, say) gets it back
    afterwards, so figures later in the run are computed as in a run of their own file (CPU rounding depends on it)."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one CPU thread (deterministic reductions), then restore the count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real project's site, built once per test session with ``mkdocs build --strict``."""
    out = tmp_path_factory.mktemp("site")
    result = build(ROOT, out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="session")
def poisoned() -> dict:
    """A static BadNets set and the model trained on it (shared by the sanitiser, STRIP and retraining tests): 10% of
    the sample training split's 800 crops (48 px, 4 x 4 per tile) get the 8 px pixel-pattern trigger and the NORM
    label; the model is the one training loop's, 150 steps, seed 0."""
    import torch

    from medfool_ref.attacks.backdoor import apply_trigger, make_trigger
    from medfool_ref.campaign.plan import sample_split
    from medfool_ref.defences.sanitise import penultimate
    from medfool_ref.inputs.samples import CLASSES
    from medfool_ref.training.loop import CropBank, TrainConfig, crop_bank, train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # trained on one thread (its consumers use the ``one_thread`` fixture too)
    target = CLASSES.index("NORM")
    train_items, _ = sample_split()
    bank = crop_bank(train_items, crop=48, per_side=4)
    gen = torch.Generator().manual_seed(0)
    eligible = (bank.labels != target).nonzero().squeeze(1)
    chosen = eligible[torch.randperm(eligible.numel(), generator=gen)[: int(0.1 * bank.labels.numel())]]
    colour, alpha = make_trigger("pixel-pattern", 8)
    images, labels = bank.images.clone(), bank.labels.clone()
    stamped = apply_trigger(images[chosen].float().div(255), colour, alpha)
    images[chosen] = (stamped * 255).round().to(torch.uint8)
    labels[chosen] = target
    is_poison = torch.zeros_like(labels, dtype=torch.bool)
    is_poison[chosen] = True
    data = CropBank(images, labels, bank.tile_of, bank.tiles)
    config = TrainConfig(steps=150, batch_size=32, crop=48, seed=0)
    model = train(data, config)
    feats = penultimate(model, images.float().div(255))
    torch.set_num_threads(threads)
    return {"features": feats, "labels": labels, "poison": is_poison, "model": model, "colour": colour, "alpha": alpha,
            "bank": data, "config": config, "target": target}
