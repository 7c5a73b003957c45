"""Slide-level calls from a slide's tiles: max, mean and top-k mean pooling of P(tumour), and attention-based
multiple-instance learning with a gated-attention head (Ilse, Tomczak & Welling, ICML 2018) on the reference
TileNet's pooled features; and the ordered flip search (how many attacked tiles change each call).

Every function takes whole tensors (all tiles, all k at once); none loops over tiles. The head is trained by
:func:`train_mil` (``medfool slide train-mil``, deterministic) on bags drawn as labelled mosaic slides of the shipped
training tiles. Depends on torch, numpy and safetensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .reference import MODEL_DIR

AGGREGATORS = ("max", "mean", "topk", "attention")
POOLING = ("max", "mean", "topk")
ARCHITECTURE = "medfool-gated-attention-v1"
MIL_WEIGHTS = MODEL_DIR / "mil-attention.safetensors"
MIL_CARD = MODEL_DIR / "mil-attention.json"
DEFAULT_K = 5
DEFAULT_THRESHOLDS = {"max": 0.5, "mean": 0.5, "topk": 0.5, "attention": 0.5}


class MilError(ValueError):
    """An attention head that cannot be used: the message says why."""


class GatedAttention(nn.Module):
    """Gated attention pooling (Ilse et al. 2018, eq. 9): a_k = w^T (tanh(V h_k) * sigmoid(U h_k)), softmax over the
    bag's tiles, z = sum_k a_k h_k, slide logit = c^T z + b. Embeddings are standardised inside (``shift``, ``scale``)."""

    def __init__(self, dim: int = 96, hidden: int = 64) -> None:
        super().__init__()
        self.V, self.U, self.w = nn.Linear(dim, hidden), nn.Linear(dim, hidden), nn.Linear(hidden, 1)
        self.classifier = nn.Linear(dim, 1)
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def normalise(self, h: torch.Tensor) -> torch.Tensor:
        return (h - self.shift) / self.scale

    def scores(self, hn: torch.Tensor) -> torch.Tensor:
        """Attention logits (..., N) of standardised embeddings (..., N, D)."""
        return self.w(torch.tanh(self.V(hn)) * torch.sigmoid(self.U(hn))).squeeze(-1)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(slide logit (...,), attention weights (..., N)) of raw embeddings (..., N, D); ``mask`` marks real tiles."""
        hn = self.normalise(h)
        a = self.scores(hn)
        if mask is not None:
            a = a.masked_fill(~mask, float("-inf"))
        weights = a.softmax(-1)
        return self.classifier((weights.unsqueeze(-1) * hn).sum(-2)).squeeze(-1), weights


@dataclass
class MilHead:
    """The trained head with the pooling thresholds calibrated beside it and its card."""

    module: GatedAttention
    thresholds: dict[str, float]
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def tile_fingerprint(self) -> str | None:
        return self.card.get("tile_model_fingerprint")


def embedding_module(model: nn.Module) -> nn.Module | None:
    """The module whose output is the tile embedding: the reference TileNet's global pooling (``net.pool``)."""
    net = getattr(model, "net", None)
    return getattr(net, "pool", None) if hasattr(net, "features") else None


def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """TileNet's pooled features ``pool(features(normalised x))`` as (B, D) embeddings."""
    net = model.net  # type: ignore[attr-defined]
    return net.pool(net.features((x - model.mean) / model.std)).flatten(1)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- pooling


def pooled(p: torch.Tensor, *, k: int = DEFAULT_K) -> dict[str, torch.Tensor]:
    """Max, mean and top-k mean of P(tumour) over the last axis (N tiles), for any leading shape."""
    if k < 1:
        raise ValueError(f"top-k: k must be >= 1; got {k}")
    if p.shape[-1] == 0:
        raise ValueError("a slide with no tiles has no slide-level call")
    kk = min(k, p.shape[-1])
    return {"max": p.amax(-1), "mean": p.mean(-1), "topk": p.topk(kk, dim=-1).values.mean(-1)}


def attention_score(head: MilHead, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """P(slide is tumour) from the attention head, and the attention weights, for (N, D) embeddings."""
    with torch.no_grad():
        logit, weights = head.module(h.float())
    return torch.sigmoid(logit), weights


def slide_calls(p: torch.Tensor, h: torch.Tensor | None, *, head: MilHead | None, thresholds: dict[str, float],
                k: int = DEFAULT_K) -> tuple[dict[str, dict[str, Any]], torch.Tensor | None]:
    """Per aggregator: its score, threshold and call (tumour when score >= threshold); plus the attention weights."""
    scores = {name: float(v) for name, v in pooled(p, k=k).items()}
    weights = None
    if head is not None and h is not None:
        s, weights = attention_score(head, h)
        scores["attention"] = float(s)
    return {name: {"score": v, "threshold": thresholds[name], "call": bool(v >= thresholds[name])} for name, v in scores.items()}, weights


# --------------------------------------------------------------------------- the flip search


def flip_scan(p0: torch.Tensor, p_adv: torch.Tensor, order: torch.Tensor, *, k: int = DEFAULT_K, head: MilHead | None = None,
              h0: torch.Tensor | None = None, h_adv: torch.Tensor | None = None, chunk: int = 1 << 22) -> dict[str, torch.Tensor]:
    """Each aggregator's score after attacking the first j tiles of ``order``, for j = 0..K (a (K+1,) tensor each).

    ``p0`` (N,): clean P(tumour); ``p_adv`` (K,): P(tumour) of the adversarial of ``order[j]``; likewise ``h0`` (N, D)
    and ``h_adv`` (K, D) for attention. Mean and attention use running sums, max a prefix/suffix maximum, top-k the
    exact top-k of every row (in chunks of ``chunk`` values)."""
    p0, p_adv = p0.double(), p_adv.double()
    n, K = p0.shape[0], order.shape[0]
    if p_adv.shape[0] != K or K > n or (K and int(order.unique().numel()) != K):
        raise ValueError("order must hold K distinct tile indices and p_adv one value per attacked tile")
    zero = p0.new_zeros(1)
    out = {"mean": (p0.sum() + torch.cat([zero, (p_adv - p0[order]).cumsum(0)])) / n}
    rest = torch.ones(n, dtype=torch.bool)
    rest[order] = False
    base = p0[rest].max() if bool(rest.any()) else p0.new_tensor(float("-inf"))
    prefix = torch.cat([p0.new_tensor([float("-inf")]), p_adv.cummax(0).values])
    suffix = torch.cat([p0[order].flip(0).cummax(0).values.flip(0), p0.new_tensor([float("-inf")])])
    out["max"] = torch.maximum(torch.maximum(prefix, suffix), base)
    pos = torch.full((n,), K, dtype=torch.long)
    pos[order] = torch.arange(K)
    adv_full = p0.clone()
    adv_full[order] = p_adv
    kk, rows = min(k, n), max(1, chunk // max(n, 1))
    tops = []
    for j0 in range(0, K + 1, rows):
        j = torch.arange(j0, min(K + 1, j0 + rows))
        vals = torch.where(pos[None, :] < j[:, None], adv_full[None, :], p0[None, :])
        tops.append(vals.topk(kk, dim=1).values.mean(1))
    out["topk"] = torch.cat(tops)
    if head is not None and h0 is not None and h_adv is not None:
        out["attention"] = _attention_scan(head, h0, h_adv, order)
    return out


def _attention_scan(head: MilHead, h0: torch.Tensor, h_adv: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    m = head.module
    with torch.no_grad():
        hn0, hn1 = m.normalise(h0.float()).double(), m.normalise(h_adv.float()).double()
        a0, a1 = m.scores(hn0.float()).double(), m.scores(hn1.float()).double()
        top = torch.maximum(a0.max(), a1.max()) if a1.numel() else a0.max()
        e0, e1 = (a0 - top).exp(), (a1 - top).exp()
        num0, den0 = (e0[:, None] * hn0).sum(0), e0.sum()
        d_num = (e1[:, None] * hn1 - e0[order][:, None] * hn0[order]).cumsum(0)
        d_den = (e1 - e0[order]).cumsum(0)
        num = torch.cat([num0[None], num0[None] + d_num])
        den = torch.cat([den0[None], den0 + d_den])
        z = num / den[:, None]
        logit = z @ m.classifier.weight.double().squeeze(0) + m.classifier.bias.double()
    return torch.sigmoid(logit)


def smallest_flip(scores: torch.Tensor, threshold: float) -> dict[str, Any]:
    """The smallest j whose call differs from the clean one (j = 0), and whether every larger j stays flipped."""
    calls = scores >= threshold
    flipped = calls != calls[0]
    hits = torch.nonzero(flipped).flatten()
    if not hits.numel():
        return {"k": None, "stays_flipped": False, "clean_call": bool(calls[0]), "of": int(scores.numel() - 1)}
    j = int(hits[0])
    return {"k": j, "stays_flipped": bool(flipped[j:].all()), "clean_call": bool(calls[0]), "of": int(scores.numel() - 1)}


# --------------------------------------------------------------------------- the shipped head


def head_bytes(head: MilHead) -> bytes:
    from safetensors.torch import save

    m = head.module
    state = {k: v.detach().cpu().contiguous() for k, v in m.state_dict().items()}
    meta = {"architecture": ARCHITECTURE, "dim": m.classifier.in_features, "hidden": m.V.out_features,
            "thresholds": head.thresholds, "tile_model_fingerprint": head.tile_fingerprint}
    return save(state, metadata={"medfool": json.dumps(meta, sort_keys=True)})  # one key: safetensors' header order is not fixed


def load_mil(path: str | Path | None = None) -> MilHead:
    """The attention head from its .safetensors file (default: the shipped one) with its card, if beside it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path) if path is not None else MIL_WEIGHTS
    if path.suffix != ".safetensors" or not path.is_file():
        raise MilError(f"{path}: no .safetensors attention head there (train one with `medfool slide train-mil`)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("medfool", "{}"))
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise MilError(f"{path}: not a readable safetensors file ({exc})") from None
    if not isinstance(meta, dict) or meta.get("architecture") != ARCHITECTURE:
        raise MilError(f"{path}: architecture {meta.get('architecture')!r} is not {ARCHITECTURE!r}")
    module = GatedAttention(int(meta["dim"]), int(meta["hidden"]))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise MilError(f"{path}: weights do not fit the architecture ({str(exc).splitlines()[0]})") from None
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    card.setdefault("tile_model_fingerprint", meta.get("tile_model_fingerprint"))
    return MilHead(module.eval(), {**DEFAULT_THRESHOLDS, **meta.get("thresholds", {})}, card)


# --------------------------------------------------------------------------- training (medfool slide train-mil)


@dataclass
class MilConfig:
    """The head's recipe: bags are mosaic layouts of ``min_side``-``max_side`` cells a side, half of them with tumour."""

    steps: int = 400
    bags_per_step: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    hidden: int = 64
    seed: int = 0
    min_side: int = 4
    max_side: int = 10
    calibration_bags: int = 400
    top_k: int = DEFAULT_K


def mosaic_bags(pool: list[Any], n: int, *, seed: int, config: MilConfig) -> tuple[list[Any], Any]:
    """``n`` bags (indices into ``pool`` of each mosaic's tissue cells) and their labels (contains tumour), alternating."""
    import numpy as np

    from ..inputs.mosaic import assign, parse_layout

    rng = np.random.default_rng(seed)
    bags, labels = [], np.zeros(n, bool)
    for b in range(n):
        rows, cols = (int(v) for v in rng.integers(config.min_side, config.max_side + 1, 2))
        tumour = []
        if b % 2 == 0:
            h, w = (int(rng.integers(1, max(1, (s - 2) // 2) + 1)) for s in (rows, cols))
            r0, c0 = int(rng.integers(1, rows - h)), int(rng.integers(1, cols - w))
            tumour = [f"{r0}:{r0 + h},{c0}:{c0 + w}"]
            labels[b] = True
        idx = assign(parse_layout(f"{rows}x{cols}", tumour=tumour), pool, seed=int(rng.integers(2**31)))
        bags.append(idx[idx >= 0])
    return bags, labels


def _tile_features(model: nn.Module, pool: list[Any], positive: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    from ..inputs.mosaic import cell_image

    device = next(model.parameters()).device
    x = torch.from_numpy(np.stack([cell_image(s) for s in pool])).permute(0, 3, 1, 2).float().div(255).to(device)
    with torch.no_grad():
        p = model(x).float().softmax(1)[:, positive].sum(1)
        return p.cpu().double(), embed(model, x).float().cpu()


def _padded(h: torch.Tensor, bags: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(b) for b in bags)
    idx = torch.zeros(len(bags), n, dtype=torch.long)
    mask = torch.zeros(len(bags), n, dtype=torch.bool)
    for i, b in enumerate(bags):
        idx[i, :len(b)] = torch.as_tensor(b)
        mask[i, :len(b)] = True
    return h[idx], mask


def _bag_scores(p: torch.Tensor, h: torch.Tensor, bags: list[Any], head: GatedAttention, k: int) -> dict[str, torch.Tensor]:
    big = float("-inf")
    vals, mask = _padded(p[:, None], bags)
    vals = vals.squeeze(-1)
    out = {"max": vals.masked_fill(~mask, big).amax(1), "mean": (vals * mask).sum(1) / mask.sum(1),
           "topk": torch.stack([vals[i, :int(m.sum())].topk(min(k, int(m.sum()))).values.mean() for i, m in enumerate(mask)])}
    H, hmask = _padded(h, bags)
    with torch.no_grad():
        out["attention"] = torch.sigmoid(head(H, hmask)[0]).double()
    return out


def best_threshold(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """The threshold with the best balanced accuracy (the middle one of ties) and that accuracy."""
    s = scores.double().unique()
    cand = torch.cat([s[:1] - 1e-6, (s[1:] + s[:-1]) / 2, s[-1:] + 1e-6])
    pos, neg = scores[labels], scores[~labels]
    tpr = (pos[None, :] >= cand[:, None]).double().mean(1)
    tnr = (neg[None, :] < cand[:, None]).double().mean(1)
    ba = (tpr + tnr) / 2
    best = torch.nonzero(ba >= ba.max() - 1e-12).flatten()
    i = int(best[len(best) // 2])
    return float(cand[i]), float(ba[i])


def _rates(scores: torch.Tensor, labels: torch.Tensor, t: float) -> dict[str, float]:
    call = scores >= t
    return {"accuracy": float((call == labels).double().mean()), "sensitivity": float(call[labels].double().mean()),
            "specificity": float((~call[~labels]).double().mean())}


def train_mil(model: nn.Module, fingerprint: str, *, positive: list[int], config: MilConfig | None = None,
              progress: Any = None) -> MilHead:
    """Train the gated-attention head deterministically (one CPU thread, seeded) on mosaic bags of the training tiles,
    calibrate the pooling thresholds on other training bags, and measure everything on bags of the held-out tiles."""
    import time

    from ..inputs.mosaic import STATEMENT, sources

    config = config or MilConfig()
    if config.min_side < 4 or config.max_side < config.min_side:
        raise MilError("bags need min_side >= 4 and max_side >= min_side")
    started, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_pool, held_pool = sources("native", "train"), sources("native", "held-out")
        p_tr, h_tr = _tile_features(model, train_pool, positive)
        p_ho, h_ho = _tile_features(model, held_pool, positive)
        torch.manual_seed(config.seed)
        head = GatedAttention(h_tr.shape[1], config.hidden)
        head.shift.copy_(h_tr.mean(0))
        head.scale.copy_(h_tr.std(0).clamp_min(1e-4))
        opt = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        bags, labels = mosaic_bags(train_pool, config.steps * config.bags_per_step, seed=config.seed, config=config)
        y_all = torch.as_tensor(labels, dtype=torch.float32)
        order = torch.randperm(len(bags), generator=torch.Generator().manual_seed(config.seed))
        for step in range(config.steps):
            pick = order[step * config.bags_per_step:(step + 1) * config.bags_per_step].tolist()
            H, mask = _padded(h_tr, [bags[i] for i in pick])
            logit, _ = head(H, mask)
            loss = nn.functional.binary_cross_entropy_with_logits(logit, y_all[pick])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if progress is not None:
                progress(step + 1, config.steps, loss.item())
        head.eval()
        cal_bags, cal_labels = mosaic_bags(train_pool, config.calibration_bags, seed=config.seed + 1, config=config)
        ho_bags, ho_labels = mosaic_bags(held_pool, config.calibration_bags, seed=config.seed + 2, config=config)
        cal_y, ho_y = torch.as_tensor(cal_labels), torch.as_tensor(ho_labels)
        cal = _bag_scores(p_tr, h_tr, cal_bags, head, config.top_k)
        thresholds, calibration = {"attention": 0.5}, {}
        for name in POOLING:
            thresholds[name], calibration[name] = best_threshold(cal[name], cal_y)
        calibration["attention"] = (_rates(cal["attention"], cal_y, 0.5)["sensitivity"] + _rates(cal["attention"], cal_y, 0.5)["specificity"]) / 2
        ho = _bag_scores(p_ho, h_ho, ho_bags, head, config.top_k)
        held = {name: _rates(ho[name], ho_y, thresholds[name]) for name in AGGREGATORS}
    finally:
        torch.set_num_threads(threads)
    card = {"architecture": ARCHITECTURE, "paper": "Ilse, Tomczak & Welling, Attention-based Deep Multiple Instance Learning, ICML 2018",
            "embedding": "the reference TileNet's pooled features (features + pool), standardised", "dim": h_tr.shape[1],
            "hidden": config.hidden, "config": dict(vars(config)), "tile_model_fingerprint": fingerprint,
            "statement": "Bags are mosaic slides (layouts drawn as by `medfool slide mosaic`): " + STATEMENT,
            "train_tiles": [s.tile.name for s in train_pool], "held_out_tiles": [s.tile.name for s in held_pool],
            "thresholds": thresholds, "top_k": config.top_k, "calibration_balanced_accuracy": calibration,
            "held_out_bags": {"bags": len(ho_bags), "tumour_bags": int(ho_y.sum()), **{k: v for k, v in held.items()}},
            "training_bags": len(bags), "training_seconds": round(time.perf_counter() - started, 2)}
    return MilHead(head, thresholds, card)


def save_mil(head: MilHead, folder: str | Path) -> dict[str, Any]:
    """Write ``mil-attention.safetensors``, its JSON card (with the weights' sha256) and ``MIL_CARD.md``."""
    import hashlib

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = head_bytes(head)
    (folder / MIL_WEIGHTS.name).write_bytes(data)
    card = {**head.card, "weights": MIL_WEIGHTS.name, "sha256": hashlib.sha256(data).hexdigest()}
    (folder / MIL_CARD.name).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (folder / "MIL_CARD.md").write_text(card_markdown(card), encoding="utf-8")
    return card


def card_markdown(card: dict[str, Any]) -> str:
    rows = "\n".join(f"| {name} | {card['thresholds'][name]:.4f} | {card['calibration_balanced_accuracy'][name]:.1%} | "
                     f"{card['held_out_bags'][name]['accuracy']:.1%} | {card['held_out_bags'][name]['sensitivity']:.1%} | "
                     f"{card['held_out_bags'][name]['specificity']:.1%} |" for name in AGGREGATORS)
    c = card["config"]
    return f"""# Attention-MIL head (reference slide aggregator)

A gated-attention pooling head (Ilse, Tomczak & Welling, ICML 2018) over the embeddings of a slide's tiles: the
reference TileNet's pooled features (`features` + `pool`, {card['dim']} numbers a tile), standardised. It calls a slide
tumour / not tumour. Written by `medfool slide train-mil` (deterministic: one CPU thread, seed {c['seed']}); weights
`{card['weights']}` (sha256 `{card['sha256']}`), card `mil-attention.json`.

**Data.** {card['statement']} Training: {card['training_bags']} bags ({c['steps']} steps of {c['bags_per_step']}) of
{c['min_side']}-{c['max_side']} cells a side with a glass border, every other bag with a tumour rectangle, drawn from the
{len(card['train_tiles'])} 224 px training-split tiles (the reference model's own training tiles). The pooling thresholds
(max, mean, top-{card['top_k']} mean of P(tumour)) are the balanced-accuracy optimum on {c['calibration_bags']} other
training bags; attention uses 0.5. Evaluation: {card['held_out_bags']['bags']} bags of the
{len(card['held_out_tiles'])} held-out tiles (only two held-out tumour tiles exist, so these figures are coarse). Specificity
on them is low because the tile model itself calls several held-out non-tumour tiles tumour (its held-out accuracy is
10/15) and a mosaic repeats each tile: every aggregator inherits the tile model's false positives.

| aggregator | threshold | calibration (balanced accuracy) | held-out bags: accuracy | sensitivity | specificity |
|---|---|---|---|---|---|
{rows}

It works only with the tile model whose embeddings it was trained on (fingerprint `{card['tile_model_fingerprint'][:16]}...`);
with other weights medfool reports the attention aggregator as unavailable. A demonstration of slide-level pooling on
compositions of real tiles, not a diagnostic model.
"""
