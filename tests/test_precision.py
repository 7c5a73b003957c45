"""The audit's precision modes: bf16 autocast on the differentiated passes only, channels-last, and their keys."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch
from torch import nn

from medfool_ref.cli import main
from medfool_ref.inputs.samples import sample_tiles
from medfool_ref.targets.precision import Precision, run_fingerprint, with_precision
from medfool_ref.targets.rebuild import rebuild
from medfool_ref.targets.target import reference_target


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)).eval()


@pytest.mark.parametrize("precision, channels_last", [("bf16", False), ("float32", True), ("bf16", True)])
def test_only_the_differentiated_passes_change_and_gradients_stay_float32(precision: str, channels_last: bool) -> None:
    net = _cnn()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        ref = net(x)
    mine = _cnn()
    wrapped = Precision(mine, precision=precision, channels_last=channels_last)
    assert all(p.is_contiguous() for p in mine.parameters())  # the caller's module is left as it was
    with torch.no_grad():
        plain = wrapped(x)
    assert plain.dtype == torch.float32  # no gradients: float32 always (the clean pass and every score)
    torch.testing.assert_close(plain, ref, rtol=1e-5, atol=1e-5)
    xg = x.clone().requires_grad_(True)
    out = wrapped(xg)
    assert out.dtype == torch.float32
    (g,) = torch.autograd.grad(out[:, 0].sum(), xg)
    xr = x.clone().requires_grad_(True)
    (gr,) = torch.autograd.grad(net(xr)[:, 0].sum(), xr)
    assert g.dtype == torch.float32 and g.shape == x.shape
    cos = torch.nn.functional.cosine_similarity(g.flatten(1), gr.flatten(1)).min()
    assert cos > 0.98, cos  # the same direction, whatever the arithmetic
    if precision == "bf16":
        assert not torch.equal(out.detach(), ref)  # autocast really ran in bfloat16
        torch.testing.assert_close(out.detach(), ref, rtol=0.05, atol=0.05)


def test_each_mode_files_its_units_under_its_own_key_and_float32_keeps_the_old_one() -> None:
    keys = {(p, c): run_fingerprint("abc", p, c) for p in ("float32", "bf16") for c in (False, True)}
    assert keys[("float32", False)] == "abc"  # results recorded before the modes existed keep their keys
    assert len(set(keys.values())) == 4
    with pytest.raises(ValueError, match="expected one of"):
        with_precision(reference_target(), "fp16")


def test_a_worker_rebuilds_the_same_mode() -> None:
    target = with_precision(reference_target(), "bf16", channels_last=True)
    again = rebuild(target.spec, "cpu")
    assert isinstance(again.model, Precision) and again.model.precision == "bf16" and again.model.channels_last
    assert again.fingerprint == target.fingerprint and again.run_fingerprint == target.run_fingerprint != target.fingerprint


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiles")
    for t in sample_tiles():
        if t.label in ("TUM", "NORM", "STR") and t.dataset == "crc-val-he-7k-sample":
            (root / t.label).mkdir(exist_ok=True)
            (root / t.label / t.path.name).write_bytes(t.path.read_bytes())
    return root


def test_a_bf16_audit_reports_its_mode_judges_in_float32_and_never_reuses_float32_results(tiles: Path, tmp_path: Path, capsys) -> None:
    common = ["audit", "--data", str(tiles), "--out", str(tmp_path), "--attacks", "fgsm,pgd", "--budgets", "8"]
    assert main(common) == 0
    f32 = json.loads((tmp_path / "report.json").read_text())
    assert main(common + ["--precision", "bf16", "--resume"]) == 0
    bf = json.loads((tmp_path / "report.json").read_text())
    capsys.readouterr()
    assert f32["model"]["precision"] == "float32" and bf["model"]["precision"] == "bf16"
    assert bf["model"]["sha256"] == f32["model"]["sha256"]  # the same weights
    assert "Gradient passes in bf16" in (tmp_path / "report.html").read_text()
    assert bf["data"]["clean_accuracy"] == f32["data"]["clean_accuracy"]  # the clean pass ran in float32
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        units = db.execute("SELECT count(*) FROM units").fetchone()[0]
    per_run = sum(len(a["budgets"]) for a in f32["attacks"])
    assert units >= 2 * (per_run + 1)  # resumed in another mode: nothing was reused
    for a, b in zip(f32["attacks"], bf["attacks"]):  # bf16 gradients still fool the float32 model (real tiles, PGD 8/255)
        assert b["budgets"][0]["success_rate"] >= a["budgets"][0]["success_rate"] - 0.25, (a["id"], a["budgets"], b["budgets"])
        assert b["budgets"][0]["success_rate"] > 0.5


class _Liar(nn.Module):
    """The reference model whose differentiated passes claim every tile reads as ADI (the no-gradient pass is honest)."""

    def __init__(self, model: nn.Module, flagged: bool) -> None:
        super().__init__()
        self.model = model
        self.approximate_gradients = flagged

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        if torch.is_grad_enabled():
            z = z + 50.0 * torch.nn.functional.one_hot(torch.tensor(0), z.shape[1]).to(z)
        return z


@pytest.mark.parametrize("attack", ["pgd", "apgd"])
def test_an_early_stop_on_an_approximate_pass_is_confirmed_before_the_tile_is_frozen(attack: str) -> None:
    from medfool_ref.attacks import pgd
    from medfool_ref.attacks.apgd import apgd
    from medfool_ref.campaign.showcase import correct_batches
    from medfool_ref.inputs.samples import CLASSES
    from medfool_ref.targets.reference import load_model

    model = load_model()
    x, y, _ = max(correct_batches(module_target_of(model)), key=lambda b: b[0].shape[0])
    keep = y != CLASSES.index("ADI")
    x, y = x[keep][:8], y[keep][:8]
    fn = pgd if attack == "pgd" else apgd
    honest = fn(model, x, y, eps=8 / 255, steps=10)
    fooled_by_the_lie = fn(_Liar(model, flagged=False), x, y, eps=8 / 255, steps=10)
    confirmed = fn(_Liar(model, flagged=True), x, y, eps=8 / 255, steps=10)
    assert fooled_by_the_lie.iterations <= 1  # every tile frozen at once (APGD: at its start) on a success that is not one
    assert int(fooled_by_the_lie.success.sum()) < int(honest.success.sum())
    assert confirmed.iterations > 1 and int(confirmed.success.sum()) >= int(honest.success.sum()) - 1 >= 4


def module_target_of(model: nn.Module):  # type: ignore[no-untyped-def]
    from medfool_ref.inputs.samples import CLASSES
    from medfool_ref.targets.target import module_target

    return module_target(model, CLASSES)


def test_a_compiled_audit_agrees_with_the_eager_one_under_its_own_key(tiles: Path, tmp_path: Path, capsys) -> None:
    common = ["audit", "--data", str(tiles), "--out", str(tmp_path), "--attacks", "fgsm,pgd", "--budgets", "8", "--max-tiles", "6"]
    assert main(common) == 0
    eager = json.loads((tmp_path / "report.json").read_text())
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        first = db.execute("SELECT count(*) FROM units").fetchone()[0]
    assert main(common + ["--compile", "--resume"]) == 0
    comp = json.loads((tmp_path / "report.json").read_text())
    capsys.readouterr()
    assert comp["model"]["compiled"] is True and eager["model"]["compiled"] is False
    assert comp["data"]["clean_accuracy"] == eager["data"]["clean_accuracy"]
    n = eager["data"]["tiles"]
    for a, b in zip(eager["attacks"], comp["attacks"]):  # inductor's kernels round differently: at most a tile apart
        assert abs(a["budgets"][0]["success_rate"] - b["budgets"][0]["success_rate"]) <= 1 / n + 1e-9, (a["id"], a, b)
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        assert db.execute("SELECT count(*) FROM units").fetchone()[0] == 2 * first  # nothing reused across modes
