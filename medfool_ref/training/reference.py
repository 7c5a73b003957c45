"""``medfool model train``: the committed, deterministic recipe for the shipped reference model.

Writes ``tilenet.safetensors``, ``tilenet.json`` (the card's numbers, the weights' sha256) and
``MODEL_CARD.md``. Depends on torch, numpy and Pillow only.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from ..inputs.samples import CLASS_NAMES, CLASSES, KATHER2016_MAP, sample_tiles, split
from ..targets.reference import MODEL_DIR, save_model, sha256_of
from ..targets.tilenet import ARCHITECTURE
from .loop import TrainConfig, crop_bank, evaluate, train

CARD_JSON = "tilenet.json"


def train_reference(out_dir: Path = MODEL_DIR, config: TrainConfig | None = None,
                    progress: Callable[[int, int, float], None] | None = None) -> dict[str, object]:
    config = config or TrainConfig()
    torch.use_deterministic_algorithms(True)
    tiles = sample_tiles()
    train_tiles, held_out = split(tiles)
    bank = crop_bank(train_tiles, crop=config.crop)
    started = time.perf_counter()
    model = train(bank, config, device="cpu", progress=progress)
    seconds = time.perf_counter() - started
    held = evaluate(model, held_out)
    seen = evaluate(model, train_tiles)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / "tilenet.safetensors"
    save_model(model, weights, {"width": config.width})
    card = {
        "architecture": ARCHITECTURE,
        "classes": list(CLASSES),
        "tumour_class": "TUM",
        "weights": weights.name,
        "sha256": sha256_of(weights),
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": config.as_dict(),
        "train_tiles": [t.name for t in train_tiles],
        "held_out_tiles": [t.name for t in held_out],
        "crops_per_train_tile": int(bank.images.shape[0] // len(train_tiles)),
        "held_out": held,
        "train": {k: seen[k] for k in ("tiles", "accuracy", "correct")},
        "training_seconds": round(seconds, 1),
        "trained_on": f"{platform.machine()} CPU, torch {torch.__version__}",
    }
    (out_dir / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (out_dir / "MODEL_CARD.md").write_text(model_card(card), encoding="utf-8")
    return card


def model_card(card: dict) -> str:
    held = card["held_out"]
    cfg = card["config"]
    mapping = ", ".join(f"{k[3:]}->{v}" for k, v in KATHER2016_MAP.items())
    pairs = "\n".join(f"| {name} | {truth} | {pred} |" for name, truth, pred in
                      zip(card["held_out_tiles"], held["truth"], held["predictions"]))
    classes = ", ".join(f"{c} ({CLASS_NAMES[c]})" for c in card["classes"])
    return f"""# Model card: medfool reference tile classifier (`{card['architecture']}`)

**Purpose.** A small, real pathology tile classifier for running and testing medfool's reference
attacks. It is *not* a diagnostic model: it was trained on 50 tiles.

**Task.** Tissue type of a colorectal H&E tile, {len(card['classes'])} classes: {classes}.
The tumour-versus-rest decision is explicit: the tile is called tumour when `TUM` has the highest
probability (`TileClassifier.tumour_probability` gives P(TUM)).

**Data.** The 65 real H&E tiles shipped in `medfool_ref/data/tiles/` (Kather et al. 2016 texture tiles,
CRC-VAL-HE-7K and NCT-CRC-HE-100K samples, all CC BY 4.0; attribution in each folder's PROVENANCE.md).
Kather 2016 labels are mapped onto the NCT scheme: {mapping}.

**Split, by tile.** Within each class, every fourth tile in set/file order is held out:
{len(card['train_tiles'])} training tiles, {len(card['held_out_tiles'])} held-out tiles. Training uses
{card['crops_per_train_tile']} overlapping {cfg['crop']} px crops per training tile, class-balanced sampling,
random flips and 90-degree rotations, and brightness/contrast/saturation jitter of ±{cfg['colour_jitter']}.
Evaluation uses whole tiles (150 or 224 px; the network is fully convolutional).

**Training.** `medfool model train` (seed {cfg['seed']}, {cfg['steps']} AdamW steps of {cfg['batch_size']} crops,
one-cycle learning rate up to {cfg['lr']}, weight decay {cfg['weight_decay']}, width {cfg['width']};
{card['parameters']:,} parameters); {card['training_seconds']} s on {card['trained_on']}. Deterministic on a
given machine and torch build.

**Held-out accuracy: {held['correct']}/{held['tiles']} tiles = {held['accuracy']:.1%}.** Tumour sensitivity
{held['tumour_sensitivity']:.0%} (of {held['truth'].count('TUM')} held-out tumour tiles), {held['tumour_false_positives']}
non-tumour tile(s) called tumour. Training tiles: {card['train']['correct']}/{card['train']['tiles']}.
With 15 held-out tiles these figures are coarse (one tile is {1 / held['tiles']:.1%}); the model overfits its
training tiles. It is good enough to show that attacks flip real decisions, and no more.

| held-out tile | truth | prediction |
|---|---|---|
{pairs}

**Weights.** `{card['weights']}` (safetensors, sha256 `{card['sha256']}`), with the normalisation
(mean/std of the training crops) inside the model: inputs are RGB in [0, 1].

**Loading other models.** `medfool_ref.targets.reference.load_model` loads only this architecture from
`.safetensors` files and refuses pickled `.pt`/`.pth` files. Any other `torch.nn.Module` that maps
[0, 1] RGB batches to logits can be passed to the attack functions from Python.
"""
