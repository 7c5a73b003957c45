"""Evolved fooling images: unrecognisable patterns a classifier scores as a chosen class.

Nguyen, Yosinski & Clune, "Deep Neural Networks are Easily Fooled: High Confidence Predictions
for Unrecognizable Images", CVPR 2015. Images are encoded by compositional pattern-producing
networks (CPPNs: small random networks of sine, Gaussian and tanh units mapping pixel
coordinates to colours) and evolved with a (mu + lambda) strategy using only the class scores.
The population of every requested class is rendered and scored as one batch per generation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._core import CountingModel, Progress, check_int, check_positive, model_device, seeded_generator


@dataclass
class FoolingResult:
    images: torch.Tensor  # (K, 3, S, S): the best image for each class
    classes: torch.Tensor  # (K,) class indices
    confidence: torch.Tensor  # (K,) the model's probability for that class
    success: torch.Tensor  # (K,) confidence >= threshold
    generations: torch.Tensor  # (K,) generations used
    forward_images: int
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"attack": "fooling-images", "classes": self.classes.tolist(),
                "confidence": [round(float(c), 6) for c in self.confidence],
                "success": self.success.tolist(), "success_rate": float(self.success.float().mean()),
                "generations": self.generations.tolist(), "forward_images": self.forward_images,
                "seconds": round(self.seconds, 3), "params": self.params}


def _coordinates(size: int, device: torch.device) -> torch.Tensor:
    lin = torch.linspace(-1, 1, size, device=device)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    r = torch.sqrt(xx**2 + yy**2)
    return torch.stack([xx, yy, r, torch.ones_like(r)], dim=-1).reshape(-1, 4)  # (S*S, 4)


def render(genomes: list[torch.Tensor], coords: torch.Tensor, size: int) -> torch.Tensor:
    """Render N CPPNs at once: genomes are weight tensors with a leading N dimension."""
    w_in, w_hidden, w_out = genomes
    h = coords[None] @ w_in  # (N, S*S, H)
    third = h.shape[-1] // 3
    h = torch.cat([torch.sin(h[..., :third]), torch.exp(-h[..., third:2 * third] ** 2), torch.tanh(h[..., 2 * third:])], dim=-1)
    for layer in range(w_hidden.shape[1]):
        h = torch.tanh(h @ w_hidden[:, layer]) + torch.sin(h @ w_hidden[:, layer]) * 0.5
    rgb = torch.sigmoid(h @ w_out)  # (N, S*S, 3)
    return rgb.transpose(1, 2).reshape(-1, 3, size, size)


def fooling_images(model: nn.Module, *, classes: list[int] | None = None, size: int = 96, population: int = 24,
                   generations: int = 200, hidden: int = 12, layers: int = 2, mutation: float = 0.3,
                   threshold: float = 0.99, seed: int | None = 0, progress: Progress | None = None) -> FoolingResult:
    """Evolve one image per class until the model gives it ``threshold`` confidence (or generations run out)."""
    check_int("size", size, low=8, high=1024)
    check_int("population", population, low=2, high=10_000)
    check_int("generations", generations, low=0, high=1_000_000)
    check_int("hidden", hidden, low=3, high=256)
    check_int("layers", layers, low=0, high=16)
    check_positive("mutation", mutation)
    check_positive("threshold", threshold, upper=1.0)
    started = time.perf_counter()
    device = model_device(model)
    counted = CountingModel(model)
    gen = seeded_generator(seed, device)
    with torch.no_grad():
        n_classes = counted(torch.zeros(1, 3, size, size, device=device)).shape[1]
    wanted = torch.tensor(classes if classes is not None else list(range(n_classes)), device=device, dtype=torch.long)
    if bool(((wanted < 0) | (wanted >= n_classes)).any()):
        raise ValueError(f"classes must be indices in [0, {n_classes})")
    k = wanted.numel()
    n = k * population
    coords = _coordinates(size, device)

    def random_genomes(m: int) -> list[torch.Tensor]:
        return [torch.randn(m, 4, hidden, device=device, generator=gen) * 2,
                torch.randn(m, layers, hidden, hidden, device=device, generator=gen) / hidden**0.5 * 2,
                torch.randn(m, hidden, 3, device=device, generator=gen) * 2]

    genomes = [g.view(k, population, *g.shape[1:]) for g in random_genomes(n)]  # per class
    goal = wanted[:, None].expand(k, population)

    @torch.no_grad()
    def fitness(g: list[torch.Tensor], cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of the genomes of the classes ``cls`` (A, P, ...) as one batch."""
        a = cls.numel()
        imgs = render([w.reshape(a * population, *w.shape[2:]) for w in g], coords, size)
        probs = counted(imgs).softmax(1)
        fit = probs.gather(1, goal[cls].reshape(-1, 1))[:, 0]
        return fit.view(a, population), imgs.view(a, population, 3, size, size)

    every = torch.arange(k, device=device)
    fit, imgs = fitness(genomes, every)
    used = torch.zeros(k, dtype=torch.long, device=device)
    for g_i in range(generations):
        active = (fit.max(dim=1).values < threshold).nonzero()[:, 0]  # classes still below the threshold
        if active.numel() == 0:
            break
        used[active] += 1
        parents = [w[active] for w in genomes]
        # (mu + lambda): each parent makes one child by sparse Gaussian mutation; the best P of parents+children survive
        children = [w + mutation * torch.randn(w.shape, device=device, generator=gen)
                    * (torch.rand(w.shape, device=device, generator=gen) < 0.3) for w in parents]
        c_fit, c_imgs = fitness(children, active)
        both_fit = torch.cat([fit[active], c_fit], dim=1)  # (A, 2P)
        keep = both_fit.argsort(dim=1, descending=True)[:, :population]  # (A, P) indices into parents+children
        for i, (pw, cw) in enumerate(zip(parents, children)):
            pool = torch.cat([pw, cw], dim=1)
            genomes[i][active] = torch.gather(pool, 1, keep.view(*keep.shape, *([1] * (pool.ndim - 2))).expand(-1, -1, *pool.shape[2:]))
        fit[active] = torch.gather(both_fit, 1, keep)
        pool_imgs = torch.cat([imgs[active], c_imgs], dim=1)
        imgs[active] = torch.gather(pool_imgs, 1, keep[:, :, None, None, None].expand(-1, -1, 3, size, size))
        if progress is not None:
            progress(g_i + 1, generations)
    best = fit.argmax(dim=1)
    conf = fit[every, best]
    params = {"size": size, "population": population, "generations": generations, "hidden": hidden, "layers": layers,
              "mutation": mutation, "threshold": threshold, "seed": seed}
    return FoolingResult(imgs[every, best].detach(), wanted, conf, conf >= threshold, used, counted.forward_images,
                         time.perf_counter() - started, params)
