"""Problems found while reading the catalog: ``path:line: field: message``."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class Diagnostic:
    path: str
    line: int | None
    field: str
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        prefix = "warning: " if self.severity is Severity.WARNING else ""
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {prefix}{self.message}"


class CatalogError(Exception):
    """Raised when a catalog does not validate; carries every problem found."""

    def __init__(self, problems: list[Diagnostic]) -> None:
        self.problems = problems
        errors = [p for p in problems if p.severity is Severity.ERROR]
        super().__init__(f"catalog is invalid: {len(errors)} error(s)\n" + "\n".join(str(p) for p in errors))
