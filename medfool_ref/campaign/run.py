"""The campaign driver: key the units, skip finished ones on resume, run the rest, write each to the store."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

from .. import __version__
from ..targets.target import Target
from .engine import Engine, LocalEngine
from .outcome import UnitFailure, UnitOutcome
from .store import ResultsStore
from .units import Unit, code_fingerprint, keyed


@dataclass
class CampaignRun:
    keys: list[str]  # every unit's key, in plan order (duplicates removed)
    ran: int = 0
    skipped: int = 0
    failures: list[UnitFailure] = field(default_factory=list)


def progress_bar(total: int, label: str, enabled: bool = True) -> Any:
    """One bar over units (tqdm), quiet when standard error is not a terminal."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, unit="unit", disable=not enabled or not sys.stderr.isatty(), leave=False)


def prepare_units(units: Sequence[Unit], target: Target) -> list[Unit]:
    """Key every unit with the target's fingerprint; a unit planned twice is run once."""
    seen: dict[str, Unit] = {}
    for u in units:
        k = keyed(u, target.run_fingerprint)
        seen.setdefault(k.key, k)
    return list(seen.values())


def run_campaign(units: Sequence[Unit], target: Target, store: ResultsStore, *, engine: Engine | None = None,
                 resume: bool = False, progress: bool = True, label: str = "campaign", meta: dict[str, Any] | None = None
                 ) -> CampaignRun:
    """Run ``units`` on ``target`` with ``engine`` (local by default), writing each outcome to ``store`` as it arrives."""
    engine = engine or LocalEngine()
    planned = prepare_units(units, target)
    done = store.done_keys() if resume else set()
    todo = [u for u in planned if u.key not in done]
    run = CampaignRun([u.key for u in planned], skipped=len(planned) - len(todo))
    held: list[UnitFailure] = []  # refused units are written only once the campaign has something to keep

    def write(outcome: UnitOutcome | UnitFailure) -> None:
        if not store.exists:
            store.set_meta(medfool=__version__, code=code_fingerprint(), target=target.name, model_fingerprint=target.fingerprint,
                           precision=target.precision, channels_last=target.channels_last, compiled=target.compiled,
                           classes=list(target.classes), engine=engine.name, machine=f"{platform.machine()} {platform.system()}",
                           **(meta or {}))
        store.put(outcome)

    bar = progress_bar(len(todo), label, progress)
    try:
        for outcome in engine.run(todo, target):
            if isinstance(outcome, UnitFailure):
                run.failures.append(outcome)
                if outcome.kind == "invalid" and not store.exists:
                    held.append(outcome)
                else:
                    write(outcome)
            else:
                run.ran += 1
                for f in held:
                    write(f)
                held.clear()
                write(outcome)
            bar.update(1)
    finally:
        bar.close()
    return run
