"""Helpers for comparing reports: a report with its run-dependent keys removed."""

from __future__ import annotations

from typing import Any, Collection


def stable(doc: Any, volatile: Collection[str]) -> Any:
    """``doc`` without the keys in ``volatile`` at any depth (timings, dates, the engine's name...)."""
    if isinstance(doc, dict):
        return {k: stable(v, volatile) for k, v in doc.items() if k not in volatile}
    if isinstance(doc, list):
        return [stable(v, volatile) for v in doc]
    return doc
