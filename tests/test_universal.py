"""Universal patterns (uap, common-noise, utap) and the multi-objective query-only attack (moea-apga) on real tiles.

Patterns are computed on some sample tiles and scored only on others; success is read beside a random pattern of
the same L-inf norm and, for moea-apga, beside a random search at the same number of queries.
"""

from __future__ import annotations

import math

import pytest
import torch

from medfool_ref.attacks.moea import moea_apga, pareto_ranks, random_search
from medfool_ref.attacks.universal import common_noise, evaluate, fit, uap, utap
from medfool_ref.campaign.plan import PlanError, sample_items, showcase_split, universal_units
from medfool_ref.targets.target import reference_target

EPS = 8 / 255


@pytest.fixture(scope="session")
def tiles() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    from medfool_ref.campaign.showcase import correct_batches

    target = reference_target()
    x, y, _ = correct_batches(target)[0]  # the 150-px group: cheap
    return target.model, x, y


def test_uap_is_bounded_and_beats_a_random_pattern_on_held_out_tiles(tiles) -> None:
    model, x, y = tiles
    r = uap(model, x[0::2], y[0::2], steps=3)
    d = r.extra["perturbation"]
    assert d.shape == x.shape[1:] and float(d.abs().max()) <= EPS + 1e-6
    ev = evaluate(model, x[1::2], y[1::2], d, eps=EPS)
    assert float((ev["adversarial"] - x[1::2]).abs().max()) <= EPS + 1e-6
    assert r.backward_images == 3 * x[0::2].shape[0]
    # held-out fooling at least that of a random sign pattern of the same L-inf norm (measured: 5/12 vs 2/12 in 10 steps)
    assert int(ev["success"].sum()) >= int(ev["random_success"].sum())


def test_common_noise_has_one_pattern_per_class_and_utap_needs_no_labels(tiles) -> None:
    model, x, y = tiles
    r = common_noise(model, x[0::2], y[0::2], steps=1)
    assert r.extra["perturbation"].shape == (9, *x.shape[1:])
    assert r.extra["support_classes"] == sorted(set(y[0::2].tolist()))
    a = utap(model, x[0::2], None, steps=1)
    b = utap(model, x[0::2], (y[0::2] + 1) % 9, steps=1)
    assert torch.equal(a.extra["perturbation"], b.extra["perturbation"])  # labels never enter the pattern


def test_pattern_fits_other_tile_sizes_periodically() -> None:
    d = torch.arange(2 * 3 * 3, dtype=torch.float).view(2, 3, 3)
    out = fit(d, 7, 4)
    assert out.shape == (2, 7, 4) and torch.equal(out[:, 3:6, :3], d) and torch.equal(out[:, 6, 3], d[:, 0, 0])


def test_bad_parameters_and_overlapping_tiles_are_refused(tiles) -> None:
    model, x, y = tiles
    for kw in ({"eps": math.nan}, {"eps": 0.0}, {"steps": 0}):
        with pytest.raises(ValueError):
            uap(model, x[:2], y[:2], **kw)
    with pytest.raises(ValueError):
        moea_apga(model, x[:1], y[:1], population=0)
    items = sample_items()
    with pytest.raises(PlanError, match="both support and scored"):
        universal_units("uap", items[:3], items[2:5])
    support, scored = showcase_split([items[:10], items[10:30]], None, 18)
    assert support and not ({i.id for i in support} & {i.id for i in scored})


def test_pareto_ranks_by_hand() -> None:
    f = torch.tensor([[[0.0, 3.0], [1.0, 1.0], [3.0, 0.0], [2.0, 2.0], [3.0, 3.0]]])
    assert pareto_ranks(f).tolist() == [[0, 0, 0, 1, 2]]


def test_moea_counts_queries_exactly_and_reports_its_random_control(tiles) -> None:
    model, x, y = tiles
    r = moea_apga(model, x[:2], y[:2], population=6, generations=2)
    assert r.forward_images == 2 * 6 * 3 + 2  # candidates and the clean pass (success is scored lazily, by the caller)
    assert float((r.adversarial - x[:2]).abs().max()) <= 16 / 255 + 1e-6
    assert r.extra["pareto_front_size"].min() >= 1
    q = random_search(model, x[:2], y[:2], queries=18)
    assert q.forward_images == r.forward_images


def test_the_recorded_utap_transfer_is_todays_pattern() -> None:
    """benchmarks/results/utap-transfer-cpu.json (``python -m benchmarks.utap_transfer``): the pattern it applied to the
    ResNet-50 and ViT-S/16 layouts is the one today's UTAP computes on the reference model (sha256, on the recording's
    kernels; elsewhere the reference model's own fooling within 10 points), and every count is consistent."""
    import json
    import re
    from pathlib import Path

    from benchmarks import utap_transfer

    doc = json.loads((Path(__file__).resolve().parents[1] / "benchmarks/results/utap-transfer-cpu.json").read_text())
    assert set(doc["models"]) == {"tilenet", "resnet50", "vit_s16"} and doc["support_tiles"] + doc["scored_tiles"] == 41
    for name, r in doc["models"].items():
        for key in ("utap", "random_pattern"):
            c = r[key]
            assert c["of"] == r["correct"] <= r["tiles"] == doc["scored_tiles"] and 0 <= c["fooled"] <= c["of"], name
            assert c["wilson95"][0] <= c["rate"] <= c["wilson95"][1], name
    threads = torch.get_num_threads()
    torch.set_num_threads(doc["threads"])
    try:
        delta = utap_transfer.pattern(doc["seed"])
        _, x, y, _ = utap_transfer.split_224()
        own = utap_transfer.measure(reference_target().model, x, y, delta)
    finally:
        torch.set_num_threads(threads)
    assert float(delta.abs().max()) <= EPS + 1e-6
    capability = re.search(r"CPU capability (\w+)", doc["machine"])
    if capability and capability.group(1) == torch.backends.cpu.get_cpu_capability() and torch.__version__ in doc["machine"]:
        assert utap_transfer.sha256(delta) == doc["pattern_sha256"]
        assert own == {k: v for k, v in doc["models"]["tilenet"].items() if k != "fitted"}
    else:
        assert abs(own["utap"]["rate"] - doc["models"]["tilenet"]["utap"]["rate"]) <= 0.10
