"""STRIP at inference (Gao et al., ACSAC 2019) on the BadNets-backdoored model of the sanitiser tests (issue 22).

The defender's clean data: the un-stamped crops of the training tiles. Nine of them (one per class, seeded) are the
overlays; 200 others set the threshold for a 5% false-positive rate; 200 further ones check that rate on crops
exchangeable with the calibration set. Measured on crops of the 15 held-out tiles (4 x 4 per tile): the
false-positive rate on the clean crops and the detection rate on the triggered crops of the other classes.
The blend (0.3, the default) was chosen on triggered training-tile crops, not on these held-out tiles.
"""

from __future__ import annotations

import pytest
import torch

from medfool_ref.attacks.backdoor import apply_trigger
from medfool_ref.campaign.plan import sample_split
from medfool_ref.defences.strip import StripDetector, calibrate, strip_entropy
from medfool_ref.inputs.samples import CLASSES
from medfool_ref.reports.intervals import fmt, wilson
from medfool_ref.targets.tilenet import TileClassifier, TileNet
from medfool_ref.training.loop import crop_bank

pytestmark = pytest.mark.usefixtures("one_thread")  # figures computed on one CPU thread

FPR = 0.05


@pytest.fixture(scope="module")
def strip_run(poisoned) -> dict:
    model, labels, target = poisoned["model"], poisoned["labels"], poisoned["target"]
    images = poisoned["bank"].images.float().div(255)
    gen = torch.Generator().manual_seed(1)
    clean = (~poisoned["poison"]).nonzero().squeeze(1)
    clean = clean[torch.randperm(clean.numel(), generator=gen)]
    first = torch.stack([clean[labels[clean] == c][0] for c in range(len(CLASSES))])  # one overlay per class
    rest = clean[~torch.isin(clean, first)]
    det = StripDetector.calibrated(model, images[rest[:200]], overlays=images[first], fpr=FPR)
    _, held = sample_split()
    hb = crop_bank(held, crop=48, per_side=4)
    x = hb.images.float().div(255)
    other = hb.labels != target
    flagged_clean = det.flags(x)
    flagged_trig = det.flags(apply_trigger(x[other], poisoned["colour"], poisoned["alpha"]))
    flagged_exch = det.flags(images[rest[200:400]])
    run = {"fp": int(flagged_clean.sum()), "n_clean": x.shape[0], "tp": int(flagged_trig.sum()), "n_trig": int(other.sum()),
           "fp_exch": int(flagged_exch.sum()), "n_exch": 200,
           "fp_tiles": int(hb.tile_of[flagged_clean].unique().numel()), "tiles": len(held)}
    print(f"\nSTRIP (9 overlays, blend {det.blend}, fpr {FPR}): detection {fmt(run['tp'], run['n_trig'])}; "
          f"held-out false positives {fmt(run['fp'], run['n_clean'])} on {run['fp_tiles']} of {run['tiles']} tiles; "
          f"exchangeable false positives {fmt(run['fp_exch'], run['n_exch'])}")
    return run


def test_strip_detects_triggered_inputs_above_its_false_positive_rate(strip_run) -> None:
    det_lo, _ = wilson(strip_run["tp"], strip_run["n_trig"])
    _, fp_hi = wilson(strip_run["fp"], strip_run["n_clean"])
    assert det_lo > fp_hi, (strip_run, det_lo, fp_hi)


def test_strip_false_positive_rate_stays_near_the_stated_rate(strip_run) -> None:
    """On crops exchangeable with the calibration crops the stated 5% lies inside the measured interval; on unseen
    tiles (a shift: the clean crops come from tiles the model was trained on) the rate stays below three times it."""
    lo, hi = wilson(strip_run["fp_exch"], strip_run["n_exch"])
    assert lo <= FPR <= hi, (strip_run, lo, hi)
    assert strip_run["fp"] / strip_run["n_clean"] < 3 * FPR, strip_run


def test_strip_entropy_is_the_same_whatever_the_chunk() -> None:
    """The flattened (input x overlay) batch is cut into chunks for memory; the answer must not depend on the cut."""
    torch.manual_seed(0)
    model = TileClassifier(TileNet(len(CLASSES), 8), [0.5] * 3, [0.25] * 3).eval()
    x, overlays = torch.rand(7, 3, 24, 24), torch.rand(3, 3, 24, 24)
    whole = strip_entropy(model, x, overlays=overlays, chunk=1000)
    assert torch.allclose(whole, strip_entropy(model, x, overlays=overlays, chunk=4), atol=1e-6)
    assert torch.allclose(whole[2:3], strip_entropy(model, x[2:3], overlays=overlays), atol=1e-6)
    assert bool((whole > 0).all()) and bool((whole <= torch.log(torch.tensor(9.0)) + 1e-5).all())


def test_strip_refuses_bad_parameters_with_clear_errors() -> None:
    model = TileClassifier(TileNet(len(CLASSES), 8), [0.5] * 3, [0.25] * 3).eval()
    x, overlays = torch.rand(10, 3, 24, 24), torch.rand(3, 3, 24, 24)
    with pytest.raises(ValueError, match="needs at least 20 clean inputs; got 10"):
        calibrate(model, x, overlays=overlays, fpr=0.05)
    with pytest.raises(ValueError, match="fpr=nan"):
        calibrate(model, x, overlays=overlays, fpr=float("nan"))
    with pytest.raises(ValueError, match="blend=1"):
        strip_entropy(model, x, overlays=overlays, blend=1)
    with pytest.raises(ValueError, match="overlays must be at least one image"):
        strip_entropy(model, x, overlays=torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="threshold"):
        StripDetector(model, overlays=overlays, threshold=float("inf"))
