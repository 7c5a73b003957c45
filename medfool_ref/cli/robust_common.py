"""What ``medfool certify`` and ``medfool harden`` share: the model options (pins verified first), the tiles to
train on and the held-out tiles to measure on (never the same tiles), and the training checkpoint."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from .params import UsageError


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="reference", help="'reference' (default) or path/to/file.py:factory (your code, imported)")
    p.add_argument("--weights", help=".safetensors, or a state dict torch reads with weights_only=True")
    p.add_argument("--config", help="model.yaml (classes, tumour classes, input; optional sha256 pins, checked first)")
    p.add_argument("--data", default="sample", help="held-out tiles to measure on: a folder of class folders, a labels.csv, "
                                                    "or 'sample' (the shipped tiles' held-out split; default)")
    p.add_argument("--train-data", help="tiles to fine-tune on (default with --data sample: the sample tiles' training split)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", help="torch device (default: cuda when available)")
    p.add_argument("--resume", action="store_true", help="continue from the output folder (checkpoint and results store)")


def model_target(args: argparse.Namespace) -> Any:
    from .audit import _model_target

    for name in ("precision", "channels_last", "compile"):
        setattr(args, name, getattr(args, name, None) or ("float32" if name == "precision" else False))
    return _model_target(args)


def split_data(args: argparse.Namespace, classes: tuple[str, ...], need_train: bool) -> tuple[list[Any], list[Any]]:
    """(training items, held-out items); the held-out tiles must not be among the training tiles (by content hash)."""
    from ..campaign.plan import sample_split
    from ..inputs.datasets import DataError, load_dataset

    try:
        if args.data == "sample" and args.train_data is None:
            from ..inputs.samples import CLASSES

            if tuple(classes) != tuple(CLASSES):
                raise UsageError(f"--data sample is labelled {', '.join(CLASSES)}; the model's classes differ: give --data and --train-data")
            train, held = sample_split()
        else:
            held = load_dataset(args.data, classes).items
            train = load_dataset(args.train_data, classes).items if args.train_data else []
    except DataError as exc:
        raise UsageError(str(exc)) from None
    if need_train and not train:
        raise UsageError("fine-tuning needs tiles to train on: give --train-data (or --finetune-steps 0)")
    shared = {i.id for i in train} & {i.id for i in held}
    if shared:
        raise UsageError(f"{len(shared)} tile(s) of --data are also in --train-data: held-out figures need tiles the model "
                         "was not tuned on")
    return train, held


def data_hash(items: list[Any]) -> str:
    return hashlib.sha256("\n".join(sorted(i.id for i in items)).encode()).hexdigest()


class Checkpoint:
    """The training loop's state, saved to ``OUT/NAME.ckpt`` (read back with ``weights_only=True``) under a run key."""

    def __init__(self, out: Path, name: str, key: str) -> None:
        self.path, self.key = out / f"{name}.ckpt", key

    def __call__(self, step: int, state: dict[str, Any]) -> None:
        import torch

        tmp = self.path.with_suffix(".tmp")
        torch.save({"key": self.key, **state}, tmp)
        tmp.replace(self.path)  # atomic: a kill mid-write leaves the previous checkpoint

    def load(self) -> dict[str, Any] | None:
        import torch

        if not self.path.is_file():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        return state if state.get("key") == self.key else None


def run_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class Eta:
    """A progress line with the time left, estimated from the steps done so far (stderr, one line, overwritten)."""

    def __init__(self, label: str) -> None:
        import time

        self.label, self.start, self.first = label, time.perf_counter(), None
        self.time = time.perf_counter

    def __call__(self, step: int, total: int, loss: float = float("nan")) -> None:
        import sys

        if self.first is None:
            self.first = (step - 1, self.time())
        done = step - self.first[0]
        elapsed = self.time() - self.first[1]
        left = elapsed / max(done, 1) * (total - step)
        if sys.stderr.isatty() or step == total or step % 25 == 0:
            print(f"\r{self.label}: step {step}/{total}, loss {loss:.3f}, about {left:.0f} s left   ", end="" if step < total else "\n",
                  file=sys.stderr, flush=True)
