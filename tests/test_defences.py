"""The defences wing, the defended audit and the evaluation-validity checks (issue 26).

Oracles: a transformation defence known to fall is shown to fall (robust when judged plainly, within 5 points
of the undefended model when judged with BPDA); a gradient-masking model is flagged unreliable and beaten by the
gradient-free check; the defended system's clean predictions are the defence and the model called by hand;
bad defences are refused before anything runs.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from medfool_ref.attacks.gradient import pgd
from medfool_ref.cli import main
from medfool_ref.defences.jpeg import jpeg, jpeg_smooth
from medfool_ref.defences.randomised import resize_pad
from medfool_ref.defences.specs import SPECS, DefenceError, parse, parse_all
from medfool_ref.defences.squeeze import bit_depth, median_filter
from medfool_ref.defences.stain import macenko, macenko_stats, reinhard
from medfool_ref.defences.system import Defended
from medfool_ref.inputs.samples import sample_tiles
from medfool_ref.inputs.tiles import read_tile
from medfool_ref.targets.reference import load_model

FIXTURE = Path(__file__).parent / "fixtures" / "quantised" / "model.py"
CONFIG = Path(__file__).resolve().parents[1] / "medfool_ref" / "data" / "reference-model" / "config.yaml"


@pytest.fixture(scope="module")
def model():
    return load_model(device="cpu")


@pytest.fixture(scope="module")
def tiles():
    ts = [t for t in sample_tiles() if t.dataset == "crc-val-he-7k-sample"]  # 224 px, 4 a class
    return torch.stack([read_tile(t.path) for t in ts]), torch.tensor([t.index for t in ts])


# --------------------------------------------------------------------------- the transformations


def test_jpeg_in_torch_is_close_to_pillows_codec(tiles) -> None:
    x = tiles[0][:6]
    ref = []
    for img in x:
        buf = io.BytesIO()
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(buf, "JPEG", quality=75)
        ref.append(torch.from_numpy(np.array(Image.open(io.BytesIO(buf.getvalue())))).permute(2, 0, 1).float() / 255)
    ref = torch.stack(ref)
    ours = jpeg(x, quality=75)
    assert torch.equal(ours, (ours * 255).round() / 255)  # decoded onto the 8-bit grid
    assert (ours - ref).abs().mean() < 0.5 * (x - ref).abs().mean()  # much nearer Pillow's output than the input is
    assert (jpeg(x, quality=10) - x).abs().mean() > (jpeg(x, quality=95) - x).abs().mean()
    g = torch.autograd.grad(jpeg(x[:1].requires_grad_(True)).sum(), x[:1].requires_grad_(True), allow_unused=True)[0]
    assert g is None or not g.abs().sum()  # rounding: no gradient at all ...
    xa = x[:1].clone().requires_grad_(True)
    assert torch.autograd.grad(jpeg_smooth(xa).sum(), xa)[0].abs().sum() > 0  # ... the approximation has one


def test_squeezers_median_and_bit_depth(tiles) -> None:
    x = tiles[0][:2]
    for size in (2, 3, 5):
        lo, hi = (size - 1) // 2, size // 2
        ref = F.pad(x, (lo, hi, lo, hi), mode="reflect").unfold(2, size, 1).unfold(3, size, 1).reshape(*x.shape, -1).median(-1).values
        assert torch.equal(median_filter(x, size=size), ref)
    assert set((bit_depth(x, bits=2) * 3).round().unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    with pytest.raises(ValueError):
        bit_depth(x, bits=0)


def test_stain_normalisation_maps_tiles_onto_the_reference(tiles) -> None:
    x = tiles[0][::4][:6]
    he, max_c, ok = macenko_stats(x)
    assert ok.all() and torch.isfinite(he).all() and (he > 0).all()
    y = macenko(x)
    he2, max_c2, _ = macenko_stats(y)
    assert (he2 - torch.tensor([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])).abs().max() < 0.15  # now stained as the reference
    assert (max_c2 - torch.tensor([1.9705, 1.0308])).abs().max() < 0.3
    r = reinhard(x)
    from medfool_ref.defences.stain import REINHARD_REF, to_lab

    assert (to_lab(r).mean((2, 3)) - torch.tensor(REINHARD_REF[0])).abs().max() < 0.05
    blank = torch.ones(1, 3, 32, 32)  # no tissue: passed through unchanged
    assert torch.equal(macenko(blank), blank)


def test_resize_pad_draws_per_tile_and_per_seed(tiles) -> None:
    x = tiles[0][:1].repeat(3, 1, 1, 1)
    g = torch.Generator().manual_seed(1)
    y = resize_pad(x, generator=g)
    assert y.shape == x.shape and not torch.equal(y[0], y[1])  # one draw a tile, in one batch
    assert torch.equal(resize_pad(x, generator=torch.Generator().manual_seed(1)), y)


def test_the_defended_systems_clean_predictions_are_the_chain_and_the_model_by_hand(model, tiles) -> None:
    x = tiles[0][:8]
    chain = parse_all(["stain-norm", "jpeg:quality=75", "median:size=3"])
    d = Defended(model, chain, adaptive=True)
    with torch.no_grad():
        by_hand = model(median_filter(jpeg(macenko(x), quality=75), size=3))
        assert torch.allclose(d(x), by_hand, atol=1e-5)
    rnd = Defended(model, parse_all(["resize-pad:min_scale=0.7"]), adaptive=True, draws=4)
    with torch.no_grad():
        expected = model(resize_pad(x, min_scale=0.7, generator=rnd._generator(x)))
        assert torch.allclose(rnd(x), expected, atol=1e-5)
    xa = x[:2].clone().requires_grad_(True)
    out = rnd(xa)  # EOT: the draws in one batch, averaged log-probabilities
    assert out.shape == (2, 9) and torch.allclose(out.exp().sum(1), out.exp().sum(1))
    assert torch.autograd.grad(out.sum(), xa)[0].abs().sum() > 0


# --------------------------------------------------------------------------- the oracle: a defence known to fall


def test_bit_depth_looks_robust_judged_plainly_and_falls_to_bpda(model, tiles) -> None:
    """Athalye et al. (2018): bit-depth reduction gives zero gradients; BPDA restores the undefended model's figure."""
    x, y = tiles
    plain = Defended(model, parse_all(["bit-depth"]), adaptive=False)
    adaptive = Defended(model, parse_all(["bit-depth"]), adaptive=True)
    with torch.no_grad():
        ok = (model(x).argmax(1) == y) & (plain(x).argmax(1) == y)
    xs, ys = x[ok], y[ok]
    assert len(ys) >= 20  # 5 points is at least one tile
    robust = {name: 1 - pgd(m, xs, ys, eps=8 / 255, steps=5).success_rate
              for name, m in (("undefended", model), ("plain", plain), ("adaptive", adaptive))}
    assert robust["plain"] >= 0.8 and robust["undefended"] <= 0.3  # the over-claim a plain evaluation makes
    assert abs(robust["adaptive"] - robust["undefended"]) <= 0.05 + 1e-9, robust


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("text,message", [
    ("nosuch", "unknown defence"), ("jpeg:qualty=75", "unknown parameter 'qualty'"), ("jpeg:quality=nan", "not an integer"),
    ("resize-pad:min_scale=nan", "not a finite number"), ("jpeg:quality=0", "out of range"), ("bit-depth:bits=9", "out of range"),
    ("stain-norm:method=vahadane", "must be one of"), ("jpeg:quality", "expected key=value"),
])
def test_bad_defences_are_one_clear_line(text: str, message: str) -> None:
    with pytest.raises(DefenceError, match=message):
        parse(text)


def test_the_cli_refuses_bad_defences_before_anything_runs(tmp_path: Path, capsys) -> None:
    code = main(["audit", "--data", "sample", "--out", str(tmp_path / "o"), "--defence", "nosuch", "--defence", "jpeg:quality=inf"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown defence" in err and "quality='inf'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
    assert main(["audit", "--data", "sample", "--out", str(tmp_path / "o"), "--eot-draws", "0"]) == 2


def test_every_spec_is_complete() -> None:
    for name, s in SPECS.items():
        assert s.function_object() and s.kind in ("input-restoration", "detection")
        assert s.approximation is None or s.approximation_object()
        parse(name)  # the defaults are valid


# --------------------------------------------------------------------------- the validity checks


def test_a_gradient_masking_model_is_flagged_unreliable_and_fails_every_gate(tmp_path: Path, capsys) -> None:
    """The hard quantiser round(x * 3) / 3 in front of the reference model: the white-box attacks fool nothing."""
    code = main(["audit", "--data", "sample", "--out", str(tmp_path), "--model", f"{FIXTURE}:factory", "--config", str(CONFIG),
                 "--attacks", "pgd", "--budgets", "8", "--max-tiles", "18", "--set", "pgd.steps=5", "--validity-tiles", "12",
                 "--fail-under", "worst_case@8/255=0.05"])
    out, err = capsys.readouterr()
    assert code == 3, err
    doc = json.loads((tmp_path / "report.json").read_text())
    checks = {c["id"]: c for c in doc["validity"]}
    assert doc["unreliable"] and "UNRELIABLE" in err and "unreliable" in err
    assert checks["large-budget"]["passed"] is False
    assert checks["gradient-free"]["passed"] is False  # random search fooled a tile the white-box attack left standing
    assert sum(v for k, v in checks["gradient-free"]["detail"].items() if k != "eps") >= 1
    assert doc["gates"][0]["passed"] is False and doc["gates"][0]["unreliable"] is True
    assert "UNRELIABLE" in (tmp_path / "report.html").read_text()


# --------------------------------------------------------------------------- the defended audit


def test_a_defended_target_is_keyed_by_its_chain_and_rebuilt_on_a_worker(tiles) -> None:
    from medfool_ref.targets.defended import with_defences
    from medfool_ref.targets.rebuild import rebuild
    from medfool_ref.targets.target import reference_target

    base = reference_target()
    a = with_defences(base, ["jpeg"], adaptive=True)
    keys = {base.run_fingerprint, a.run_fingerprint, with_defences(base, ["jpeg:quality=75"], adaptive=False).run_fingerprint,
            with_defences(base, ["jpeg:quality=50"]).run_fingerprint}
    assert len(keys) == 4 and a.run_fingerprint == with_defences(base, ["jpeg:quality=75"]).run_fingerprint
    assert a.defence == ("jpeg:quality=75",) and not hasattr(base, "defence")  # the base target is untouched
    again = rebuild(a.spec)
    assert again.run_fingerprint == a.run_fingerprint and again.defence == a.defence
    with torch.no_grad():
        assert torch.equal(again.model(tiles[0][:4]), a.model(tiles[0][:4]))


def test_the_defended_audit_reports_adaptive_plain_and_undefended_and_resumes(tmp_path: Path, capsys) -> None:
    import jsonschema

    args = ["audit", "--data", "sample", "--out", str(tmp_path), "--attacks", "fgsm,pgd", "--budgets", "2,8", "--max-tiles", "9",
            "--set", "pgd.steps=5", "--validity-tiles", "4", "--defence", "bit-depth:bits=3"]
    assert main(args) == 0, capsys.readouterr().err
    first = json.loads((tmp_path / "report.json").read_text())
    out = capsys.readouterr().out
    assert "adaptive" in out and "non-adaptive" in out
    assert main(["audit", "--schema"]) == 0
    jsonschema.validate(first, json.loads(capsys.readouterr().out))
    d = first["defence"]
    assert d["chain"] == ["bit-depth:bits=3"] and d["tiles"] == 9
    assert abs(d["clean_cost"] - (d["clean_accuracy_undefended"] - d["clean_accuracy_defended"])) < 1e-12
    for b in d["budgets"]:
        assert b["adaptive_ci95"][0] <= b["adaptive"] <= b["adaptive_ci95"][1]
    high = d["budgets"][-1]
    assert high["non_adaptive"] > high["adaptive"]  # the plain evaluation over-claims
    parts = d["splits"]  # the reference model's sample tiles: held-out first, then its training tiles (the 9 here: training)
    assert [p["name"] for p in parts] == ["training"] and sum(p["tiles"] for p in parts) == d["tiles"]
    for b in d["budgets"]:  # the parts add up to the whole, system by system
        for key in ("undefended", "adaptive", "non_adaptive"):
            whole = sum(p["tiles"] * next(x[key] for x in p["budgets"] if x["eps"] == b["eps"]) for p in parts)
            assert abs(whole - b[key] * d["tiles"]) < 1e-9, (key, b["eps"])
    assert out.index("9 training tiles: clean accuracy") < out.index("defence bit-depth")
    assert {c["id"] for c in first["validity"]} >= {"large-budget", "more-steps", "gradient-free"}
    assert first["residual_risk"] and all(r["risk_residual"] >= 1 for r in first["residual_risk"])
    html = (tmp_path / "report.html").read_text()
    assert "defended, adaptive attack" in html and "Evaluation validity" in html and "Residual risk" in html
    assert html.index("<h3>training tiles (9)") < html.index(f"<h3>All {d['tiles']} tiles</h3>")
    assert main(args + ["--resume"]) == 0  # every unit reused: the same figures
    again = json.loads((tmp_path / "report.json").read_text())
    assert again["defence"] == first["defence"] and again["validity"] == first["validity"]


def test_a_catalog_defence_names_only_registered_implementations(tmp_path: Path, capsys) -> None:
    import shutil

    root = tmp_path / "project"
    shutil.copytree(Path(__file__).parent / "fixtures" / "mini", root)
    entry = next((root / "catalog" / "defence").glob("*.yaml"))
    entry.write_text(entry.read_text() + "implementation: os-system\n")
    assert main(["validate", str(root)]) == 1
    assert "'os-system' is not in the defences registry" in capsys.readouterr().out
    entry.write_text(entry.read_text().replace("implementation: os-system", "implementation: jpeg"))
    assert main(["validate", str(root)]) == 0
