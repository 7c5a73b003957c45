"""Fields computed from the catalog rather than typed in: routes, relations and Table 1."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .models import FAMILY_LABELS, Attack, Column, Family, Paper, Route

if TYPE_CHECKING:
    from .tables import Catalog


def route_of(attack: Attack) -> Route:
    """The survey's Figure 2: tampering attacks the training process, the rest alter inputs."""
    if attack.family is Family.TRAINING_TAMPERING:
        return Route.TRAINING_TAMPERING
    return Route.INPUT_ALTERATION


def derived_placements(catalog: Catalog, paper: Paper) -> set[tuple[Family, Column]]:
    """Table 1 cells implied by a paper's relations.

    General column: the paper proposes or analyses an attack of the family.
    Medical column: the paper demonstrates an attack of the family on a medical domain.
    """
    cells: set[tuple[Family, Column]] = set()
    for attack_id in [*paper.proposes, *paper.analyses]:
        attack = catalog.attacks.get(attack_id)
        if attack is not None:
            cells.add((attack.family, Column.GENERAL))
    for demo in paper.demonstrates:
        attack = catalog.attacks.get(demo.attack)
        if attack is not None:
            cells.add((attack.family, Column.MEDICAL))
    return cells


@dataclass
class TableRow:
    family: Family
    general: list[str] = field(default_factory=list)  # paper ids, in order
    medical: list[str] = field(default_factory=list)

    @property
    def method(self) -> str:
        return FAMILY_LABELS[self.family]

    def as_json(self) -> dict[str, object]:
        return {"method": self.method, "family": self.family.value, "general": self.general, "medical": self.medical}


@dataclass
class Table:
    scope: str
    rows: list[TableRow]
    notes: list[str]


def _paper_order(catalog: Catalog, paper_id: str) -> tuple[int, str]:
    p = catalog.papers[paper_id]
    ref = p.survey.ref if p.survey and p.survey.ref else 10_000
    return ref, paper_id


def table1(catalog: Catalog, scope: str = "seed") -> Table:
    """The survey's Table 1 (``seed``) or its extension over the whole catalog (``all``)."""
    if scope not in ("seed", "all"):
        raise ValueError(f"scope must be 'seed' or 'all', not {scope!r}")
    rows = {f: TableRow(f) for f in Family}
    notes: list[str] = []
    if scope == "seed":
        cells: dict[tuple[Family, Column], list[tuple[int, str]]] = {}
        for p in catalog.papers.values():
            if p.survey is None:
                continue
            for t in p.survey.table1:
                cells.setdefault((t.row, t.column), []).append((t.position, p.id))
            if p.survey.table1 and p.survey.note:
                notes.append(f"{_label(catalog, p)}: {p.survey.note}")
        for (fam, col), items in cells.items():
            ids = [pid for _, pid in sorted(items)]
            getattr(rows[fam], col.value).extend(ids)
        for row in rows.values():
            if not row.medical:
                notes.append(f"{row.method}: the survey lists no medical-domain work.")
    else:
        for p in catalog.papers.values():
            for fam, col in derived_placements(catalog, p):
                getattr(rows[fam], col.value).append(p.id)
        for row in rows.values():
            row.general.sort(key=lambda pid: _paper_order(catalog, pid))
            row.medical.sort(key=lambda pid: _paper_order(catalog, pid))
        notes.append("Computed from the catalog's relations: general = proposes or analyses an attack of the family; "
                     "medical = demonstrates one on a medical imaging domain. Benign generative work is not an attack and is left out.")
    return Table(scope=scope, rows=[rows[f] for f in Family], notes=notes)


def _label(catalog: Catalog, p: Paper) -> str:
    ref = f"[{p.survey.ref}] " if p.survey and p.survey.ref else ""
    return f"{ref}{p.id}"


def papers_by_relation(catalog: Catalog, attack_id: str) -> dict[str, list[str]]:
    """Papers that propose, analyse or demonstrate an attack."""
    out: dict[str, list[str]] = {"proposes": [], "analyses": [], "demonstrates": []}
    for p in catalog.papers.values():
        if attack_id in p.proposes:
            out["proposes"].append(p.id)
        if attack_id in p.analyses:
            out["analyses"].append(p.id)
        if any(d.attack == attack_id for d in p.demonstrates):
            out["demonstrates"].append(p.id)
    return out


def demonstrations_of(catalog: Catalog, attack_id: str) -> list[tuple[str, list[str]]]:
    """(paper id, domain ids) pairs showing the attack on medical domains."""
    return [(p.id, list(d.domains)) for p in catalog.papers.values() for d in p.demonstrates if d.attack == attack_id]


def defences_for(catalog: Catalog, attack_id: str) -> list[str]:
    return [d.id for d in catalog.defences.values() if attack_id in d.counters]


def attacks_on_route(catalog: Catalog, route: Route) -> list[Attack]:
    return [a for a in catalog.attacks.values() if route_of(a) is route]


def attacks_in_domain(catalog: Catalog, domain_id: str) -> list[str]:
    seen: list[str] = []
    for p in catalog.papers.values():
        for d in p.demonstrates:
            if domain_id in d.domains and d.attack not in seen:
                seen.append(d.attack)
    return seen
