"""Benchmark architectures in plain torch (torchvision and timm do not import beside the CPU torch build here).

- ``resnet50``: the ResNet-50 layout of He et al. (2016): a 7x7 stem, bottleneck stages of 3, 4, 6 and 3 blocks
  (64-256 to 512-2048 channels), batch norm, global average pooling; 23.5 M parameters with 9 classes.
- ``vit_s16``: the ViT-S/16 layout of Dosovitskiy et al. (2021) as used by DeiT-S: 16 px patches of a 224 px tile,
  a class token, 12 pre-norm blocks of width 384 with 6 heads and a 1,536-wide MLP; 21.7 M parameters.
- ``tilenet``: the reference model with its shipped weights.

Inputs are (B, 3, 224, 224) in [0, 1]; each model normalises inside (ImageNet mean and std). No pretrained weights
can be fetched here, so the backbones keep random (seeded) weights, and are made into real, if weak, tile classifiers
the way the issue asks: batch-norm statistics calibrated on the shipped tiles, then the last layer fitted on the
reference model's training split (tiles resized to 224 px). Their held-out accuracy is reported beside every result.
"""

from __future__ import annotations

import torch
from torch import nn

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
ARCHS = ("tilenet", "resnet50", "vit_s16")


class Normalise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class ResNet(nn.Module):
    def __init__(self, classes: int = 9) -> None:
        super().__init__()
        layers: list[nn.Module] = [Normalise(), nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                                   nn.MaxPool2d(3, 2, 1)]
        cin = 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(blocks):
                layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = width * 4
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def resnet50(classes: int = 9) -> nn.Module:
    return ResNet(classes)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.n1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.n2(x))


class ViT(nn.Module):
    def __init__(self, classes: int = 9, size: int = 224, patch: int = 16, dim: int = 384, depth: int = 12, heads: int = 6,
                 mlp: int = 1536) -> None:
        super().__init__()
        self.norm_in = Normalise()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(self.norm_in(x)).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1) + self.pos
        return self.norm(self.blocks(t))[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def vit_s16(classes: int = 9) -> nn.Module:
    return ViT(classes)


def _tiles(tiles: list, device: torch.device) -> torch.Tensor:
    import torch.nn.functional as F

    from medfool_ref.inputs.tiles import read_tile

    return torch.stack([F.interpolate(read_tile(t.path)[None], size=(224, 224), mode="bilinear", align_corners=False)[0]
                        for t in tiles]).to(device)


@torch.no_grad()
def fit(model: nn.Module, device: torch.device, *, steps: int = 300, batch: int = 8) -> dict[str, float]:
    """Batch-norm statistics from the shipped tiles, then the head fitted on the training split; held-out accuracy."""
    from medfool_ref.inputs.samples import CLASSES, sample_tiles, split

    train, held = split(sample_tiles())
    xt, xh = _tiles(train, device), _tiles(held, device)
    yt = torch.tensor([CLASSES.index(t.label) for t in train], device=device)
    yh = torch.tensor([CLASSES.index(t.label) for t in held], device=device)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if norms:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the calibration batches
            m.train()
        for i in range(0, len(xt), batch):
            model.features(xt[i:i + batch])
        for m in norms:
            m.eval()
    feats = torch.cat([model.features(xt[i:i + batch]) for i in range(0, len(xt), batch)])
    mu, sd = feats.mean(0), feats.std(0) + 1e-6
    head = nn.Linear(feats.shape[1], len(CLASSES)).to(device)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-3)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(head((feats - mu) / sd), yt).backward()
            opt.step()
    model.head.weight.copy_(head.weight / sd)  # the standardisation folded into the head
    model.head.bias.copy_(head.bias - (head.weight * (mu / sd)).sum(1))
    pred_h = torch.cat([model(xh[i:i + batch]).argmax(1) for i in range(0, len(xh), batch)])
    pred_t = torch.cat([model(xt[i:i + batch]).argmax(1) for i in range(0, len(xt), batch)])
    return {"train_accuracy": float((pred_t == yt).float().mean()), "held_out_accuracy": float((pred_h == yh).float().mean()),
            "train_tiles": len(train), "held_out_tiles": len(held)}


def build(arch: str, device: torch.device, *, seed: int = 0) -> tuple[nn.Module, dict[str, float] | None]:
    """The named architecture on ``device``, in eval mode with its parameters frozen, and (for the random backbones)
    what fitting its head reached."""
    fitted = None
    if arch == "tilenet":
        from medfool_ref.targets.reference import load_model

        model = load_model(device=device)
    elif arch in ("resnet50", "vit_s16"):
        torch.manual_seed(seed)
        model = (resnet50 if arch == "resnet50" else vit_s16)().to(device).eval()
        fitted = fit(model, device)
    else:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, fitted


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
