"""Model integrity: the config's sha256 pins of the weights file and the factory file, checked before anything runs.

A pinned file whose bytes hash to something else is refused with both hashes, before the factory file is
imported or the weights are read (MITRE ATLAS AML.M0008 Validate AI Model; AML.M0025 Dataset Provenance's
counterpart for models). The hash is over the file's bytes, as ``sha256sum`` prints it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


class IntegrityError(ValueError):
    """A pinned model file whose hash does not match the pin."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_pins(integrity: Any, *, weights: str | Path | None, factory: str | Path | None, where: str = "config") -> list[str]:
    """Check every pin in ``integrity`` (an IntegritySpec, a dict or None); raise one error listing every mismatch.

    Returns the checks that passed, as ``"weights sha256 ok"`` lines (for a run's provenance)."""
    if integrity is None:
        return []
    pins = integrity if isinstance(integrity, dict) else integrity.model_dump()
    problems, ok = [], []
    for field, path, flag in (("weights_sha256", weights, "--weights"), ("factory_sha256", factory, "--model")):
        pin = pins.get(field)
        if pin is None:
            continue
        if path is None:
            problems.append(f"{where}: integrity.{field} is pinned but no {flag} file was given")
            continue
        if not Path(path).is_file():
            problems.append(f"{where}: integrity.{field}: {flag} {path}: no such file")
            continue
        actual = file_sha256(path)
        if actual != pin.lower():
            problems.append(f"{where}: integrity.{field}: {flag} {path} has sha256 {actual}, the config pins {pin}; refused")
        else:
            ok.append(f"{field} ok")
    if problems:
        raise IntegrityError("\n".join(problems))
    return ok
