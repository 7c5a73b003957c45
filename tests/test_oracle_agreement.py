"""Oracle agreement with the established libraries: catches a silently weakened reference attack.

On a fixed small batch of initially-correct sample tiles and the reference model, at equal budgets:
our PGD succeeds at least as often as torchattacks' PGD (minus 2 points), our DeepFool's median L2
is within 10% of Foolbox's L2 DeepFool, and our one-pixel attack succeeds at least as often as
torchattacks' OnePixel. No timing here: speed is measured in benchmarks/.
"""

from __future__ import annotations

import foolbox as fb
import pytest
import torch
import torch.nn.functional as F
import torchattacks

from medfool_ref.attacks.deepfool import deepfool
from medfool_ref.attacks.gradient import pgd
from medfool_ref.attacks.onepixel import one_pixel
from medfool_ref.campaign.showcase import correct_batches
from medfool_ref.inputs.samples import sample_tiles
from medfool_ref.inputs.tiles import read_tile
from medfool_ref.targets.reference import load_model
from medfool_ref.targets.target import module_target


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = load_model(device="cpu").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x, y, _ = min(correct_batches(module_target(model, model.classes)), key=lambda b: b[0].shape[-1])  # the 150 px tiles
    return model, x[:12], y[:12]


@torch.no_grad()
def fooled(model, x, y, adv) -> torch.Tensor:
    return model(adv).argmax(1) != y


@pytest.mark.parametrize("eps", [2 / 255, 4 / 255])
def test_pgd_is_at_least_as_strong_as_torchattacks(setup, eps: float) -> None:
    model, x, y = setup
    steps, step = 10, 2.5 * eps / 10
    ours = pgd(model, x, y, eps=eps, steps=steps, step_size=step, early_stop=False)
    rate_ours = float(fooled(model, x, y, ours.adversarial).float().mean())
    rates = []
    for seed in range(3):  # torchattacks' random start is drawn from the global generator
        torch.manual_seed(seed)
        adv = torchattacks.PGD(model, eps=eps, alpha=step, steps=steps, random_start=True)(x, y)
        rates.append(float(fooled(model, x, y, adv).float().mean()))
    rate_peer = max(rates)
    print(f"\nPGD eps={eps * 255:.0f}/255: medfool {rate_ours:.0%}, torchattacks {rates}")
    assert 0 < rate_peer < 1 or 0 < rate_ours < 1, "choose a budget where the comparison can fail"
    assert rate_ours >= rate_peer - 0.02
    assert float(ours.linf.max()) <= eps + 1e-6


def test_deepfool_norms_match_foolbox(setup) -> None:
    model, x, y = setup
    ours = deepfool(model, x, y, overshoot=0.02, max_iter=50)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device="cpu")  # Foolbox would move the shared model to a GPU
    _, adv, _ = fb.attacks.L2DeepFoolAttack(steps=50, overshoot=0.02, candidates=None)(fmodel, x, y, epsilons=None)
    ok_ours = fooled(model, x, y, ours.adversarial)
    ok_peer = fooled(model, x, y, adv)
    both = ok_ours & ok_peer
    assert int(both.sum()) >= 10
    l2_ours = (ours.adversarial - x).flatten(1).norm(dim=1)[both].median()
    l2_peer = (adv - x).flatten(1).norm(dim=1)[both].median()
    print(f"\nDeepFool median L2: medfool {float(l2_ours):.4f}, foolbox {float(l2_peer):.4f} ({int(both.sum())} tiles)")
    assert float(ok_ours.float().mean()) >= float(ok_peer.float().mean())
    assert 0.9 <= float(l2_ours / l2_peer) <= 1.1


@pytest.fixture(scope="module")
def thumbnails(setup):
    """32 px area-downsampled thumbnails of the real tiles: the full tiles resist one pixel entirely (0% for
    both libraries at 100 x 10), so the comparison could not fail there."""
    model = setup[0]
    tiles = sample_tiles()
    x = torch.stack([F.interpolate(read_tile(t.path)[None], size=(32, 32), mode="area")[0] for t in tiles])
    y = torch.tensor([t.index for t in tiles])
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    return x[ok][:12], y[ok][:12]


def test_one_pixel_is_at_least_as_strong_as_torchattacks(setup, thumbnails) -> None:
    model = setup[0]
    x, y = thumbnails
    pixels, population, generations = 1, 100, 10
    ours = one_pixel(model, x, y, pixels=pixels, population=population, generations=generations, seed=0)
    rate_ours = float(fooled(model, x, y, ours.adversarial).float().mean())
    torch.manual_seed(0)
    adv = torchattacks.OnePixel(model, pixels=pixels, steps=generations, popsize=population, inf_batch=population)(x, y)
    rate_peer = float(fooled(model, x, y, adv).float().mean())
    print(f"\none-pixel on 32 px thumbnails, population {population} x {generations} generations: "
          f"medfool {rate_ours:.0%}, torchattacks {rate_peer:.0%}")
    assert rate_ours > 0 or rate_peer > 0, "choose a budget where the comparison can fail"
    assert rate_ours >= rate_peer
    assert bool((ours.l0[ours.success] <= pixels).all())


def test_the_audits_worst_case_is_no_weaker_than_autoattack(tmp_path) -> None:
    """At each audited budget, our worst-case robust accuracy is at most AutoAttack's (standard) + 2 points, on the
    same model and the same tiles: 32 sample tiles as 32 px 8-bit thumbnails (AutoAttack's Square and FAB-T take
    minutes on full tiles on two cores), at the budgets where the model is not already at 0."""
    from medfool_ref.campaign.audit import run_audit
    from medfool_ref.campaign.store import ResultsStore
    from medfool_ref.inputs.datasets import Dataset
    from medfool_ref.inputs.items import file_item
    from medfool_ref.inputs.tiles import save_png
    from medfool_ref.reports.audit import build_report
    from medfool_ref.targets.target import reference_target

    target = reference_target(device="cpu")
    items = []
    for i, t in enumerate(sample_tiles()[::2][:32]):
        x = F.interpolate(read_tile(t.path)[None], size=(32, 32), mode="bilinear", antialias=True, align_corners=False)[0]
        path = tmp_path / f"{i:02d}.png"
        save_png(x, path)
        items.append(file_item(path, label=t.index))
    x = torch.stack([read_tile(i.path) for i in items])
    y = torch.tensor([i.label for i in items])
    budgets = (1 / 255, 2 / 255)
    store = ResultsStore(tmp_path / "store")
    plan = run_audit(items, target, store, probes=["fgsm", "pgd", "apgd-ce", "apgd-t", "deepfool"], linf=budgets, progress=False)
    report = build_report(store, plan, target, Dataset(items, source=str(tmp_path)), device="cpu")
    ours = {round(w.eps * 255): w.robust_accuracy for w in report.worst_case}
    for eps in budgets:
        aa = torchattacks.AutoAttack(target.model, norm="Linf", eps=eps, version="standard", n_classes=9, seed=0)
        with torch.no_grad():
            theirs = float((target.model(aa(x, y)).argmax(1) == y).float().mean())
        assert ours[round(eps * 255)] <= theirs + 0.02, (eps * 255, ours, theirs)
