"""A rate with its uncertainty: the Wilson score interval (Wilson 1927), 95% by default.

Standard library only, so the reports, the site and the command line share it without torch. A figure
that rests on fewer than ``FEW`` tiles is flagged: its interval is wide and its rate says little.
"""

from __future__ import annotations

import math
from typing import Any

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal
FEW = 20  # fewer tiles than this: the figure is marked as resting on few tiles


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval for ``k`` successes in ``n`` trials (None when n is 0)."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson: need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return None
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def interval(k: int, n: int) -> dict[str, Any]:
    """``{"k", "n", "lo", "hi", "few"}``: what report.json stores beside a rate."""
    lo_hi = wilson(k, n)
    return {"k": k, "n": n, "lo": None if lo_hi is None else lo_hi[0], "hi": None if lo_hi is None else lo_hi[1], "few": n < FEW}


def from_rate(rate: float | None, n: int) -> dict[str, Any] | None:
    """The interval of a rate stored as a fraction of ``n`` tiles (the count recovered by rounding)."""
    if rate is None or not n or not math.isfinite(rate):
        return None
    return interval(int(round(rate * n)), n)


def fmt(k: int, n: int, digits: int = 1) -> str:
    """``"92.3% (60/65, 95% CI 83.2-97.3%)"``, with ``"; fewer than 20 tiles"`` where it applies."""
    if n == 0:
        return "n/a (0 tiles)"
    lo, hi = wilson(k, n)  # type: ignore[misc]
    few = f"; fewer than {FEW} tiles" if n < FEW else ""
    return f"{k / n:.{digits}%} ({k}/{n}, 95% CI {lo * 100:.{digits}f}-{hi:.{digits}%}{few})"


def fmt_ci(ci: dict[str, Any] | None, digits: int = 1) -> str:
    """The same text from a stored interval (``interval``'s dict); "n/a" without one."""
    return "n/a" if not ci else fmt(int(ci["k"]), int(ci["n"]), digits)
