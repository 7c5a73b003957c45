"""How the gradient passes of an audit run: float32 (the default), bfloat16 autocast, channels-last memory.

Mixed precision (Micikevicius et al., "Mixed precision training", ICLR 2018) in its bfloat16 form:
:class:`Precision` runs the wrapped model under ``torch.autocast`` only while autograd records, that is in
the forward passes an attack differentiates; every pass without gradients (the clean pass, the attacks'
final checks, the scoring of each adversarial in float and on the 8-bit grid) runs in float32. So a
bf16 audit crafts its adversarials with cheaper gradients and judges every one of them on the float32
model: a success it reports is a success of the model as deployed. Logits leave the wrapper in float32.
The wrapper is flagged ``approximate_gradients``: PGD and APGD then confirm a sample's early stop with a
float32 pass before freezing it (without that, tiles frozen on a bf16 success the float32 model refuses were
lost: on the benchmark ResNet-50, 10 points of success).

Channels-last stores images and convolution weights as (N, H, W, C), which oneDNN and cuDNN convolve
faster; it changes nothing for a model without 4-D convolutions but the copy. ``compiled`` runs the model through
``torch.compile`` (inductor): its kernels round differently from eager ones, so its results are filed apart too.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import replace

import torch
from torch import nn

PRECISIONS = ("float32", "bf16")


class Precision(nn.Module):
    """``model`` with its differentiated forward passes under bf16 autocast and/or its inputs in channels-last."""

    def __init__(self, model: nn.Module, *, precision: str = "float32", channels_last: bool = False, compiled: bool = False) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        if channels_last:  # a copy: Module.to works in place, and the caller's module must stay as it was
            model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        self.inner = torch.compile(model) if compiled else model
        self.precision = precision
        self.channels_last = channels_last
        self.compiled = compiled
        # the attacks confirm an early stop with a pass without gradients (float32) before freezing a sample
        self.approximate_gradients = precision != "float32"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.precision == "float32" or not torch.is_grad_enabled():
            return self.inner(x)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = self.inner(x)
        return out.float()


def mode_name(precision: str, channels_last: bool, compiled: bool = False) -> str:
    return precision + ("+channels-last" if channels_last else "") + ("+compiled" if compiled else "")


def run_fingerprint(weights: str, precision: str, channels_last: bool, compiled: bool = False) -> str:
    """The key units are filed under: the weights' hash alone in plain float32, else the hash with the mode (never mixed up)."""
    if precision == "float32" and not channels_last and not compiled:
        return weights
    return hashlib.sha256(f"{weights}|{mode_name(precision, channels_last, compiled)}".encode()).hexdigest()


def check_precision(precision: str, device: torch.device) -> None:
    """A clear refusal where bf16 cannot run (a GPU without bfloat16 support)."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--precision bf16: {torch.cuda.get_device_name(device)} does not support bfloat16; use float32")


def with_precision(target, precision: str = "float32", channels_last: bool = False, compiled: bool = False):  # type: ignore[no-untyped-def]
    """``target`` whose model runs in ``precision`` (channels-last, compiled); its weights' fingerprint is unchanged."""
    check_precision(precision, target.device)
    if compiled and target.device.type == "cpu":
        import shutil

        if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
            raise ValueError("--compile: torch.compile builds its CPU kernels with a C++ compiler, and none was found "
                             "(install g++, or audit without --compile)")
    if precision == "float32" and not channels_last and not compiled:
        return target
    if target.precision != "float32" or target.channels_last or target.compiled:
        raise ValueError("the target already has a precision mode")
    target.model = Precision(target.model, precision=precision, channels_last=channels_last, compiled=compiled)
    target.precision, target.channels_last, target.compiled = precision, channels_last, compiled
    if target.spec is not None:
        target.spec = replace(target.spec, precision=precision, channels_last=channels_last, compiled=compiled)
    return target
