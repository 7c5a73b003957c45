"""The query-only harness: what a black-box attacker sees of a model, counted per tile, under a per-tile budget.

A query function takes a batch of images in [0, 1] and answers one row per image: scores (logits or
log-probabilities; the margin and the argmax are the same) or, for a label-only model (``output =
"label"``), a row whose argmax is the label and nothing more. A local ``nn.Module`` and an endpoint
client (``targets.endpoint``) are both query functions, so the query attacks run the same on either.
One image sent is one query, as in the papers (Andriushchenko et al. 2020; Chen et al. 2020).
Depends on torch only.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import torch

Output = Literal["scores", "label"]


@runtime_checkable
class QueryFn(Protocol):
    """Images (B, C, H, W) in [0, 1] -> (B, K) answers; ``output`` says whether they hold scores or a label only."""

    output: Output

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def output_of(model: object) -> Output:
    """A model's output mode: ``"label"`` only where it says so (an endpoint in label mode, a label-only wrapper)."""
    return "label" if getattr(model, "output", "scores") == "label" else "scores"


class LabelOnly(torch.nn.Module):
    """A local model reduced to its top-1 label (a one-hot row): what a label-only endpoint answers."""

    output: Output = "label"

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return torch.nn.functional.one_hot(z.argmax(1), z.shape[1]).to(z.dtype)


class Budget(ValueError):
    """A query would exceed a tile's budget (a harness bug, never a user's mistake)."""


class Queries:
    """Counts the queries of each of ``n`` tiles and refuses any beyond ``budget`` per tile.

    ``ask(images, tiles)`` sends a batch whose row i belongs to tile ``tiles[i]`` (in chunks of ``chunk``)
    and returns the answers; ``used`` holds each tile's exact count.
    """

    def __init__(self, model: torch.nn.Module, n: int, budget: int, device: torch.device, chunk: int = 256) -> None:
        self.model = model
        self.budget = budget
        self.chunk = chunk
        self.used = torch.zeros(n, dtype=torch.long, device=device)
        self.calls = 0

    @property
    def remaining(self) -> torch.Tensor:
        return self.budget - self.used

    @torch.no_grad()
    def ask(self, images: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
        if images.shape[0] == 0:
            return images.new_zeros((0, 0))
        counts = torch.bincount(tiles, minlength=self.used.shape[0])
        if bool((self.used + counts > self.budget).any()):
            raise Budget("a query batch would exceed a tile's budget")
        self.used += counts
        out = []
        for s in range(0, images.shape[0], self.chunk):
            self.calls += 1
            out.append(self.model(images[s:s + self.chunk]).float())
        return torch.cat(out)

    def labels(self, images: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
        return self.ask(images, tiles).argmax(1)


def margin(scores: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Margin loss on log-scores: > 0 while the attack has not succeeded (untargeted: z_y - max_{k!=y} z_k;
    targeted: max_{k!=t} z_k - z_t)."""
    z = scores.log_softmax(1)
    goal = labels if target is None else target
    own = z.gather(1, goal[:, None])[:, 0]
    other = z.scatter(1, goal[:, None], float("-inf")).amax(1)
    return own - other if target is None else other - own
