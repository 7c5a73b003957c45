"""Generative poisoning (an autoencoder makes poisoned tiles) and its direct-gradient baseline.

Yang, Wu, Li & Chen, "Generative Poisoning Attack Method Against Neural Networks", arXiv:1703.01340
(2017), written from the paper's description (it has no public code). The setting: a deployed model
that is retrained on newly submitted data, some of it from the attacker, who wants to raise the
model's loss on normal (clean) data. A poisoned tile starts from a clean tile submitted under a
wrong label (the next class), as in gradient poisoning since Biggio et al., and is then optimised:

* Direct gradient (the paper's baseline): each tile on its own, by gradient ascent of the clean loss
  *after* one unrolled update of the victim on that tile (``torch.func.functional_call``): a
  second-order path, paid for every tile.
* Generative: an autoencoder G maps clean tiles to poisoned ones, trained against the deployed
  victim (the discriminator, in the paper's words) with first-order backpropagation only. Once
  trained, G poisons a batch of tiles with one forward pass, which is where its speed comes from.
  Two objectives:

  - ``"reward"``, the paper's: the victim's loss on clean data after an update on G's output. To
    first order that update changes the clean loss by -lr <g_clean, grad_theta L(G(x))>, and the
    inner product equals the directional derivative of the poison loss along g_clean, which we take
    by finite differences: (L(G(x); theta + r u) - L(G(x); theta - r u)) / 2r, u = g_clean/|g_clean|.
    Both terms are ordinary losses, so no second-order path is needed.
  - ``"typical"`` (ours, the default): G makes each tile *more* typical of its true class under the
    victim (it lowers the victim's loss on the true label), and the tile is then submitted under the
    wrong label. Measured on the sample tiles, the one-step reward does not survive retraining: it
    drives the poison away from its class, the retrained model learns the poison as a separate
    pattern, and the harm is less than that of label flipping alone. Poison that the victim sees as
    its class's core cannot be told apart from clean tiles, so the wrong label pulls on the class
    itself: it does clearly more harm than random noise and about as much as label flipping (no
    objective we tried does more). The result reports both objectives side by side.

* Countermeasure (same paper): reject submitted tiles whose loss under the current model exceeds a
  threshold, here a quantile of the loss on the clean training data; we report detection and
  false-positive rates.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..targets.tilenet import TileClassifier
from ..inputs.samples import CLASSES, Tile
from ..training.loop import CropBank, TrainConfig, crop_bank, train

Progress = Callable[[int, int], None]
OBJECTIVES = ("typical", "reward")


def _check_generator(objective: str, steps: int, eps: float, what: str = "steps") -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}; got {objective!r}")
    if steps < 1:
        raise ValueError(f"{what} must be >= 1; got {steps}")
    if not 0 < eps <= 1:
        raise ValueError(f"eps must be in (0, 1]; got {eps}")


def flip_labels(y: torch.Tensor, num_classes: int = len(CLASSES)) -> torch.Tensor:
    """The attacker's labels: every poisoned tile is submitted as the next class."""
    return (y + 1) % num_classes


class PoisonGenerator(nn.Module):
    """A small convolutional autoencoder: clean tile in, poisoned tile (within ``eps`` in L-inf) out.

    The decoder upsamples bilinearly before each convolution: transposed convolutions leave a
    checkerboard pattern in every output, a fixed mark that a retrained model learns to recognise.
    """

    def __init__(self, width: int = 16, eps: float = 8 / 255) -> None:
        super().__init__()
        self.eps = eps
        self.encode = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(),
                                    nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.decode = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(2 * width, width, 3, padding=1),
                                    nn.ReLU(), nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(width, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        delta = F.interpolate(self.decode(self.encode(x)), size=(h, w), mode="bilinear")
        return (x + self.eps * torch.tanh(delta)).clamp(0, 1)


def reward_slope(victim: nn.Module, poison: torch.Tensor, poison_labels: torch.Tensor, clean: torch.Tensor,
                 clean_labels: torch.Tensor, *, r: float = 1e-2) -> torch.Tensor:
    """<g_clean/|g_clean|, grad_theta L_poison> by central finite differences over the victim's parameters.

    A training step on the poison changes the clean loss by about -lr |g_clean| times this value,
    so the attacker minimises it. Differentiable in ``poison`` by first-order backpropagation only.
    """
    params = {k: p.detach() for k, p in victim.named_parameters()}
    buffers = {k: b.detach() for k, b in victim.named_buffers()}
    with torch.enable_grad():
        leaves = {k: p.clone().requires_grad_(True) for k, p in params.items()}
        loss = F.cross_entropy(functional_call(victim, (leaves, buffers), (clean,)), clean_labels)
        grads = torch.autograd.grad(loss, list(leaves.values()))
    norm = torch.sqrt(sum((g * g).sum() for g in grads)).clamp(min=1e-12)
    plus = {k: p + r * g / norm for (k, p), g in zip(params.items(), grads)}
    minus = {k: p - r * g / norm for (k, p), g in zip(params.items(), grads)}
    lp = F.cross_entropy(functional_call(victim, (plus, buffers), (poison,)), poison_labels)
    lm = F.cross_entropy(functional_call(victim, (minus, buffers), (poison,)), poison_labels)
    return (lp - lm) / (2 * r)


@dataclass
class GeneratorResult:
    generator: PoisonGenerator
    rewards: list[float]  # the victim's clean loss after one SGD step on a batch of poison (the paper's reward), every few steps
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)


def train_generator(victim: TileClassifier, images: torch.Tensor, labels: torch.Tensor, *, steps: int = 150,
                    objective: str = "typical", batch_size: int = 32, eps: float = 8 / 255, lr: float = 1e-3,
                    r: float = 1e-2, reward_every: int = 10, seed: int = 0,
                    progress: Progress | None = None) -> GeneratorResult:
    """Train the generator against the deployed victim (uint8 ``images`` with their true ``labels``).

    ``objective`` is ``"typical"`` (lower the victim's loss on the true label) or ``"reward"`` (the
    paper's: raise the clean loss after an update on the poison, to first order); the paper's reward
    is measured every ``reward_every`` steps either way.
    """
    _check_generator(objective, steps, eps)
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2; got {batch_size}")
    device = next(victim.parameters()).device
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    g = PoisonGenerator(eps=eps).to(device)
    g_opt = torch.optim.Adam(g.parameters(), lr=lr)
    was_training = victim.training
    victim.eval()
    grad_flags = [p.requires_grad for p in victim.parameters()]
    for p in victim.parameters():  # G is trained; the victim stays as deployed
        p.requires_grad_(False)
    images, labels = images.to(device), labels.to(device)
    rewards: list[float] = []
    started = time.perf_counter()
    for i in range(steps):
        idx = torch.randint(0, images.shape[0], (2 * batch_size,), device=device, generator=gen)
        x, y = images[idx[:batch_size]].float().div(255), labels[idx[:batch_size]]
        xc, yc = images[idx[batch_size:]].float().div(255), labels[idx[batch_size:]]
        yp = flip_labels(y)
        g_opt.zero_grad(set_to_none=True)
        if objective == "reward":
            reward_slope(victim, g(x), yp, xc, yc, r=r).backward()
        else:
            F.cross_entropy(victim(g(x)), y).backward()
        g_opt.step()
        if reward_every and (i % reward_every == 0 or i == steps - 1):
            with torch.no_grad():
                rewards.append(_reward_after_update(victim, g(x), yp, xc, yc))
        if progress is not None:
            progress(i + 1, steps)
    victim.train(was_training)
    for p, flag in zip(victim.parameters(), grad_flags):
        p.requires_grad_(flag)
    for p in g.parameters():
        p.requires_grad_(False)
    return GeneratorResult(g.eval(), rewards, time.perf_counter() - started,
                           {"steps": steps, "objective": objective, "batch_size": batch_size, "eps": eps, "lr": lr, "r": r, "seed": seed})


@torch.no_grad()
def generate(generator: PoisonGenerator, images: torch.Tensor, *, chunk: int = 256) -> torch.Tensor:
    """Poisoned tiles for a batch of clean ones (floats in [0, 1]), one forward pass per chunk."""
    return torch.cat([generator(images[i:i + chunk]) for i in range(0, images.shape[0], chunk)])


def direct_gradient_poison(victim: TileClassifier, images: torch.Tensor, labels: torch.Tensor, clean: torch.Tensor,
                           clean_labels: torch.Tensor, *, steps: int = 10, step_size: float = 8 / 255, eps: float = 32 / 255,
                           victim_lr: float = 1e-2) -> torch.Tensor:
    """The baseline: each tile ascends the clean loss after one unrolled victim update on it (second order).

    ``labels`` are the labels the poison is submitted with. One tile at a time by design: that is
    the method's cost, which the generative method is measured against.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    params = {k: p.detach().requires_grad_(True) for k, p in victim.named_parameters()}
    buffers = {k: b.detach() for k, b in victim.named_buffers()}
    was_training = victim.training
    victim.eval()
    out = []
    for i in range(images.shape[0]):
        x0 = images[i:i + 1]
        xp = x0.clone().requires_grad_(True)
        for _ in range(steps):
            loss = F.cross_entropy(functional_call(victim, (params, buffers), (xp,)), labels[i:i + 1])
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
            updated = {k: p - victim_lr * gr for (k, p), gr in zip(params.items(), grads)}
            reward = F.cross_entropy(functional_call(victim, (updated, buffers), (clean,)), clean_labels)
            (gx,) = torch.autograd.grad(reward, xp)
            xp = (x0 + (xp + step_size * gx.sign() - x0).clamp(-eps, eps)).clamp(0, 1).detach().requires_grad_(True)
        out.append(xp.detach())
    victim.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def sample_losses(model: TileClassifier, images: torch.Tensor, labels: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    return torch.cat([F.cross_entropy(model(images[i:i + chunk]), labels[i:i + chunk], reduction="none")
                      for i in range(0, images.shape[0], chunk)])


def loss_threshold(model: TileClassifier, images: torch.Tensor, labels: torch.Tensor, *, quantile: float = 0.95) -> float:
    """The countermeasure's threshold: a quantile of the current model's loss on trusted clean data."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1); got {quantile}")
    return float(sample_losses(model, images, labels).quantile(quantile))


@dataclass
class PoisoningResult:
    poisoned: TileClassifier  # the victim after retraining with generative poison at ``fraction``
    generator: PoisonGenerator
    metrics: dict[str, Any]
    examples: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # clean tiles, their poisoned versions, submitted labels
    params: dict[str, Any] = field(default_factory=dict)


def _evaluate(model: TileClassifier, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        logits = model(x)
    return {"accuracy": float((logits.argmax(1) == y).float().mean()), "loss": float(F.cross_entropy(logits, y))}


def _with_poison(bank: CropBank, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> CropBank:
    q = (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu()  # submitted as 8-bit images
    return CropBank(torch.cat([bank.images, q]), torch.cat([bank.labels, y.cpu()]), torch.cat([bank.tile_of, bank.tile_of[idx]]))


def generative_poisoning(bank: CropBank, held_out: list[Tile], *, fractions: tuple[float, ...] = (0.1, 0.2, 0.3),
                         fraction: float = 0.2, objective: str = "typical", compare_reward: bool = True, repeats: int = 1,
                         deploy: TrainConfig | None = None, retrain: TrainConfig | None = None,
                         generator_steps: int = 150, eps: float = 8 / 255, direct_tiles: int = 16, direct_steps: int = 10,
                         quantile: float = 0.95, seed: int = 0, device: str | torch.device = "cpu",
                         progress: Callable[..., None] | None = None) -> PoisoningResult:
    """Deploy a clean model, train the generator against it, then retrain copies of it on clean data plus
    each fraction of generative poison, of label-flipped tiles (the poison's starting point) and of
    random-noise tiles, and measure accuracy and loss on crops of the held-out tiles.

    ``fraction`` is the share of poisoned tiles in the retraining data for the returned model. With
    ``compare_reward`` a second generator trained with the paper's reward is measured beside the
    ``"typical"`` one (row ``generative-reward``). Each retraining is repeated with ``repeats`` seeds
    and the mean is reported. The direct-gradient baseline is timed on ``direct_tiles`` tiles.
    """
    fractions = tuple(sorted(set(fractions) | {fraction}))
    if not all(0 < f < 1 for f in fractions):
        raise ValueError(f"fractions must be in (0, 1); got {fractions}")
    _check_generator(objective, generator_steps, eps, "generator_steps")  # before any training: a mistake costs no time
    if direct_tiles < 0:
        raise ValueError(f"direct_tiles must be >= 0; got {direct_tiles}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1); got {quantile}")
    if direct_tiles and direct_steps < 1:
        raise ValueError(f"direct_steps must be >= 1; got {direct_steps}")
    deploy = deploy or TrainConfig(steps=300, crop=64, seed=seed)
    retrain = retrain or TrainConfig(steps=150, crop=deploy.crop, lr=1e-3, seed=seed + 1)
    device = torch.device(device)
    started = time.perf_counter()
    victim = train(bank, deploy, device=device, progress=progress)
    held = crop_bank(held_out, crop=deploy.crop, per_side=8)
    xh, yh = held.images.to(device).float().div(255), held.labels.to(device)
    t0 = time.perf_counter()
    gres = train_generator(victim, bank.images, bank.labels, steps=generator_steps, objective=objective, eps=eps, seed=seed,
                           progress=progress)
    t_train_g = time.perf_counter() - t0
    generators = {"generative": gres.generator}
    if compare_reward and objective != "reward":
        generators["generative-reward"] = train_generator(victim, bank.images, bank.labels, steps=generator_steps,
                                                          objective="reward", eps=eps, seed=seed, progress=progress).generator

    def retrained(data: CropBank) -> tuple[dict[str, float], TileClassifier]:
        runs = []
        for r in range(repeats):
            model = train(data, replace(retrain, seed=retrain.seed + r), device=device, init=victim)
            runs.append(_evaluate(model, xh, yh))
        mean = {k: sum(run[k] for run in runs) / repeats for k in ("accuracy", "loss")}
        return ({**mean, "accuracy_runs": [run["accuracy"] for run in runs]} if repeats > 1 else mean), model

    n = bank.images.shape[0]
    gen = torch.Generator().manual_seed(seed + 7)
    report: dict[str, Any] = {"deployed": _evaluate(victim, xh, yh), "by_fraction": {}}
    models: dict[float, TileClassifier] = {}
    for f in fractions:
        k = int(round(f / (1 - f) * n))
        idx = torch.randint(0, n, (k,), generator=gen)
        x = bank.images[idx].to(device).float().div(255)
        y_flip = flip_labels(bank.labels[idx].to(device))
        poisons = {name: (generate(g, x), y_flip) for name, g in generators.items()}
        poisons["label-flip"] = (x, y_flip)
        poisons["noise"] = (torch.rand(x.shape, generator=gen).to(device), y_flip)
        row: dict[str, Any] = {"poisoned_tiles": k, "clean_tiles": n}
        for name, (xp, yp) in poisons.items():
            row[name], model = retrained(_with_poison(bank, xp, yp, idx))
            if name == "generative":
                models[f] = model
        report["by_fraction"][f"{f:g}"] = row
    report["retrained_clean"], _ = retrained(bank)
    # timing: generation per tile (one forward per chunk), and the direct-gradient baseline on a few tiles
    xs = bank.images[:256].to(device).float().div(255)
    generate(gres.generator, xs[:8])  # warm-up
    passes = []
    for _ in range(3):  # the median of three timed passes over 256 tiles
        t1 = time.perf_counter()
        generate(gres.generator, xs)
        _sync(device)
        passes.append((time.perf_counter() - t1) / xs.shape[0])
    t_gen = sorted(passes)[1]
    timing: dict[str, Any] = {"generator_training_s": round(t_train_g, 2), "generative_s_per_tile": t_gen}
    if direct_tiles:
        pick = torch.randint(0, n, (direct_tiles,), generator=gen)
        xd = bank.images[pick].to(device).float().div(255)
        yd = flip_labels(bank.labels[pick].to(device))
        cpick = torch.randint(0, n, (64,), generator=gen)
        xc, yc = bank.images[cpick].to(device).float().div(255), bank.labels[cpick].to(device)
        t2 = time.perf_counter()
        direct = direct_gradient_poison(victim, xd, yd, xc, yc, steps=direct_steps, eps=eps)
        _sync(device)
        t_direct = (time.perf_counter() - t2) / direct_tiles
        timing.update({"direct_s_per_tile": t_direct, "direct_tiles_timed": direct_tiles, "direct_steps": direct_steps,
                       "speedup_generation_only": t_direct / max(t_gen, 1e-12),
                       "tiles_to_amortise_generator_training": t_train_g / max(t_direct - t_gen, 1e-12)})
        with torch.no_grad():
            gxd = generate(gres.generator, xd)
            timing["direct_clean_loss_after_one_update"] = _reward_after_update(victim, direct, yd, xc, yc)
            timing["generative_clean_loss_after_one_update"] = _reward_after_update(victim, gxd, yd, xc, yc)
            timing["label_flip_clean_loss_after_one_update"] = _reward_after_update(victim, xd, yd, xc, yc)
    report["timing"] = timing
    # the countermeasure: a loss threshold from the deployed model's loss on the clean training tiles
    xt, yt = bank.images.to(device).float().div(255), bank.labels.to(device)
    thr = loss_threshold(victim, xt, yt, quantile=quantile)
    k = int(round(fraction / (1 - fraction) * n))
    idx = torch.randint(0, n, (k,), generator=gen)
    x = bank.images[idx].to(device).float().div(255)
    yp = flip_labels(bank.labels[idx].to(device))
    gx = generate(gres.generator, x)
    report["countermeasure"] = {
        "threshold": thr, "quantile": quantile,
        "detection_rate_generative": float((sample_losses(victim, gx, yp) > thr).float().mean()),
        "detection_rate_label_flip": float((sample_losses(victim, x, yp) > thr).float().mean()),
        "false_positive_rate_held_out": float((sample_losses(victim, xh, yh) > thr).float().mean()),
    }
    report["held_out_crops"] = int(xh.shape[0])
    report["seconds_total"] = round(time.perf_counter() - started, 1)
    report["reward_first_last"] = [gres.rewards[0], gres.rewards[-1]]
    ex = x[:4]
    params = {"fractions": list(fractions), "fraction": fraction, "objective": objective, "repeats": repeats,
              "generator_steps": generator_steps, "eps": eps,
              "quantile": quantile, "seed": seed, "deploy": deploy.as_dict(), "retrain": retrain.as_dict(),
              "labels": "next class (y + 1 mod 9)"}
    return PoisoningResult(models[fraction], gres.generator, report, (ex, generate(gres.generator, ex), yp[:4]), params)


def example_captions(labels: torch.Tensor) -> list[str]:
    """Captions for ``PoisoningResult.examples``: the clean tiles' classes, then the labels the poison carries."""
    return ([f"clean {CLASSES[(int(y) - 1) % len(CLASSES)]}" for y in labels]
            + [f"poison as {CLASSES[int(y)]}" for y in labels])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reward_after_update(victim: TileClassifier, xp: torch.Tensor, yp: torch.Tensor, xc: torch.Tensor, yc: torch.Tensor,
                         lr: float = 1e-2) -> float:
    """The paper's reward for a set of poison: clean loss after one SGD step of the victim on it."""
    v = copy.deepcopy(victim)
    for p in v.parameters():
        p.requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(v(xp), yp)
        grads = torch.autograd.grad(loss, list(v.parameters()))
    with torch.no_grad():
        for p, g in zip(v.parameters(), grads):
            p -= lr * g
        return float(F.cross_entropy(v(xc), yc))
