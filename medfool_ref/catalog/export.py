"""The flat JSON export everything else can be derived from, its JSON Schema, and the way back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from .bibliography import Bibliography
from .cite import bibtex_of
from .models import (
    Attack,
    CatalogMeta,
    Dataset,
    Defence,
    Domain,
    Paper,
    RiskModel,
    Version,
)
from .tables import Catalog


class Export(BaseModel):
    """``medfool export``: one document holding the whole catalog."""

    model_config = ConfigDict(extra="forbid", title="medfool catalog export")

    version: Version
    title: str
    atlas_version: Version | None = None  # the MITRE ATLAS release the entries' ATLAS ids were checked against
    attacks: list[Attack]
    papers: list[Paper]
    domains: list[Domain]
    defences: list[Defence]
    datasets: list[Dataset]
    risk_model: RiskModel
    bibliography: dict[str, str]  # BibTeX key -> the entry as BibTeX, bookkeeping fields included


def to_export(catalog: Catalog) -> Export:
    assert catalog.risk_model is not None
    return Export(
        version=catalog.version,
        title=catalog.meta.title,
        atlas_version=catalog.meta.atlas_version,
        attacks=list(catalog.attacks.values()),
        papers=list(catalog.papers.values()),
        domains=list(catalog.domains.values()),
        defences=list(catalog.defences.values()),
        datasets=list(catalog.datasets.values()),
        risk_model=catalog.risk_model,
        bibliography={p.bibkey: bibtex_of({p.bibkey: catalog.bib.entry(p.bibkey)}) for p in catalog.papers.values()},
    )


def export_json(catalog: Catalog) -> str:
    return to_export(catalog).model_dump_json(indent=2)


def json_schema() -> dict[str, Any]:
    schema = Export.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def from_export(data: str | bytes | dict[str, Any], root: Path | None = None) -> Catalog:
    """Rebuild a :class:`Catalog` from an export (no files are read)."""
    from pybtex.database import parse_string

    exp = Export.model_validate_json(data) if isinstance(data, (str, bytes)) else Export.model_validate(data)
    catalog = Catalog(root=root or Path("."), meta=CatalogMeta(title=exp.title, version=exp.version, atlas_version=exp.atlas_version))
    for table, items in ((catalog.attacks, exp.attacks), (catalog.papers, exp.papers), (catalog.domains, exp.domains),
                         (catalog.defences, exp.defences), (catalog.datasets, exp.datasets)):
        for item in items:
            table[item.id] = item
    catalog.risk_model = exp.risk_model
    bib = Bibliography()
    for key, text in exp.bibliography.items():
        bib.data.entries[key] = parse_string(text, "bibtex").entries[key]
        bib.files[key] = "export"
        bib.lines[key] = 1
    catalog.bib = bib
    return catalog
