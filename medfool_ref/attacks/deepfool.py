"""DeepFool: Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method to fool
deep neural networks", CVPR 2016.

Each iteration linearises the classifier at the current point and steps onto the nearest
boundary of that linear model. The gradients of all candidate classes come from one batched
backward (``is_grads_batched``); a two-class model needs a single gradient. As in the paper the
overshoot scales the accumulated perturbation, x_adv = x + (1 + overshoot) * r_total. Samples
leave the active set as soon as they are fooled, and the whole batch is checked once more at the
end. The paper's robustness measure, the mean of ||r||_2 / ||x||_2 over fooled samples, is
reported as ``rho``.

A minimal perturbation sits on the boundary, so rounding it to 8 bits (saving it as a PNG) often
undoes it. With ``round_to_8bit`` (the default) the result is an 8-bit image: where the rounded
solution no longer fools, the perturbation is scaled up by the smallest factor found on a batched
geometric search that makes its rounding fool; ``l2_unrounded`` keeps the float solution's norm
(the extra norm is the price of a savable tile). ``round_to_8bit=False`` returns the float solution.

The batched backward holds one gradient per candidate class at once: about k times the activation memory of one
backward. ``class_chunk`` bounds it, taking the class gradients that many at a time over the same graph (the same
result, one backward call per chunk). Left unset, the chunk is chosen per iteration: all k classes when k times the
bytes the forward saved for the backward fit ``memory_budget_mb`` (default: half the device's free memory, read at
the call), else the most that fit (at least one); ``extra["class_chunk"]`` reports the smallest chunk used.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from ._core import AttackResult, Progress, check_classes, check_int, check_positive, finish, prepare, scale_onto_grid


def deepfool(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
             overshoot: float = 0.02, max_iter: int = 50, candidates: int | None = None, round_to_8bit: bool = True,
             class_chunk: int | None = None, memory_budget_mb: float | None = None, progress: Progress | None = None) -> AttackResult:
    """Untargeted minimal-L2 DeepFool. ``candidates`` limits the classes considered to the top ones of the clean logits."""
    check_positive("overshoot", overshoot, upper=1.0, allow_zero=True)
    check_int("max_iter", max_iter, low=1, high=10_000)
    started = time.perf_counter()
    counted, x, y, _, logits0, _ = prepare(model, images, labels, None, lazy_clean=True)
    first_bytes: float | None = None
    if logits0 is None:  # labels given: the first step's forward (at the clean tiles) is the clean pass
        xa0 = x.clone().requires_grad_(True)
        first, first_bytes = _forward_measured(counted, xa0)
        check_classes(first, y, None)
        logits0 = first.detach()
    else:
        xa0 = first = None
    n_classes = logits0.shape[1]
    if candidates is not None:
        check_int("candidates", candidates, low=2, high=n_classes)
    k = candidates or n_classes
    if class_chunk is not None:
        check_int("class_chunk", class_chunk, low=1, high=n_classes)
    if memory_budget_mb is not None:
        check_positive("memory_budget_mb", memory_budget_mb)
    budget = memory_budget_mb * 2**20 if memory_budget_mb is not None else _free_bytes(x.device) / 2
    per_sample: float | None = None  # bytes the forward saves for the backward, per sample (measured once)
    smallest = k
    # candidate classes per sample: the label first, then the top others by clean logit
    order = logits0.clone()
    order.scatter_(1, y[:, None], float("inf"))
    cand = order.argsort(dim=1, descending=True)[:, :k]  # (B, k), column 0 is the label
    r_total = torch.zeros_like(x)
    adv = x.clone()
    confirmed_logits: torch.Tensor | None = None
    active = torch.arange(x.shape[0], device=x.device)
    iterations = 0
    eye = torch.eye(k, device=x.device)
    for i in range(max_iter):
        if first is not None and xa0 is not None:  # the clean pass made above, with its graph
            xa, logits, first, per_sample = xa0, first, None, first_bytes
        elif class_chunk is None and k > 2 and per_sample is None:
            xa = adv[active].clone().requires_grad_(True)
            logits, per_sample = _forward_measured(counted, xa)
        else:
            xa = adv[active].clone().requires_grad_(True)
            logits = counted(xa)
        still = logits.argmax(1) == y[active]
        if not bool(still.any()):
            # confirm on the whole batch, as the result is judged: limited precision (TF32 convolutions on
            # GPUs, another batch composition) can leave a sample on the boundary; it gets the overshoot again
            with torch.no_grad():
                final = counted(adv)
            unfooled = (final.argmax(1) == y).nonzero().squeeze(1)
            if unfooled.numel() == 0:
                confirmed_logits = final  # the whole batch's scores, kept for the result (score once)
                break
            r_total[unfooled] *= 1 + overshoot
            adv[unfooled] = (x[unfooled] + (1 + overshoot) * r_total[unfooled]).clamp(0, 1)
            active = unfooled
            continue
        iterations = i + 1
        logits, active_c = logits[still], cand[active[still]]
        sub = logits.gather(1, active_c)  # (A, k): label logit first
        if k == 2:
            diff = sub[:, 1] - sub[:, 0]
            g = counted.grad(diff.sum(), xa)[still]
            w = g[:, None]  # (A, 1, C, H, W)
            f = diff[:, None]
        else:
            chunk = class_chunk or _fitting_chunk(k, budget, (per_sample or 0.0) * int(still.sum()))
            smallest = min(smallest, chunk)
            parts = []
            for lo in range(0, k, chunk):  # one backward row per candidate class, ``chunk`` rows per call
                hi = min(k, lo + chunk)
                seeds = eye[lo:hi, None, :].expand(hi - lo, sub.shape[0], k).contiguous()
                parts.append(counted.grad(sub, xa, grad_outputs=seeds, is_grads_batched=True, retain_graph=hi < k)[:, still])
            grads = (parts[0] if len(parts) == 1 else torch.cat(parts)).transpose(0, 1)  # (A, k, C, H, W)
            w = grads[:, 1:] - grads[:, :1]
            f = sub[:, 1:] - sub[:, :1]
        w_norm = w.flatten(2).norm(dim=2).clamp_min(1e-12)  # (A, k-1)
        dist = f.abs().detach() / w_norm
        best = dist.argmin(dim=1)
        rows = torch.arange(best.numel(), device=x.device)
        scale = (f.abs().detach()[rows, best] + 1e-4) / w_norm[rows, best] ** 2
        r_i = scale.view(-1, 1, 1, 1) * w[rows, best].detach()
        idx = active[still]
        r_total[idx] += r_i
        adv[idx] = (x[idx] + (1 + overshoot) * r_total[idx]).clamp(0, 1)
        active = idx
        if progress is not None:
            progress(i + 1, max_iter)
    l2_float = (adv - x).flatten(1).norm(dim=1)
    scale = grid_ok = None
    if round_to_8bit:
        adv, grid_ok, scale = scale_onto_grid(counted, x, adv - x, y, None)
    result = finish("deepfool", counted, x, adv, y, None, logits0, iterations, started,
                    {"overshoot": overshoot, "max_iter": max_iter, "candidates": k, "round_to_8bit": round_to_8bit})
    if confirmed_logits is not None and not round_to_8bit:
        result.set_scores(confirmed_logits.float().softmax(1))
    ok = grid_ok if grid_ok is not None else result.success  # the grid search already scored the rounded adversarials
    if scale is not None:
        result.extra["l2_unrounded"] = l2_float
        result.extra["grid_scale"] = scale
    result.extra["class_chunk"] = class_chunk or smallest
    x_norm = x.flatten(1).norm(dim=1).clamp_min(1e-12)
    rho = result.l2 / x_norm
    result.extra["rho_mean"] = float(rho[ok].mean()) if bool(ok.any()) else None
    result.extra["rho_median"] = float(rho[ok].median()) if bool(ok.any()) else None
    result.extra["rho"] = rho
    return result



def _forward_measured(counted: nn.Module, xa: torch.Tensor) -> tuple[torch.Tensor, float]:
    """A forward pass with the bytes it saves for the backward, per sample (what one more class gradient costs)."""
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = counted(xa)
    return logits, saved[0] / max(1, xa.shape[0])


def _fitting_chunk(k: int, budget: float, bytes_per_class: float) -> int:
    """All ``k`` class gradients at once when they fit the budget, else as many as fit (at least one)."""
    if bytes_per_class <= 0 or k * bytes_per_class <= budget:
        return k
    return max(1, min(k, int(budget // bytes_per_class)))


def _free_bytes(device: torch.device) -> float:
    """Free memory of ``device``: the CUDA allocator's view, or the system's available memory (Linux); inf if unknown."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")
