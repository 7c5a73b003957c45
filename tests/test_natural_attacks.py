"""Natural-looking attacks (stain, white balance, artefacts) and gradient shielding: oracles, bounds, bad input, and
success on the held-out sample tiles beside each attack's random baseline at the same query count (recorded, not forced)."""

from __future__ import annotations

import math

import pytest
import torch
from devices import DEVICE
from torch import nn

from medfool_ref.attacks._core import CountingModel
from medfool_ref.attacks._search import local_search, margin, random_search
from medfool_ref.attacks.artefacts import DIMS, KINDS, RENDER, physical_artefacts
from medfool_ref.attacks.shielding import gradient_shielding
from medfool_ref.attacks.stain import _from_unit, angles_deg, restain, stain_perturbation, stain_vectors
from medfool_ref.attacks.whitebalance import gains, planckian_rgb, rebalance, white_balance
from medfool_ref.cli import main
from medfool_ref.inputs.samples import sample_tiles, split
from medfool_ref.inputs.tiles import read_tile
from medfool_ref.targets.reference import load_model
from medfool_ref.training.reference import wilson_interval


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


# --------------------------------------------------------------------------- oracles and bounds


def test_zero_stain_change_gives_the_tile_back_and_any_draw_stays_a_valid_stain() -> None:
    x = torch.rand(3, 3, 16, 16) * 0.9 + 0.05
    zero = torch.zeros(3, 2, 2)
    assert torch.allclose(restain(x, zero, torch.ones(3, 2), torch.zeros(3, 2)), x, atol=1e-5)
    for a, s, b in ((math.radians(8), 0.2, 0.05), (math.radians(30), 0.9, 0.5)):
        tau, scale, shift = _from_unit(torch.rand(500, 8, generator=torch.Generator().manual_seed(1)), a, s, b)
        m = stain_vectors(tau)
        assert bool((m >= 0).all()) and torch.allclose(m.norm(dim=2), torch.ones(500, 3), atol=1e-5)
        assert float(angles_deg(tau).max()) <= math.degrees(a) + 1e-3
        assert bool(((scale >= 1 - s) & (scale <= 1 + s)).all()) and bool((shift.abs() <= b).all())


def test_white_balance_gains_follow_the_planckian_locus() -> None:
    k = torch.tensor([3000.0, 5000.0, 6500.0, 9000.0])
    rgb = planckian_rgb(k)
    assert bool((rgb[:-1, 0] > rgb[1:, 0]).all()) and bool((rgb[:-1, 2] < rgb[1:, 2]).all())  # warmer light: redder
    g = gains(k, torch.ones(4), 6500.0)
    assert torch.allclose(g[2], torch.ones(3), atol=1e-5)  # the reference temperature is the identity
    assert float(g[0, 2]) > 1 > float(g[0, 0])  # balanced for 3000 K: bluer
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(rebalance(x, torch.tensor([6500.0, 6500.0]), torch.ones(2)), x, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_each_artefact_is_local_in_range_and_moves_with_its_parameters(kind: str) -> None:
    x = torch.rand(2, 3, 64, 64) * 0.8 + 0.1
    p = torch.full((2, DIMS[kind]), 0.5)
    p[1, :2] = torch.tensor([0.2, 0.8])  # another place (ink, bubble, blur) or offset and angle (fold)
    out = RENDER[kind](x, p)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    changed = ((out - x).abs().amax(1) > 1 / 255).float().mean(dim=(1, 2))
    assert bool((changed > 0.005).all()) and bool((changed < 0.9).all()), changed  # a local artefact, not the whole tile
    moved = (out - x).abs().amax(1) > 1 / 255
    assert not torch.equal(moved[0], moved[1])


def test_margin_and_searches_spend_exactly_their_queries() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    assert margin(logits, torch.tensor([0, 0]), None).tolist() == [1.0, -3.0]
    assert margin(logits, torch.tensor([0, 0]), torch.tensor([1, 1])).tolist() == [1.0, -2.0]
    model, x = _Toy().eval(), torch.rand(3, 3, 16, 16)
    y = model(x).argmax(1)
    for search in (random_search, local_search):
        c = CountingModel(model)
        search(c, x, y, None, RENDER["ink"], DIMS["ink"], 13, torch.Generator().manual_seed(0))
        assert c.forward_images == 3 * 13


def test_gradient_shielding_changes_at_most_its_mask() -> None:
    model, x = _Toy().eval(), torch.rand(4, 3, 20, 20)
    r = gradient_shielding(model, x, eps=8 / 255, area=0.05, steps=3)
    assert bool((r.l0 <= round(0.05 * 400)).all()) and bool((r.linf <= 8 / 255 + 1e-6).all())
    assert r.extra["pgd_l0"].shape == (4,) and r.extra["random_baseline_success"].shape == (4,)


@pytest.mark.parametrize("func,kwargs,message", [
    (stain_perturbation, {"max_angle_deg": float("nan")}, "finite"),
    (stain_perturbation, {"max_angle_deg": 45.0}, "max_angle_deg must be <= 30"),
    (stain_perturbation, {"max_scale": -0.1}, "max_scale must be >= 0"),
    (stain_perturbation, {"max_angle_deg": 0.0, "max_scale": 0.0, "max_shift": 0.0}, "no stain range"),
    (white_balance, {"min_kelvin": 7000.0, "max_kelvin": 5000.0}, "min_kelvin must be below max_kelvin"),
    (white_balance, {"max_kelvin": 40000.0}, "Planckian locus"),
    (white_balance, {"queries": 0}, "queries must be between 1"),
    (physical_artefacts, {"queries": 0}, "queries must be between 1"),
    (physical_artefacts, {"kind": "coffee"}, "kind must be one of ink, bubble, fold, blur"),
    (gradient_shielding, {"area": 1.5}, "area must be <= 1.0"),
])
def test_bad_parameters_are_refused(func, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        func(_Toy().eval(), torch.rand(1, 3, 16, 16), **kwargs)


@pytest.mark.parametrize("argv,message", [
    (["attack", "adversarial-stain-perturbation", "--set", "max_angle_deg=90"], "max_angle_deg must be <= 30"),
    (["attack", "white-balance-shift", "--set", "queries=0"], "queries must be between 1"),
    (["attack", "physical-artefacts", "--set", "kind=coffee"], "kind must be one of"),
    (["attack", "mil-slide-perturbation"], "use 'medfool slide attack SLIDE"),
])
def test_the_command_line_refuses_them_in_one_line(tmp_path, capsys, argv: list[str], message: str) -> None:
    code = main([*argv, "--tile", "sample:TUM", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


# --------------------------------------------------------------------------- held-out tiles, reference model


@pytest.fixture(scope="module")
def held_out():
    """The held-out sample tiles (never trained on) the reference model gets right, as one batch per tile size."""
    model = load_model(device=DEVICE)
    _, held = split(sample_tiles())
    groups: dict[tuple[int, ...], list] = {}
    for t in held:
        groups.setdefault(tuple(read_tile(t.path).shape), []).append(t)
    out = []
    for tiles in groups.values():
        x = torch.stack([read_tile(t.path) for t in tiles]).to(DEVICE)
        y = torch.tensor([t.index for t in tiles], device=DEVICE)
        with torch.no_grad():
            ok = model(x).argmax(1) == y
        if bool(ok.any()):
            out.append((x[ok], y[ok]))
    return model, out


def _record(name: str, held_out, func, **kwargs) -> tuple[int, int, int, list]:
    model, batches = held_out
    ok = base = n = 0
    results = []
    for x, y in batches:
        r = func(model, x, y, **kwargs)
        assert torch.equal(r.success, r.pred_after != y)  # success is what the model says of the returned tile
        ok += int(r.success.sum())
        base += int(r.extra["random_baseline_success"].sum())
        n += x.shape[0]
        results.append(r)
    lo, hi = wilson_interval(ok, n)
    blo, bhi = wilson_interval(base, n)
    verdict = "beats" if ok > base else "ties with" if ok == base else "does NOT beat"
    print(f"\n{name}: {ok}/{n} held-out tiles fooled ({lo:.0%}-{hi:.0%}); random baseline {base}/{n} ({blo:.0%}-{bhi:.0%}): {verdict} it")
    assert n >= 8
    return ok, base, n, results


def test_stain_perturbation_on_held_out_tiles(held_out) -> None:
    ok, base, n, results = _record("adversarial-stain-perturbation", held_out, stain_perturbation, steps=5)
    for r in results:  # every result is a valid stain inside the stated bounds
        assert float(r.extra["angle_h_deg"].max()) <= 8.0 + 1e-3 and float(r.extra["angle_e_deg"].max()) <= 8.0 + 1e-3
        for k in ("scale_h", "scale_e"):
            assert float((r.extra[k] - 1).abs().max()) <= 0.2 + 1e-6
        for k in ("shift_h", "shift_e"):
            assert float(r.extra[k].abs().max()) <= 0.05 + 1e-6
        assert r.extra["baseline_forward_images"] == r.backward_images  # one random stain per gradient step
    assert ok >= base  # the gradient search is at least as good as as many random stains (measured: 10/10 vs 4/10)


def test_white_balance_on_held_out_tiles(held_out) -> None:
    _, _, _, results = _record("white-balance-shift", held_out, white_balance, queries=8)
    for r in results:
        assert bool(((r.extra["kelvin"] >= 4500 - 1e-3) & (r.extra["kelvin"] <= 8000 + 1e-3)).all())
        assert bool(((r.extra["tint"] - 1).abs() <= 0.03 + 1e-6).all())
        assert r.extra["baseline_forward_images"] == r.forward_images - r.adversarial.shape[0]  # the same queries


def test_artefacts_on_held_out_tiles(held_out) -> None:
    _, _, _, results = _record("physical-artefacts (ink)", held_out, physical_artefacts, kind="ink", queries=8)
    for r in results:
        assert r.extra["baseline_forward_images"] == r.forward_images - r.adversarial.shape[0]


def test_gradient_shielding_on_held_out_tiles(held_out) -> None:
    _, _, n, results = _record("gradient-shielding (10% of pixels, 8/255)", held_out, gradient_shielding, steps=4)
    pgd_ok = sum(int(r.extra["pgd_success"].sum()) for r in results)
    l0 = torch.cat([r.l0.float() for r in results])
    pgd_l0 = torch.cat([r.extra["pgd_l0"] for r in results])
    print(f"plain PGD at the same budget: {pgd_ok}/{n}; median L0 {float(l0.median()):.0f} vs PGD {float(pgd_l0.median()):.0f} pixels")
    assert bool((l0 <= torch.cat([torch.full_like(r.l0.float(), r.extra["mask_pixels"]) for r in results])).all())
    assert float(l0.median()) < float(pgd_l0.median())
