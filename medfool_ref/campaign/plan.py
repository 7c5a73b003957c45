"""Planning: a target x a data source x attacks x budgets, cut into units.

Tiles are grouped by size (a unit's batch must stack) in the order they come, then cut into
batches of at most ``batch_size``. Parameters are resolved against the attack's spec: unknown
names are refused, every default is filled in (so a unit's key says exactly what ran) and
non-finite numbers are refused. Depends on the standard library and Pillow only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from PIL import Image

from ..registry import AttackSpec
from ..registry import spec as spec_of
from .units import Item, Unit, file_item

PREDICT_BATCH = 64


class PlanError(ValueError):
    """A campaign that cannot be planned as asked: the message says why."""


def sample_items() -> list[Item]:
    """The shipped sample tiles as items, labelled in the reference model's class scheme."""
    from ..inputs.samples import sample_tiles

    return [file_item(t.path, label=t.index, name=t.name) for t in sample_tiles()]


def tile_size(item: Item) -> tuple[int, int]:
    if item.region is not None:  # a slide's tile is read at its output side
        return item.region[-1], item.region[-1]
    with Image.open(item.path) as im:
        return im.size


def by_size(items: Iterable[Item]) -> list[list[Item]]:
    """Items grouped by image size, groups and members in the order first seen."""
    groups: dict[tuple[int, int], list[Item]] = {}
    for it in items:
        groups.setdefault(tile_size(it), []).append(it)
    return list(groups.values())


def batches(items: Sequence[Item], batch_size: int) -> list[tuple[Item, ...]]:
    if batch_size < 1:
        raise PlanError(f"batch size must be >= 1; got {batch_size}")
    out: list[tuple[Item, ...]] = []
    for group in by_size(items):
        out += [tuple(group[i:i + batch_size]) for i in range(0, len(group), batch_size)]
    return out


def resolve_params(s: AttackSpec, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every parameter of the attack with its default, overridden where given."""
    known = s.parameters()
    given = dict(overrides or {})
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise PlanError(f"{s.name}: unknown parameter(s) {', '.join(unknown)}; it takes {', '.join(sorted(known))}")
    out = {name: p.default for name, p in known.items()}
    out.update(given)
    for name, value in out.items():
        for v in (value if isinstance(value, (tuple, list)) else (value,)):
            if isinstance(v, float) and not math.isfinite(v):
                raise PlanError(f"{s.name}: {name}={v} is not a finite number")
    return out


def _frozen(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))


def predict_units(items: Sequence[Item], batch_size: int = PREDICT_BATCH) -> list[Unit]:
    from .execute import PREDICT

    return [Unit(PREDICT, (), b, label="clean") for b in batches(items, batch_size)]


def tile_units(attack: str, items: Sequence[Item], *, params: Mapping[str, Any] | None = None, target: int | None = None,
               batch_size: int = 64, options: Mapping[str, Any] | None = None, keep_images: bool = False,
               label: str = "") -> list[Unit]:
    """Units of a tile attack (inputs "tiles") over ``items``."""
    s = spec_of(attack)
    if s.inputs != "tiles":
        raise PlanError(f"{attack} does not attack tiles one batch at a time (its inputs: {s.inputs})")
    _check_target(s, target)
    p = _frozen(resolve_params(s, params))
    opts = _frozen(options or {})
    return [Unit(attack, p, b, target=target, options=opts, keep_images=keep_images, label=label)
            for b in batches(items, batch_size)]


def patch_units(items: Sequence[Item], support: Sequence[Item], *, params: Mapping[str, Any] | None = None, target: int,
                batch_size: int = 64, keep_images: bool = False, label: str = "") -> list[Unit]:
    """A universal patch trained on ``support`` (or read from ``params['patch_file']``) and applied to ``items``."""
    s = spec_of("patch")
    _check_target(s, target)
    resolved = resolve_params(s, params)
    patch_file = resolved.pop("patch_file", None)
    options: dict[str, Any] = {}
    if patch_file is not None:
        path = Path(str(patch_file))
        if not path.is_file():
            raise PlanError(f"patch_file {patch_file}: no such file")
        support, options = [file_item(path)], {"support_role": "patch"}
    elif not support:
        raise PlanError("a universal patch needs tiles to train on")
    p, sup, opts = _frozen(resolved), tuple(support), _frozen(options)
    if not items:
        return [Unit("patch", p, (), sup, target, opts, keep_images, label)]
    return [Unit("patch", p, b, sup, target, opts, keep_images, label) for b in batches(items, batch_size)]


# universal patterns (run by campaign/universal.py)
UNIVERSAL = ("uap", "common-noise", "utap")


def universal_units(attack: str, items: Sequence[Item], support: Sequence[Item], *, params: dict[str, Any] | None = None,
                    target: int | None = None, batch_size: int = 64, keep_images: bool = False, label: str = "") -> list[Unit]:
    """Units of a universal attack: the pattern computed on ``support`` (one tile size), scored on ``items``."""
    s = spec_of(attack)
    if attack not in UNIVERSAL:
        raise PlanError(f"{attack} is not a universal-pattern attack")
    _check_target(s, target)
    if not support:
        raise PlanError(f"{attack} needs support tiles to compute its pattern on")
    overlap = {i.id for i in support} & {i.id for i in items}
    if overlap:
        raise PlanError(f"{attack}: {len(overlap)} tile(s) are both support and scored; a universal pattern is measured on other tiles")
    p, sup = _frozen(resolve_params(s, params)), tuple(support)
    return [Unit(attack, p, b, sup, target, (), keep_images, label) for b in batches(items, batch_size)]


def showcase_split(groups: list[list[Item]], goal: int | None, support: int) -> tuple[list[Item], list[Item]]:
    """Support: every other tile of the largest size group (not of the target class), at most ``support``;
    scored: every other such tile of every group."""
    big = max(groups, key=len)
    chosen = [i for i in big if i.label != goal][0::2][:support]
    ids = {i.id for i in chosen}
    return chosen, [i for g in groups for i in g if i.label != goal and i.id not in ids]


def fooling_unit(*, params: Mapping[str, Any] | None = None, target: int | None = None, label: str = "") -> Unit:
    s = spec_of("fooling-images")
    return Unit(s.name, _frozen(resolve_params(s, params)), target=target, label=label)


def training_unit(attack: str, train: Sequence[Item], held_out: Sequence[Item], *, params: Mapping[str, Any] | None = None,
                  target: int | None = None, label: str = "") -> Unit:
    """A training-time attack: trained on ``train`` tiles, measured on ``held_out`` tiles."""
    s = spec_of(attack)
    if s.inputs != "training":
        raise PlanError(f"{attack} does not tamper with training")
    _check_target(s, target)
    return Unit(attack, _frozen(resolve_params(s, params)), tuple(train), tuple(held_out), target, label=label)


def sample_split() -> tuple[list[Item], list[Item]]:
    """The sample tiles' fixed split by tile (training, held-out) as items."""
    from ..inputs.samples import sample_tiles, split

    train, held = split(sample_tiles())
    return ([file_item(t.path, label=t.index, name=t.name) for t in train],
            [file_item(t.path, label=t.index, name=t.name) for t in held])


def _check_target(s: AttackSpec, target: int | None) -> None:
    if s.targeted == "never" and target is not None:
        raise PlanError(f"{s.name} is untargeted; a target class is not accepted")
    if s.targeted == "required" and target is None and s.inputs != "none":
        raise PlanError(f"{s.name} needs a target class")
