"""Human-readable text of one entry for ``medfool show``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .derive import defences_for, demonstrations_of, papers_by_relation, route_of
from .models import ROUTE_LABELS
from .risk import likelihood

if TYPE_CHECKING:
    from .tables import Catalog

SITE_SECTIONS = {"attack": "attacks", "paper": "papers", "domain": "domains", "defence": "defences", "dataset": "datasets"}


def site_path(kind: str, entry_id: str) -> str:
    """Path of the entry's page in the built site."""
    return f"{SITE_SECTIONS[kind]}/{entry_id}.html"


def site_line(path: str) -> str:
    """Where the entry's page is: served by `make serve` or `medfool site --serve`, or in the built site/ folder."""
    return f"site page: http://127.0.0.1:8000/{path} (make serve), or site/{path} after make build"


def paper_links(catalog: Catalog, paper_id: str) -> list[str]:
    entry = catalog.bib.entry(catalog.papers[paper_id].bibkey)
    f = {k.lower(): v for k, v in entry.fields.items()}
    links = []
    if "doi" in f:
        links.append(f"https://doi.org/{f['doi']}")
    if f.get("archiveprefix", "").lower() == "arxiv" and "eprint" in f:
        links.append(f"https://arxiv.org/abs/{f['eprint']}")
    return links


def show_risk_model(catalog: Catalog) -> str:
    from .risk import RULE, scores

    rm = catalog.risk_model
    assert rm is not None
    lines = [rm.name, "=" * len(rm.name), "kind:                  risk model", f"id:                    {rm.id}", "", rm.summary, ""]
    lines += [f"stages: {', '.join(s.id for s in rm.stages)}", f"roles: {', '.join(r.id for r in rm.roles)}",
              f"motives: {', '.join(m.id for m in rm.motives)}", "", "Scoring rule:"] + [f"  {r}" for r in RULE] + ["", "Scenarios by risk:"]
    for sc in scores(catalog):
        lines.append(f"  {sc.risk:>2} {sc.band:8} {sc.scenario:28} {sc.attack} (likelihood {sc.likelihood} x severity {sc.severity})")
    lines += ["", site_line("risk-model.html")]
    return "\n".join(lines)


def show(catalog: Catalog, entry_id: str) -> str:
    if catalog.risk_model is not None and entry_id == catalog.risk_model.id:
        return show_risk_model(catalog)
    kind = catalog.kind_of(entry_id)
    obj = catalog.get(entry_id)
    assert obj is not None and kind is not None
    lines: list[str] = []

    def add(label: str, value: object) -> None:
        if value in (None, "", []):
            return
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        lines.append(f"{label + ':':22} {value}")

    title = getattr(obj, "name", None) or entry_id
    lines += [title, "=" * len(title)]
    add("kind", kind)
    add("id", entry_id)
    add("stable id", getattr(obj, "stable_id", None))
    add("aliases", getattr(obj, "aliases", None))
    if kind == "attack":
        a = catalog.attacks[entry_id]
        add("family", a.family.value)
        add("route", ROUTE_LABELS[route_of(a)])
        add("lifecycle stage", a.nist.lifecycle_stage.value)
        add("objectives", [o.value for o in a.nist.objectives])
        add("capabilities", [c.value for c in a.nist.capabilities])
        add("knowledge", [k.value for k in a.nist.knowledge])
        add("MITRE ATLAS", [f"{t.id} {t.name}" for t in a.atlas])
        add("targeted", a.targeted.value)
        p = a.perturbation
        add("perturbation", f"{p.norm.value}, {p.locality.value}" + (f" ({p.pixels} px)" if p.pixels else "")
            + (", physically realisable" if p.physically_realisable else ""))
        add("budget", p.budget)
        lik, parts = likelihood(a)
        add("likelihood", f"{lik}/5 ({', '.join(f'{k} {v}' for k, v in parts.items())})")
        add("implementation", a.implementation or "none yet")
        rel = papers_by_relation(catalog, entry_id)
        add("proposed by", rel["proposes"])
        add("analysed by", rel["analyses"])
        add("medical demos", [f"{pid} ({', '.join(doms)})" for pid, doms in demonstrations_of(catalog, entry_id)])
        add("defences", defences_for(catalog, entry_id))
        lines += ["", a.summary]
        if a.notes:
            lines += ["", f"Note: {a.notes}"]
    elif kind == "paper":
        from .cite import format_text, public_entry

        p = catalog.papers[entry_id]
        lines += [format_text(p.bibkey, public_entry(catalog.bib.entry(p.bibkey))), ""]
        add("confidence", p.confidence.value)
        add("checked in", p.checked_in)
        add("roles", [r.value for r in p.roles])
        add("proposes", p.proposes)
        add("analyses", p.analyses)
        add("demonstrates", [f"{d.attack} on {', '.join(d.domains)}" for d in p.demonstrates])
        add("domains", p.domains)
        if p.survey:
            add("survey ref", p.survey.ref)
            add("survey context", p.survey.context)
            add("survey Table 1", [f"{t.row.value}/{t.column.value}" for t in p.survey.table1])
            add("survey note", p.survey.note)
        add("links", paper_links(catalog, entry_id))
        lines += ["", p.summary]
        if p.confidence_note:
            lines += ["", f"Identification: {p.confidence_note}"]
    else:
        data = obj.model_dump(mode="json", exclude={"id", "name", "stable_id", "aliases", "summary", "files"})
        for key, value in data.items():
            if isinstance(value, (str, int, list)) and all(not isinstance(v, dict) for v in (value if isinstance(value, list) else [value])):
                add(key.replace("_", " "), value)
        if kind == "defence":
            add("MITRE ATLAS", [f"{m.id} {m.name}" for m in catalog.defences[entry_id].atlas])
        if kind == "dataset":
            add("files", f"{len(catalog.datasets[entry_id].files)} (sha256 checked on load)")
        lines += ["", getattr(obj, "summary", "")]
    lines += ["", site_line(site_path(kind, entry_id))]
    return "\n".join(lines)
