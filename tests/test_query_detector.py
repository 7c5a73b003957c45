"""The stateful query-attack detector (defences.querydetect; Chen, Carlini & Wagner 2020): its threshold set on
clean tiles for a stated false-positive rate, measured on clean tiles it never saw, and Square and HopSkipJump
against the reference model flagged within a stated number of queries, the detector wrapped around the query
function in-process (no server). On 32 px thumbnails, as tests/test_query_attacks.py; each attacked tile is one
client's stream (a fresh detector state)."""

from __future__ import annotations

import statistics

import pytest
import torch
import torch.nn.functional as F

from medfool_ref.attacks.hopskipjump import hop_skip_jump
from medfool_ref.attacks.query import LabelOnly
from medfool_ref.attacks.square import square
from medfool_ref.cli.serve import clean_quadrants
from medfool_ref.defences.querydetect import Guarded, QueryDetector, QueryFlagged, calibrate
from medfool_ref.inputs.samples import sample_tiles
from medfool_ref.inputs.tiles import read_tile
from medfool_ref.reports.intervals import fmt, wilson
from medfool_ref.targets.reference import load_model

FPR = 0.05
K = 5
FLAGGED_WITHIN = {"square-linf": 10, "square-l2": 10, "hop-skip-jump-l2": 30, "hop-skip-jump-linf": 30}


@pytest.fixture(scope="module")
def setup():
    tiles = sample_tiles()
    calibration, held_out = clean_quadrants(tiles[0::2]), clean_quadrants(tiles[1::2])  # disjoint tiles
    threshold = calibrate(calibration, fpr=FPR, k=K)
    model = load_model(device="cpu").eval()
    x = torch.stack([F.interpolate(read_tile(t.path)[None], size=(32, 32), mode="area")[0] for t in tiles])
    y = torch.tensor([t.index for t in tiles])
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    return threshold, held_out, model, x[ok], y[ok], len(calibration)


def test_bad_parameters_and_too_few_clean_tiles_are_clear_errors(setup) -> None:
    _, held_out, *_ = setup
    with pytest.raises(ValueError, match="needs at least 20 clean tiles; got 12"):
        calibrate(held_out[:12], fpr=0.05)
    with pytest.raises(ValueError, match="needs at least 11 clean tiles"):
        calibrate(held_out[:8], fpr=0.5, k=10)
    for bad in ({"fpr": 0.0}, {"fpr": float("nan")}, {"k": 0}, {"size": 1}, {"levels": 300}):
        with pytest.raises(ValueError):
            calibrate(held_out, **bad)
    with pytest.raises(ValueError, match="capacity=5 must exceed k=5"):
        QueryDetector(0.1, k=5, capacity=5)
    with pytest.raises(ValueError, match="threshold"):
        QueryDetector(float("inf"))


def test_one_batch_is_scored_as_the_same_queries_one_by_one(setup) -> None:
    """Rows of a batch see the buffer and the earlier rows only, within the buffer's capacity, as if sent one by one;
    a query is flagged when its k nearest earlier queries are all close (k copies, not one)."""
    threshold, held_out, _, x, *_ = setup
    stream = torch.cat([held_out[:20], x[:1].repeat(6, 1, 1, 1), held_out[20:30], (x[:1] + 0.004).clamp(0, 1)])
    for capacity, last in ((16, True), (8, False)):  # 16: the six copies are still in the buffer; 8: rolled out
        batched, single = QueryDetector(threshold, k=K, capacity=capacity), QueryDetector(threshold, k=K, capacity=capacity)
        flags = batched.observe(stream)
        one = torch.cat([single.observe(stream[i:i + 1]) for i in range(stream.shape[0])])
        assert torch.equal(flags, one)
        assert (batched.seen, batched.flagged, batched.first_flag) == (single.seen, single.flagged, single.first_flag)
        assert not bool(flags[:K].any())  # fewer than k earlier queries: never flagged
        assert flags[20:26].tolist() == [False] * K + [True]  # the sixth copy is the first with k copies before it
        assert batched.first_flag == 26
        assert bool(flags[-1]) is last
    assert batched.buffer.shape[0] == 8


def _first_flag(run, model, detector) -> tuple[int | None, int]:
    """(the query count at the first flag, or None; the queries the attack used when it ended unflagged)."""
    try:
        r = run(Guarded(model, detector))
    except QueryFlagged as exc:
        return exc.queries, exc.queries
    return None, int(r.extra["queries"].sum())


def test_square_and_hop_skip_jump_are_flagged_and_clean_tiles_rarely_are(setup) -> None:
    threshold, held_out, model, x, y, n_cal = setup
    attacks = {
        "square-linf": lambda m, a, b: square(m, a, b, eps=4 / 255, max_queries=1000, seed=0),
        "square-l2": lambda m, a, b: square(m, a, b, norm="l2", eps=0.5, max_queries=1000, seed=0),
        "hop-skip-jump-l2": lambda m, a, b: hop_skip_jump(LabelOnly(m), a, b, max_queries=1000, seed=0),
        "hop-skip-jump-linf": lambda m, a, b: hop_skip_jump(LabelOnly(m), a, b, norm="linf", max_queries=1000, seed=0),
    }
    lines = [f"\nthreshold {threshold:.4f} (k={K}, set for fpr {FPR} on {n_cal} clean quadrants of other tiles)"]
    for name, attack in attacks.items():
        # each tile is its own attacker's stream: one attack run per tile, each run batched as the attack does it
        flagged, unseen = [], []
        for i in range(len(y)):
            at, used = _first_flag(lambda m: attack(m, x[i:i + 1], y[i:i + 1]), model, QueryDetector(threshold, k=K))
            (flagged if at is not None else unseen).append(at if at is not None else used)
        lines.append(f"{name}: flagged on {len(flagged)}/{len(y)} tiles, median {statistics.median(flagged)} and max "
                     f"{max(flagged)} queries; {len(unseen)} tiles fooled before the detector could score a query "
                     f"(queries used: {sorted(unseen)})")
        assert flagged and max(flagged) <= FLAGGED_WITHIN[name], lines[-1]
        assert all(u <= K for u in unseen), lines[-1]  # unflagged only where it ended within k queries
    # benign traffic: clean quadrants of tiles the threshold never saw, in a shuffled stream to one detector
    detector = QueryDetector(threshold, k=K)
    perm = torch.randperm(held_out.shape[0], generator=torch.Generator().manual_seed(0))
    flags = detector.observe(held_out[perm])
    n, k = held_out.shape[0] - K, int(flags.sum())  # the first k queries cannot be scored
    lo, _ = wilson(k, n)
    lines.append(f"benign false positives: {fmt(k, n)}")
    print("\n".join(lines))
    assert lo <= FPR, lines[-1]
