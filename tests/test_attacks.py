"""Reference attacks: analytic oracles, properties that must always hold, validation, real tiles."""

from __future__ import annotations


import pytest
import torch
from devices import DEVICE
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from medfool_ref.attacks import deepfool, fgsm, pgd
from medfool_ref.campaign.showcase import correct_batches
from medfool_ref.inputs.samples import CLASSES
from medfool_ref.targets.reference import load_model
from medfool_ref.targets.target import module_target


class Affine(nn.Module):
    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)
        self.b = nn.Parameter(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T + self.b


def _analytic_distance(model: Affine, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = model(x)
        y = logits.argmax(1)
        f = logits - logits.gather(1, y[:, None])
        w = model.w[None] - model.w[y][:, None]
        d = f.abs() / w.norm(dim=2)
        d[torch.arange(len(y)), y] = float("inf")
        return d.min(dim=1).values


@pytest.mark.parametrize("classes", [2, 6])
def test_deepfool_lands_on_the_boundary_of_an_affine_model(classes: int) -> None:
    gen = torch.Generator().manual_seed(classes)
    model = Affine(torch.randn(classes, 3 * 8 * 8, generator=gen) * 0.1, torch.randn(classes, generator=gen) * 0.05)
    x = torch.rand(6, 3, 8, 8, generator=gen) * 0.2 + 0.4
    overshoot = 0.02
    r = deepfool(model, x, overshoot=overshoot, round_to_8bit=False)  # the float solution is what the analytic oracle gives
    exact = _analytic_distance(model, x)
    assert bool(r.success.all())
    assert r.iterations == 1  # a linear model is solved in one step
    ratio = r.l2 / exact
    assert bool((ratio >= 1.0).all()) and bool((ratio <= 1 + overshoot + 1e-3).all()), ratio
    if classes == 2:
        assert r.backward_images == x.shape[0]  # the binary case needs one gradient per image
    else:
        assert r.backward_calls == 1 and r.backward_images == x.shape[0] * classes  # all classes in one batched backward


def test_deepfool_rounded_onto_the_8bit_grid_still_fools_at_a_small_extra_cost() -> None:
    """On 8-bit inputs, the default result lies on the 8-bit grid, fools the model, and costs little more than the float one."""
    gen = torch.Generator().manual_seed(3)
    model = Affine(torch.randn(6, 3 * 8 * 8, generator=gen) * 0.1, torch.randn(6, generator=gen) * 0.05)
    x = ((torch.rand(16, 3, 8, 8, generator=gen) * 0.2 + 0.4) * 255).round() / 255
    r = deepfool(model, x)
    assert torch.equal((r.adversarial * 255).round() / 255, r.adversarial)  # on the grid: a PNG holds exactly this
    assert bool(r.success.all())
    assert bool((r.extra["grid_scale"] >= 1).all())  # rounding can move a pixel either way: the norm need not grow
    assert float(r.l2.median()) <= 3 * float(r.extra["l2_unrounded"].median())


def test_fgsm_on_a_linear_model_is_minus_eps_sign_w() -> None:
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(3 * 4 * 4, generator=gen)
    model = Affine(torch.stack([torch.zeros_like(w), w]), torch.zeros(2))
    x = torch.full((5, 3, 4, 4), 0.5)
    labels = torch.ones(5, dtype=torch.long)
    eps = 4 / 255
    r = fgsm(model, x, labels, eps=eps)
    expected = x - eps * w.sign().view(1, 3, 4, 4)
    assert torch.allclose(r.adversarial, expected, atol=1e-7)


def _small_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4)).eval()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.5 / 255, 32 / 255), norm=st.sampled_from(["linf", "l2"]),
       attack=st.sampled_from(["fgsm", "pgd"]), targeted=st.booleans(), batch=st.integers(1, 4))
def test_budget_range_and_no_mutation(seed: int, eps: float, norm: str, attack: str, targeted: bool, batch: int) -> None:
    model = _small_cnn(seed % 7)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, 12, 12, generator=gen)
    keep = x.clone()
    kwargs = {"eps": eps if norm == "linf" else eps * 10, "norm": norm}
    if targeted:
        kwargs["target"] = 2
    if attack == "pgd":
        kwargs["steps"] = 3
        r = pgd(model, x, **kwargs, seed=seed)
        again = pgd(model, x, **kwargs, seed=seed)
        assert torch.equal(r.adversarial, again.adversarial)  # reproducible with a seed
    else:
        r = fgsm(model, x, **kwargs)
    assert torch.equal(x, keep)
    assert r.adversarial.shape == x.shape
    assert float(r.adversarial.min()) >= 0 and float(r.adversarial.max()) <= 1
    budget = kwargs["eps"]
    measured = r.linf if norm == "linf" else r.l2
    assert bool((measured <= budget + 1e-5).all()), (measured, budget)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 4))
def test_deepfool_range_and_no_mutation(seed: int, batch: int) -> None:
    model = _small_cnn(seed % 5)
    x = torch.rand(batch, 3, 10, 10, generator=torch.Generator().manual_seed(seed))
    keep = x.clone()
    r = deepfool(model, x, max_iter=20)
    assert torch.equal(x, keep)
    assert float(r.adversarial.min()) >= 0 and float(r.adversarial.max()) <= 1


def test_early_stop_saves_model_calls() -> None:
    model = _small_cnn(3)
    x = torch.rand(8, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    fast = pgd(model, x, eps=0.3, steps=20)
    slow = pgd(model, x, eps=0.3, steps=20, early_stop=False)
    assert fast.success_rate >= slow.success_rate - 1e-9
    assert fast.forward_images < slow.forward_images


BAD = [
    (fgsm, {"eps": -0.1}, "eps must be > 0"),
    (fgsm, {"eps": 2.0}, "eps must be <= 1.0"),
    (fgsm, {"norm": "l1"}, "norm must be one of linf, l2"),
    (pgd, {"steps": 0}, "steps must be between 1"),
    (pgd, {"steps": 2.5}, "steps must be an integer"),
    (pgd, {"step_size": 0.0}, "step_size must be > 0"),
    (pgd, {"target": 9}, "target must be a class index in [0, 4)"),
    (deepfool, {"overshoot": -1.0}, "overshoot must be >= 0"),
    (deepfool, {"candidates": 1}, "candidates must be between 2 and 4"),
    (deepfool, {"max_iter": 0}, "max_iter must be between 1"),
]


@pytest.mark.parametrize("attack,kwargs,message", BAD, ids=[f"{a.__name__}-{m}" for a, _, m in BAD])
def test_invalid_parameters(attack, kwargs: dict, message: str) -> None:
    model = _small_cnn(0)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        attack(model, torch.rand(2, 3, 8, 8), **kwargs)


@pytest.mark.parametrize("images,message", [
    (torch.rand(3, 8, 8), r"images must be \(B, C, H, W\)"),
    (torch.rand(1, 3, 8, 8) * 2, r"images must lie in \[0, 1\]"),
    ((torch.rand(1, 3, 8, 8) * 255).to(torch.uint8), "images must be floating point"),
])
def test_invalid_images(images: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pgd(_small_cnn(0), images)


def test_keyword_only_parameters() -> None:
    with pytest.raises(TypeError):
        pgd(_small_cnn(0), torch.rand(1, 3, 8, 8), None, None, "linf")  # type: ignore[misc]


# --------------------------------------------------------------------------- real tiles, reference model


@pytest.fixture(scope="module")
def reference():
    model = load_model(device=DEVICE)
    batches = correct_batches(module_target(model, model.classes))
    return model, batches


def test_pgd_fools_the_reference_model_on_real_tiles(reference) -> None:
    model, batches = reference
    ok = total = 0
    for x, y, _ in batches:
        r = pgd(model, x, y, eps=8 / 255, steps=10)
        assert bool((r.linf <= 8 / 255 + 1e-6).all())
        ok += int(r.success.sum())
        total += x.shape[0]
    assert total >= 40
    print(f"\nPGD L-inf 8/255, 10 steps: {ok}/{total} = {ok / total:.1%} of correctly classified tiles fooled")
    assert ok / total >= 0.90


def test_pgd_targeted_to_normal(reference) -> None:
    model, batches = reference
    x, y, _ = batches[0]
    tum = y == CLASSES.index("TUM")
    r = pgd(model, x[tum], y[tum], target=CLASSES.index("NORM"), eps=8 / 255, steps=20)
    assert r.success_rate >= 0.9
    assert bool((r.pred_after == CLASSES.index("NORM"))[r.success].all())


def test_deepfool_fools_every_correct_tile(reference) -> None:
    model, batches = reference
    rhos = []
    for x, y, _ in batches:
        r = deepfool(model, x, y)
        assert bool(r.success.all()), r.success
        rhos.append(r.extra["rho"])
    rho = torch.cat(rhos)
    print(f"\nDeepFool: 100% fooled; robustness rho = ||r||2/||x||2: median {float(rho.median()):.2e}, mean {float(rho.mean()):.2e}")
    assert float(rho.median()) < 0.05


def test_fgsm_changes_some_decisions(reference) -> None:
    model, batches = reference
    x, y, _ = batches[-1]
    r = fgsm(model, x, y, eps=8 / 255)
    assert r.backward_calls == 1 and r.forward_calls == 1  # the gradient pass, which also scores the clean tiles
    assert r.success_rate > 0.3  # scored lazily, by a pass that is not counted as an attack query
    assert r.forward_calls == 1


def test_registry_and_catalog_agree() -> None:
    from medfool_ref.catalog import load_catalog
    from medfool_ref.registry import IMPLEMENTATIONS, resolve

    catalog = load_catalog()
    named = [a.implementation for a in catalog.attacks.values() if a.implementation]
    assert sorted(named) == sorted(IMPLEMENTATIONS)  # each registered implementation is linked from exactly one entry
    for name in IMPLEMENTATIONS:
        assert callable(resolve(name))
    with pytest.raises(KeyError, match="no reference implementation named 'os'"):
        resolve("os")


@pytest.mark.parametrize("impl", ["pgd", "deepfool", "fooling-images"])
def test_usage_snippets_on_attack_pages_run(impl: str, capsys) -> None:
    from medfool_ref.inputs.samples import TILE_ROOT
    from medfool_ref.registry import IMPLEMENTATIONS
    from medfool_ref.site.pages import usage

    tile = TILE_ROOT / "crc-val-he-7k-sample/TUM-TCGA-DRHQMTQA.png"
    python, _ = usage(impl, *IMPLEMENTATIONS[impl])
    code = python.replace('"tile.png"', repr(str(tile))).replace("generations=100", "generations=2")
    exec(compile(code, f"<usage of {impl}>", "exec"), {})
    assert "'attack'" in capsys.readouterr().out


@pytest.mark.parametrize("chunk,budget_mb,calls_per_iter", [
    (1, None, 4), (2, None, 2), (3, None, 2), (4, None, 1),
    (None, 1e-6, 4),  # no budget to speak of: one class at a time
    (None, 1e4, 1),  # everything fits: all four at once, the speed kept
    (None, None, 1),  # the default budget (half the free memory) holds a small model's gradients
])
def test_deepfool_class_chunks_give_the_same_result_in_more_backward_calls(chunk: int | None, budget_mb: float | None,
                                                                           calls_per_iter: int) -> None:
    """``class_chunk`` (or the chunk a memory budget allows) bounds the batched backward's memory without changing the solution."""
    model = _small_cnn(3)
    x = torch.rand(5, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    whole = deepfool(model, x, round_to_8bit=False, class_chunk=4)
    part = deepfool(model, x, round_to_8bit=False, class_chunk=chunk, memory_budget_mb=budget_mb)
    assert part.extra["class_chunk"] == (chunk if chunk is not None else 1 if calls_per_iter == 4 else 4)
    assert torch.allclose(part.adversarial, whole.adversarial, atol=1e-6)
    assert torch.equal(part.success, whole.success)
    assert part.backward_images == whole.backward_images  # the same class gradients, cut into calls
    assert part.iterations == whole.iterations
    assert part.backward_calls == whole.backward_calls + (calls_per_iter - 1) * whole.iterations
