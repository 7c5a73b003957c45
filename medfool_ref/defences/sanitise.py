"""Training-data sanitisation against backdoors, on the penultimate features of the model trained on the data.

- Spectral signatures (Tran, Li & Madry, NeurIPS 2018): per class, centre the features, score each sample by its
  squared projection on the top right singular vector, and remove the 1.5 x (expected poison fraction) highest.
- Activation clustering (Chen et al., SafeAI 2019): per class, reduce the features to ``dims`` principal
  components, split them into two clusters with k-means, and flag the smaller cluster when it holds less than
  ``max_share`` of the class.
Both batch over a class's samples (no per-sample loops); torch only.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def penultimate(model: nn.Module, x: torch.Tensor, *, chunk: int = 256) -> torch.Tensor:
    """The reference architecture's pooled features (before dropout and the linear head), in chunks."""
    net = model.net
    out = []
    for i in range(0, x.shape[0], chunk):
        z = (x[i:i + chunk] - model.mean) / model.std
        out.append(net.pool(net.features(z)).flatten(1))
    return torch.cat(out)


def spectral_scores(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each sample's outlier score within its (given) class: squared projection on the top singular direction."""
    scores = torch.zeros(features.shape[0], dtype=features.dtype, device=features.device)
    for c in labels.unique():
        idx = (labels == c).nonzero().squeeze(1)
        if idx.numel() < 2:
            continue
        centred = features[idx] - features[idx].mean(0)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        scores[idx] = (centred @ vh[0]) ** 2
    return scores


def spectral_signatures(features: torch.Tensor, labels: torch.Tensor, *, expected_fraction: float = 0.1,
                        multiplier: float = 1.5) -> torch.Tensor:
    """Boolean mask of the samples flagged as poison (per class, the top multiplier x expected_fraction by score)."""
    if not 0 < expected_fraction < 1 or multiplier <= 0:
        raise ValueError("expected_fraction must be in (0, 1) and multiplier > 0")
    scores = spectral_scores(features, labels)
    flagged = torch.zeros_like(labels, dtype=torch.bool)
    for c in labels.unique():
        idx = (labels == c).nonzero().squeeze(1)
        k = min(idx.numel(), int(round(multiplier * expected_fraction * idx.numel())))
        if k > 0:
            flagged[idx[scores[idx].topk(k).indices]] = True
    return flagged


def _kmeans2(z: torch.Tensor, gen: torch.Generator, iterations: int = 50) -> torch.Tensor:
    """Two-cluster k-means (k-means++ start), all samples at once; returns the assignment."""
    first = z[torch.randint(z.shape[0], (1,), generator=gen)]
    d = ((z - first) ** 2).sum(1)
    second = z[torch.multinomial(d / d.sum(), 1, generator=gen)] if float(d.sum()) > 0 else first
    centres = torch.cat([first, second])
    assign = torch.zeros(z.shape[0], dtype=torch.long)
    for _ in range(iterations):
        assign = torch.cdist(z, centres).argmin(1)
        new = torch.stack([z[assign == k].mean(0) if bool((assign == k).any()) else centres[k] for k in range(2)])
        if torch.allclose(new, centres):
            break
        centres = new
    return assign


def activation_clustering(features: torch.Tensor, labels: torch.Tensor, *, dims: int = 10, max_share: float = 0.35,
                          seed: int = 0) -> torch.Tensor:
    """Boolean mask of the samples in each class's smaller k-means cluster, where it holds < ``max_share`` of the class."""
    gen = torch.Generator().manual_seed(seed)
    feats = features.detach().cpu().double()
    flagged = torch.zeros(labels.shape[0], dtype=torch.bool)
    lab = labels.cpu()
    for c in lab.unique():
        idx = (lab == c).nonzero().squeeze(1)
        if idx.numel() < 4:
            continue
        centred = feats[idx] - feats[idx].mean(0)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        z = centred @ vh[:dims].T
        assign = _kmeans2(z, gen)
        small = int(assign.bincount(minlength=2).argmin())
        share = float((assign == small).double().mean())
        if share < max_share:
            flagged[idx[assign == small]] = True
    return flagged.to(labels.device)
