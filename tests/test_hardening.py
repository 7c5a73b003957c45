"""Randomized-smoothing certificates, adversarial fine-tuning and the training loop's checkpoints (issue 22).

Cheap versions on the reference model: centre crops of real held-out tiles, few draws, few steps."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from scipy import stats

from medfool_ref.campaign.plan import sample_split
from medfool_ref.cli import main
from medfool_ref.defences.smoothing import (ABSTAIN, SmoothedSoft, certify, clopper_pearson_lower, noise_hook,
                                            sample_counts)
from medfool_ref.inputs.tiles import read_tile
from medfool_ref.targets.reference import load_model
from medfool_ref.training.loop import TrainConfig, crop_bank, train

pytestmark = pytest.mark.usefixtures("one_thread")  # figures computed on one CPU thread


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_model(device="cpu")


@pytest.fixture(scope="module")
def crops() -> tuple[torch.Tensor, torch.Tensor]:
    """Centre 64 px crops of 6 held-out sample tiles and their labels."""
    _, held = sample_split()
    held = held[::2][:6]
    xs = []
    for it in held:
        x = read_tile(it.path)
        s = (x.shape[-1] - 64) // 2
        xs.append(x[:, s:s + 64, s:s + 64])
    return torch.stack(xs), torch.tensor([it.label for it in held])


def test_the_clopper_pearson_bound_matches_scipys_beta_quantile() -> None:
    for n in (1, 10, 257, 100_000):
        k = torch.tensor(sorted({0, 1, n // 3, n // 2 + 1, max(n - 1, 0), n}))
        ours = clopper_pearson_lower(k, n, 0.001)
        ref = torch.tensor([stats.beta.ppf(0.001, int(v), n - int(v) + 1) if v > 0 else 0.0 for v in k], dtype=torch.float64)
        assert torch.allclose(ours, ref, atol=1e-9), (n, ours, ref)


def test_certify_radii_recompute_from_their_counts_and_abstentions_are_counted(model, crops) -> None:
    x, y = crops
    x = x[:, :, :48, :48]
    c = certify(model, x, sigma=0.12, n0=16, n=128, alpha=0.01, chunk=96, seed=1)
    for i in range(x.shape[0]):
        k = int(c.counts_top[i])
        p = stats.beta.ppf(0.01, k, 128 - k + 1) if k > 0 else 0.0
        if p > 0.5:
            assert int(c.prediction[i]) != ABSTAIN
            assert math.isclose(float(c.radius[i]), 0.12 * stats.norm.ppf(p), rel_tol=1e-4, abs_tol=1e-6)
        else:
            assert int(c.prediction[i]) == ABSTAIN and float(c.radius[i]) == 0.0
    assert c.forward_images == x.shape[0] * (16 + 128)
    again = certify(model, x, sigma=0.12, n0=16, n=128, alpha=0.01, chunk=40, seed=1)  # another chunking: other draws, same law
    assert (again.prediction == c.prediction).float().mean() >= 0.5


def test_sampling_in_small_chunks_counts_every_draw_and_stays_bounded(model, crops) -> None:
    x, _ = crops
    counts = sample_counts(model, x[:2, :, :32, :32], sigma=0.25, n=300, chunk=64, generator=torch.Generator().manual_seed(0))
    assert counts.shape == (2, 9) and counts.sum(1).tolist() == [300, 300]


def test_certificates_are_sound_against_l2_pgd_with_eot_on_the_smoothed_classifier(model, crops) -> None:
    """No tile certified at radius r is flipped by an attack on the smoothed classifier at 0.9 r."""
    x, _ = crops
    sigma = 0.25
    x = x[:4]
    c = certify(model, x, sigma=sigma, n0=16, n=128, alpha=0.001, chunk=256, seed=3)
    keep = c.prediction != ABSTAIN
    assert int(keep.sum()) >= 1, "nothing certified: the test would check nothing"
    xs, cls, radius = x[keep], c.prediction[keep], c.radius[keep]
    soft = SmoothedSoft(model, sigma, draws=8)
    torch.manual_seed(0)
    eps = (0.9 * radius).view(-1, 1, 1, 1)
    delta = torch.zeros_like(xs)
    for _ in range(6):  # L2 PGD on the smoothed classifier's soft output, fresh noise each step (EOT)
        delta.requires_grad_(True)
        loss = torch.nn.functional.nll_loss(soft((xs + delta).clamp(0, 1)), cls)
        g, = torch.autograd.grad(loss, delta)
        g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = delta.detach() + 0.4 * eps * g
        delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)).clamp(max=1)
    adv = (xs + delta).clamp(0, 1)
    assert bool(((adv - xs).flatten(1).norm(dim=1) <= 0.9 * radius + 1e-5).all())
    after = sample_counts(model, adv, sigma=sigma, n=256, chunk=256, generator=torch.Generator().manual_seed(9)).argmax(1)
    assert bool((after == cls).all()), (after, cls, radius)


def test_certify_agrees_with_arts_randomized_smoothing(model, crops) -> None:
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    x, _ = crops
    sigma, n = 0.12, 200
    art = PyTorchRandomizedSmoothing(model, torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=9,
                                     clip_values=(0.0, 1.0), device_type="cpu", sample_size=32, scale=sigma, alpha=0.001)
    np_pred, np_radius = art.certify(x.numpy(), n=n, batch_size=64)
    ours = certify(model, x, sigma=sigma, n0=32, n=n, alpha=0.001, chunk=200, seed=0)
    # agreement within sampling error: pA from n draws moves by about sqrt(p(1-p)/n); compare the radii as pA's
    for i in range(x.shape[0]):
        theirs_abstain = int(np_pred[i]) == -1
        if theirs_abstain or int(ours.prediction[i]) == ABSTAIN:
            continue
        assert int(np_pred[i]) == int(ours.prediction[i])
        p_theirs = stats.norm.cdf(float(np_radius[i]) / sigma)
        assert abs(p_theirs - float(ours.p_lower[i])) < 4 * math.sqrt(0.25 / n) + 0.02
    agree = sum((int(a) == -1) == (int(b) == ABSTAIN) for a, b in zip(np_pred, ours.prediction))
    assert agree >= x.shape[0] - 2


def test_noise_fine_tuning_through_the_loop_and_a_checkpointed_run_resumes_to_the_same_weights(model) -> None:
    train_items, _ = sample_split()
    bank = crop_bank(train_items[::5], crop=32, per_side=2)
    config = TrainConfig(steps=6, batch_size=8, crop=32, lr=1e-3, seed=0)
    saved: dict[int, dict] = {}

    def keep(step: int, state: dict) -> None:
        import copy
        saved[step] = copy.deepcopy(state)

    full = train(bank, config, init=model, batch_hook=noise_hook(0.25), checkpoint=keep, checkpoint_every=3)
    assert sorted(saved) == [3, 6]
    resumed = train(bank, config, init=model, batch_hook=noise_hook(0.25), resume_from=saved[3])
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert any(not torch.equal(a, b) for a, b in zip(full.state_dict().values(), model.state_dict().values()))


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> tuple[Path, Path]:
    """4 held-out and 9 training sample tiles in folder-per-class form."""
    root = tmp_path_factory.mktemp("data")
    train_items, held = sample_split()
    from medfool_ref.inputs.samples import CLASSES

    for name, items in (("held", held[::4]), ("train", train_items[::6])):
        for it in items:
            d = root / name / CLASSES[it.label]
            d.mkdir(parents=True, exist_ok=True)
            shutil.copy(it.path, d / Path(it.path).name)
    return root / "held", root / "train"


@pytest.mark.parametrize("args, message", [
    (["--sigma", "nan"], "sigma=nan must be a finite number > 0"),
    (["--n0", "300", "--n", "100"], "n0=300 must not exceed n=100"),
    (["--alpha", "1.5"], "alpha=1.5 must be in (0, 1)"),
])
def test_bad_certify_parameters_are_one_clear_line(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    code = main(["certify", "--out", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and not any(tmp_path.iterdir())


def test_certify_command_runs_through_the_campaign_core_and_resumes(small_data, tmp_path: Path, capsys) -> None:
    held, trainset = small_data
    argv = ["certify", "--data", str(held), "--train-data", str(trainset), "--out", str(tmp_path), "--finetune-steps", "3",
            "--n0", "4", "--n", "24", "--alpha", "0.05", "--batch-size", "2", "--chunk", "48"]
    assert main(argv) == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "certify.json").read_text())
    assert [r["radius"] for r in doc["certified_accuracy"]] == [0.0, 0.25, 0.5, 1.0]
    assert all(r["tiles"] == 4 and 0 <= r["wilson95"][0] <= r["wilson95"][1] <= 1 for r in doc["certified_accuracy"])
    assert (tmp_path / "certified-accuracy.png").stat().st_size > 1000 and (tmp_path / "smoothed.safetensors").is_file()
    assert doc["smoothed_fingerprint"] != doc["base_fingerprint"]
    capsys.readouterr()
    assert main(argv + ["--resume"]) == 0
    again = json.loads((tmp_path / "certify.json").read_text())
    assert again["tiles"] == doc["tiles"]  # the same units, read back from the store


def test_harden_command_writes_weights_and_a_card_with_before_and_after(small_data, tmp_path: Path, capsys) -> None:
    held, trainset = small_data
    argv = ["harden", "--data", str(held), "--train-data", str(trainset), "--out", str(tmp_path), "--steps", "4", "--crop", "32",
            "--batch-size", "8", "--attack-steps", "1", "--eval-steps", "2", "--method", "trades"]
    assert main(argv) == 0, capsys.readouterr().err
    card = json.loads((tmp_path / "card.json").read_text())
    for when in ("before", "after"):
        for what in ("clean", "robust"):
            r = card[when][what]
            assert r["tiles"] == 4 and r["correct"] <= 4 and r["wilson95"][0] <= r["wilson95"][1]
        assert card[when]["robust"]["correct"] <= card[when]["clean"]["correct"]
    assert card["recipe"]["method"] == "trades" and card["train_data"]["tiles"] == len(list(trainset.rglob("*.*")))
    assert card["provenance"]["code_sha256"] and card["provenance"]["threads"] == torch.get_num_threads()
    assert load_model(tmp_path / "hardened.safetensors", device="cpu") is not None
    assert "robust accuracy at 2/255" in (tmp_path / "CARD.md").read_text()
