"""Query-only attacks (Square, HopSkipJump): exact per-tile query counts, budgets, label-only behaviour, and their
peers: Square no weaker than torchattacks' Square at the same budget, norm and p_init; HopSkipJump's median L2
within ART's HopSkipJump's at the same number of queries. On 32 px thumbnails of the sample tiles (full tiles
take minutes per attack on two cores); no timing here (benchmarks/ measure speed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medfool_ref.attacks.hopskipjump import hop_skip_jump
from medfool_ref.attacks.query import LabelOnly, Queries
from medfool_ref.attacks.square import square
from medfool_ref.inputs.samples import sample_tiles
from medfool_ref.inputs.tiles import read_tile
from medfool_ref.targets.reference import load_model


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = load_model(device="cpu").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tiles = sample_tiles()
    x = torch.stack([F.interpolate(read_tile(t.path)[None], size=(32, 32), mode="area")[0] for t in tiles])
    y = torch.tensor([t.index for t in tiles])
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    return model, x[ok][:16], y[ok][:16]


class Counter(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.images = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return self.model(x)


def test_square_counts_every_query_and_keeps_to_budget_and_ball(setup) -> None:
    model, x, y = setup
    counter = Counter(model)
    r = square(counter, x[:6], y[:6], eps=4 / 255, max_queries=60)
    q = r.extra["queries"]
    assert bool((q <= 60).all()) and bool((q >= 1).all())
    assert int(q.sum()) == counter.images  # every image sent, and no final scoring pass (success is scored lazily)
    assert float(r.linf.max()) <= 4 / 255 + 1e-6
    assert bool((q[~r.success] == 60).all())  # a tile left standing spent its whole budget
    r2 = square(model, x[:6], y[:6], norm="l2", eps=0.5, max_queries=40)
    assert float(r2.l2.max()) <= 0.5 + 1e-4 and bool((r2.extra["queries"] <= 40).all())


def test_square_refuses_a_label_only_model_and_bad_parameters(setup) -> None:
    model, x, y = setup
    with pytest.raises(ValueError, match="labels only"):
        square(LabelOnly(model), x[:2], y[:2])
    for bad in ({"eps": float("nan")}, {"max_queries": 1}, {"norm": "l1"}, {"p_init": 0}):
        with pytest.raises(ValueError):
            square(model, x[:2], y[:2], **bad)


def test_queries_refuse_to_exceed_a_budget(setup) -> None:
    model, x, _ = setup
    q = Queries(model, 2, 3, torch.device("cpu"))
    q.ask(x[:3], torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="budget"):
        q.ask(x[:2], torch.tensor([0, 0]))
    assert q.used.tolist() == [2, 1]


def test_square_is_no_weaker_than_torchattacks(setup) -> None:
    import torchattacks

    model, x, y = setup
    eps, budget = 2 / 255, 1000
    ours = square(model, x, y, norm="linf", eps=eps, max_queries=budget, p_init=0.8, seed=0)
    adv = torchattacks.Square(model, norm="Linf", eps=eps, n_queries=budget, n_restarts=1, p_init=0.8, seed=0)(x, y)
    with torch.no_grad():
        peer = float((model(adv).argmax(1) != y).float().mean())
    rate = float(ours.success.float().mean())
    med = ours.extra["queries"][ours.success].median().item() if bool(ours.success.any()) else None
    print(f"\nSquare L-inf {eps * 255:g}/255 at {budget} queries, {len(y)} tiles: medfool {rate:.0%} (median {med} queries), "
          f"torchattacks {peer:.0%}")
    assert 0 < peer < 1 or 0 < rate < 1, "choose a budget where the comparison can fail"
    assert rate >= peer


def test_hop_skip_jump_is_label_only_and_keeps_to_budget(setup) -> None:
    model, x, y = setup
    a = hop_skip_jump(model, x[:4], y[:4], max_queries=300, seed=1)
    b = hop_skip_jump(LabelOnly(model), x[:4], y[:4], max_queries=300, seed=1)
    assert torch.equal(a.adversarial, b.adversarial)  # the scores are never used
    assert bool((a.extra["queries"] <= 300).all()) and bool(a.success.all())
    c = hop_skip_jump(model, x[:4], y[:4], norm="linf", max_queries=300, seed=1)
    assert bool((c.extra["queries"] <= 300).all()) and bool(c.success.all())


def test_hop_skip_jump_l2_is_within_arts_range(setup) -> None:
    from art.attacks.evasion import HopSkipJump
    from art.estimators.classification import BlackBoxClassifier

    model, x, y = setup
    x, y = x[:8], y[:8]
    sent = [0]

    def predict(a: np.ndarray) -> np.ndarray:
        sent[0] += a.shape[0]
        with torch.no_grad():
            z = model(torch.from_numpy(a).float())
        return F.one_hot(z.argmax(1), z.shape[1]).numpy().astype(np.float32)

    classifier = BlackBoxClassifier(predict, tuple(x.shape[1:]), 9, clip_values=(0, 1))
    art_l2 = []
    for seed in (0, 1):
        np.random.seed(seed)
        sent[0] = 0
        adv = HopSkipJump(classifier, norm=2, max_iter=6, max_eval=1000, init_eval=100, init_size=100,
                          verbose=False).generate(x.numpy(), y=F.one_hot(y, 9).numpy())
        per_tile = sent[0] // len(y)
        art_l2.append(float((torch.from_numpy(adv) - x).flatten(1).norm(dim=1).median()))
    ours = hop_skip_jump(model, x, y, norm="l2", max_queries=per_tile, seed=0)
    l2 = float(ours.l2.median())
    print(f"\nHopSkipJump L2 at {per_tile} queries a tile, {len(y)} tiles: medfool median {l2:.3f}, ART {art_l2}")
    assert bool(ours.success.all())
    assert min(art_l2) * 0.8 <= l2 <= max(art_l2) * 1.2
