"""Data items and campaign units, and the key that names a unit's result.

A unit is one attack with one set of parameters (one budget) on one batch of data items. Units
are plain, picklable values: an engine can send them to another process or machine, where the
items are read from their paths. A unit's key is a hash of everything its result depends on:
the target model's weights, the items' contents, the attack, its parameters (seed included),
the executor's options, medfool's version and a hash of the code that runs attacks, so a
result found under a key can be reused (``--resume``) and a changed input never matches.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .. import __version__
from ..inputs.items import Item, file_item

__all__ = ["Item", "Unit", "file_item", "keyed", "unit_key"]


@dataclass(frozen=True)
class Unit:
    """One attack, one parameter set, one batch of items (``support``: the training tiles of a universal attack)."""

    attack: str
    params: tuple[tuple[str, Any], ...]
    items: tuple[Item, ...] = ()
    support: tuple[Item, ...] = ()
    target: int | None = None
    options: tuple[tuple[str, Any], ...] = ()  # executor options that change the result (e.g. transformation draws)
    keep_images: bool = False  # store the adversarial images too (does not change the result)
    label: str = ""  # which campaign entry the unit belongs to (e.g. "area=10%")
    key: str = field(default="", compare=False)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def opts(self) -> dict[str, Any]:
        return dict(self.options)


def _canonical(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        return float.hex(value)  # exact: 8/255 and 0.0313725... are told apart, the same float always matches
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    return value


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 over the source of the code that runs attacks (``attacks/``, ``campaign/execute.py``, the training loop)."""
    root = Path(__file__).resolve().parents[1]
    files = sorted(root.glob("attacks/*.py")) + [root / "campaign" / "execute.py", root / "training" / "loop.py"]
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def unit_key(unit: Unit, model_fingerprint: str) -> str:
    doc = {
        "medfool": __version__, "code": code_fingerprint(), "model": model_fingerprint, "attack": unit.attack,
        "params": _canonical(dict(unit.params)), "items": [i.id for i in unit.items], "support": [i.id for i in unit.support],
        "target": unit.target, "labels": [i.label for i in unit.items], "support_labels": [i.label for i in unit.support], "options": _canonical(dict(unit.options)),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def keyed(unit: Unit, model_fingerprint: str) -> Unit:
    from dataclasses import replace

    return replace(unit, key=unit_key(unit, model_fingerprint))
