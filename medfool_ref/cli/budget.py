"""What ``medfool attack NAME --tile T`` runs by default, and how long it should take before it starts.

The attack functions keep their papers' budgets as their own defaults (the Python API and ``--preset paper``).
On the command line, a newcomer's first run should finish in about a minute on 2 CPU cores, so the attacks whose
paper budget takes longer get a smaller default here (``QUICK``), stated in the report's params. Before a run,
the planned model passes (from the attack's parameters) times a timed forward and forward+backward pass on the
tile give an estimate, printed when the plan is long.
"""

from __future__ import annotations

import time
from typing import Any, Callable

PRESETS = ("quick", "paper")
# attack -> the single-tile command's default where the paper's budget takes more than about a minute on 2 cores:
# one-pixel 400 x 100 is 40,400 queries a tile (Su et al. 2019); fooling images 24 x 200 per class (Nguyen et al. 2015)
QUICK: dict[str, dict[str, Any]] = {
    "one-pixel": {"population": 100, "generations": 10},
    "fooling-images": {"generations": 40},
    "patch": {"steps": 30},
}
LONG_PASSES = 200  # a plan with at least this many model passes prints its estimate first
CLASSES = 9


def preset_params(name: str, preset: str, user: dict[str, Any]) -> dict[str, Any]:
    """The parameters a run uses: the preset's, overridden by the user's ``--set`` values."""
    return {**(QUICK.get(name, {}) if preset == "quick" else {}), **user}


def planned_passes(name: str, params: dict[str, Any], defaults: dict[str, Any], tiles: int = 1) -> tuple[int, int] | None:
    """(forward images, forward+backward images) an attack plans at most on ``tiles`` tiles; None for an attack this
    table does not know (its run is not estimated)."""
    p = {**defaults, **params}
    g = lambda k: int(p.get(k) or 0)  # noqa: E731
    plans: dict[str, Callable[[], tuple[int, int]]] = {
        "fgsm": lambda: (0, 1),
        "pgd": lambda: (0, g("steps")),
        "apgd": lambda: (0, g("steps") * max(g("targets"), 1)),
        "deepfool": lambda: (0, g("max_iter") * min(g("candidates") or CLASSES, CLASSES)),
        "eot": lambda: (g("eval_draws"), g("steps") * g("samples")),
        "one-pixel": lambda: (g("population") * (g("generations") + 1), 0),
        "patch": lambda: (65 + g("eval_draws"), g("steps") * 16),  # the sample tiles' clean pass, 16 training tiles
        "fooling-images": lambda: (g("population") * g("generations") * CLASSES, 0),
    }
    if name not in plans:
        return None
    f, fb = plans[name]()
    return f * tiles, fb * tiles


def timed_passes(model: Any, x: Any, repeats: int = 3) -> tuple[float, float]:
    """Seconds of one forward pass and of one forward+backward pass of ``model`` on the batch ``x`` (after a warm-up)."""
    import torch

    with torch.no_grad():
        model(x)
        started = time.perf_counter()
        for _ in range(repeats):
            model(x)
        forward = (time.perf_counter() - started) / repeats
    xg = x.clone().requires_grad_(True)
    started = time.perf_counter()
    for _ in range(repeats):
        model(xg).float().logsumexp(1).sum().backward()
    return forward, (time.perf_counter() - started) / repeats


def estimate_text(name: str, passes: tuple[int, int], seconds: tuple[float, float], preset: str) -> str:
    f, fb = passes
    total = f * seconds[0] + fb * seconds[1]
    when = f"{total:.0f} s" if total < 120 else f"{total / 60:.0f} min"
    hint = " (the paper's budget; the default --preset quick is shorter)" if preset == "paper" and name in QUICK else \
        " (--preset paper: the paper's budget)" if name in QUICK else ""
    return (f"estimate: at most about {when} for {name}{hint}: {f:,} forward and {fb:,} forward+backward passes, "
            f"timed here at {seconds[0] * 1000:.0f} ms and {seconds[1] * 1000:.0f} ms")
