"""What the attack commands share: usage errors, ``--set key=value`` parsing against an attack's spec,
class names, ``--tile`` (a file or ``sample:CLASS``) and progress bars."""

from __future__ import annotations

import math
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from ..registry import AttackSpec, Extra


class UsageError(Exception):
    """A mistake in how the command was called: reported in one line, exit 2."""


class RunFailed(Exception):
    """A unit failed for a reason other than its input (a bug or a crash): reported with its error, exit 1."""


def parse_sets(s: AttackSpec, pairs: list[str] | None) -> dict[str, Any]:
    """Turn ``key=value`` strings into typed parameters of the attack; unknown keys and bad values are errors."""
    params = s.parameters()
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UsageError(f"--set {pair!r}: expected key=value")
        key, raw = (part.strip() for part in pair.split("=", 1))
        if key not in params:
            raise UsageError(f"--set {key}: unknown parameter; this attack takes {', '.join(sorted(params))}")
        out[key] = coerce(params[key], raw)
    return out


def _number(raw: str) -> float:
    value = float(Fraction(raw)) if "/" in raw else float(raw)
    if not math.isfinite(value):
        raise ValueError
    return value


def coerce(p: Extra, raw: str) -> Any:
    """One parameter's value from its text; NaN and infinity are never numbers."""
    kind = p.kind.__name__
    if raw.lower() == "none" and p.default is None:
        return None
    try:
        if p.kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if p.kind is int:
            value: Any = int(raw)
        elif p.kind is float:
            value = _number(raw)
        elif p.kind is tuple:
            value = tuple(_number(v) for v in raw.split(",") if v.strip())
            if not value:
                raise ValueError
            kind = "comma-separated numbers such as 0.1,0.2"
        else:
            return raw
    except (ValueError, ZeroDivisionError, OverflowError):
        hint = " (a finite number)" if p.kind in (float, tuple) else ""
        raise UsageError(f"--set {p.name}={raw}: expected {kind}{hint}") from None
    if p.minimum is not None and p.kind in (int, float) and value < p.minimum:
        raise UsageError(f"--set {p.name}={raw}: must be >= {p.minimum:g}")
    return value


def class_index(value: str, classes: tuple[str, ...], what: str) -> int:
    if value.upper() in classes:
        return classes.index(value.upper())
    if value.isdigit() and int(value) < len(classes):
        return int(value)
    raise UsageError(f"{what} {value!r}: expected one of {', '.join(classes)} or an index 0-{len(classes) - 1}")


def tile_path(value: str) -> Path:
    """``--tile``: a file, or ``sample:CLASS`` for the first shipped tile of that class."""
    from ..inputs.samples import sample_tile
    from ..inputs.tiles import TileError

    if value.lower().startswith("sample:"):
        try:
            return sample_tile(value.split(":", 1)[1])
        except TileError as exc:
            raise UsageError(str(exc)) from None
    path = Path(value)
    if path.is_dir():
        raise UsageError(f"{value}: is a directory; --tile takes one image file (or sample:CLASS, see 'medfool tiles')")
    return path


def progress_bar(label: str) -> Callable[..., None]:
    """A tqdm bar fed by an attack's ``progress(done, total, *extra)`` callback; quiet when not a terminal."""
    from tqdm.auto import tqdm

    bar = tqdm(desc=label, disable=not sys.stderr.isatty(), leave=False)

    def update(done: int, total: int, *extra: float) -> None:
        if bar.total != total:
            bar.reset(total=total)
        bar.n = done
        if extra:
            bar.set_postfix(loss=f"{extra[0]:.3f}", refresh=False)
        bar.refresh()

    update.close = bar.close  # type: ignore[attr-defined]
    return update


def finite(text: str) -> float:
    """An argparse type: a finite number (NaN and infinity are refused, as everywhere in medfool)."""
    import argparse

    try:
        return _number(text)
    except (ValueError, ZeroDivisionError, OverflowError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number") from None
