"""Engines run units and hand back their outcomes as they finish; the driver writes them to the store.

The interface is one method, ``run(units, target)``, yielding a :class:`UnitOutcome` or a
:class:`UnitFailure` per unit, in any order. The local engine (the default) runs units one after
another in this process, on the target's device. Another engine (a cluster) only has to honour
the same method: callers never change.
"""

from __future__ import annotations

import traceback
from typing import Callable, Iterator, Protocol, Sequence

from ..targets.target import Target
from .execute import execute
from .outcome import UnitFailure, UnitOutcome
from .units import Unit

Outcome = UnitOutcome | UnitFailure


class Engine(Protocol):
    name: str

    def run(self, units: Sequence[Unit], target: Target) -> Iterator[Outcome]: ...


def failure(unit: Unit, exc: BaseException) -> UnitFailure:
    """A unit that raised: a ValueError is a refused input or parameter, anything else an error (with its traceback)."""
    if isinstance(exc, ValueError):
        return UnitFailure(unit.key, unit.attack, unit.label, unit.kwargs, str(exc), "invalid")
    detail = "".join(traceback.format_exception(exc)).strip()
    return UnitFailure(unit.key, unit.attack, unit.label, unit.kwargs, f"{type(exc).__name__}: {exc}\n{detail}", "error")


class LocalEngine:
    """Runs units in this process, one after another, on the target's device."""

    name = "local"

    def __init__(self, *, inner_progress: Callable[[Unit], Callable[..., None] | None] | None = None) -> None:
        self.inner_progress = inner_progress  # a per-unit progress callback for long single units (training, evolution)

    def run(self, units: Sequence[Unit], target: Target) -> Iterator[Outcome]:
        for unit in units:
            progress = self.inner_progress(unit) if self.inner_progress else None
            try:
                yield execute(unit, target, progress=progress)
            except Exception as exc:  # noqa: BLE001 - recorded as the unit's failure; the campaign goes on
                yield failure(unit, exc)
            finally:
                close = getattr(progress, "close", None)
                if close is not None:
                    close()
