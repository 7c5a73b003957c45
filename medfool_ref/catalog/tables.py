"""The validated catalog as tables of entries (what every reader of the catalog receives)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .bibliography import Bibliography
from .models import (
    Attack,
    CatalogMeta,
    Dataset,
    Defence,
    Domain,
    Paper,
    RiskModel,
    Strict,
)
from .yamlread import Document
from .yamlread import Path as FieldPath


@dataclass
class Source:
    path: str  # relative to the root, posix
    doc: Document

    def line(self, loc: FieldPath) -> int:
        return self.doc.line_of(loc)


@dataclass
class Catalog:
    root: Path
    meta: CatalogMeta
    attacks: dict[str, Attack] = field(default_factory=dict)
    papers: dict[str, Paper] = field(default_factory=dict)
    domains: dict[str, Domain] = field(default_factory=dict)
    defences: dict[str, Defence] = field(default_factory=dict)
    datasets: dict[str, Dataset] = field(default_factory=dict)
    risk_model: RiskModel | None = None
    bib: Bibliography = field(default_factory=Bibliography)
    sources: dict[str, Source] = field(default_factory=dict)  # entry id -> where it was read
    broken: set[str] = field(default_factory=set)  # ids of files that failed to validate
    meta_source: Source | None = None  # where catalog/catalog.yaml was read

    @property
    def version(self) -> str:
        return self.meta.version

    def kind_of(self, entry_id: str) -> str | None:
        for kind, table in self.tables().items():
            if entry_id in table:
                return kind
        return None

    def tables(self) -> dict[str, dict[str, Strict]]:
        return {
            "attack": self.attacks,
            "paper": self.papers,
            "domain": self.domains,
            "defence": self.defences,
            "dataset": self.datasets,
        }

    def get(self, entry_id: str) -> Strict | None:
        for table in self.tables().values():
            if entry_id in table:
                return table[entry_id]
        if self.risk_model is not None and self.risk_model.id == entry_id:
            return self.risk_model
        return None
