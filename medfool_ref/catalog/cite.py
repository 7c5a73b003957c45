"""Citations: BibTeX, formatted text (pybtex's plain style) and CSL-JSON.

A paper is cited by its own reference. Any other entry (attack, domain, defence, dataset,
the risk model) is cited as a catalog entry: its id, title and the catalog version, followed
by the papers it rests on.
"""

from __future__ import annotations

import json
import re
from datetime import date
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pybtex.database import BibliographyData, Entry, Person
from pybtex.richtext import Text as RichText
from pybtex.style.formatting.plain import Style

from .derive import papers_by_relation

if TYPE_CHECKING:
    from .tables import Catalog

FORMATS = ("bibtex", "text", "csl-json")
PRIVATE_FIELDS = {"note"}  # our own bookkeeping, not part of a reference
PROJECT_AUTHOR = "{medfool contributors}"


def public_entry(entry: Entry) -> Entry:
    """A copy of a BibTeX entry without our bookkeeping fields (x-confidence, x-source, note...)."""
    fields = {k: v for k, v in entry.fields.items() if not k.lower().startswith("x-") and k.lower() not in PRIVATE_FIELDS}
    return Entry(entry.type, fields=fields, persons={role: list(people) for role, people in entry.persons.items()})


def bibtex_of(entries: dict[str, Entry]) -> str:
    """Serialise entries as BibTeX, keeping field values exactly as written in bib/.

    pybtex's own writer re-escapes values (a DOI's ``_`` becomes ``\\_``, and again on every
    round trip), so values are written back verbatim inside braces instead.
    """
    chunks = []
    for key, entry in entries.items():
        lines = [f"@{entry.type}{{{key},"]
        for role, people in entry.persons.items():
            lines.append(f"  {role} = {{{' and '.join(str(p) for p in people)}}},")
        for name, value in entry.fields.items():
            lines.append(f"  {name} = {{{value}}},")
        lines.append("}")
        chunks.append("\n".join(lines))
    return "\n\n".join(chunks) + "\n"


@lru_cache(maxsize=1)
def _text_backend() -> Any:
    # pybtex looks its backend up among every installed package's entry points on each render_as call
    from pybtex.plugin import find_plugin

    return find_plugin("pybtex.backends", "text")()


def latex_to_text(value: str) -> str:
    """Plain text of a BibTeX field value ({\\'e} -> é, braces dropped)."""
    return RichText.from_latex(value).render(_text_backend())


def format_text(key: str, entry: Entry) -> str:
    style = Style()
    data = BibliographyData(entries={key: entry})
    formatted = list(style.format_entries(data.entries.values()))
    return formatted[0].text.render_as("text")


_CSL_TYPES = {
    "article": "article-journal",
    "inproceedings": "paper-conference",
    "incollection": "chapter",
    "book": "book",
    "misc": "article",
    "techreport": "report",
    "phdthesis": "thesis",
}


def csl_item(key: str, entry: Entry) -> dict[str, Any]:
    f = {k.lower(): v for k, v in entry.fields.items()}
    item: dict[str, Any] = {"id": key, "type": _CSL_TYPES.get(entry.type.lower(), "article")}
    item["title"] = latex_to_text(f.get("title", ""))
    authors = []
    for person in entry.persons.get("author", []):
        family = " ".join(latex_to_text(p) for p in person.prelast_names + person.last_names)
        given = " ".join(latex_to_text(p) for p in person.first_names + person.middle_names)
        if family.lower() == "others":
            continue
        authors.append({"family": family, "given": given} if given else {"literal": family})
    if authors:
        item["author"] = authors
    if "others" in [str(p).lower() for p in entry.persons.get("author", [])]:
        item["note"] = "author list truncated (et al.)"
    container = f.get("journal") or f.get("booktitle")
    if container:
        item["container-title"] = latex_to_text(container)
    for src, dst in (("volume", "volume"), ("number", "issue"), ("publisher", "publisher")):
        if src in f:
            item[dst] = latex_to_text(f[src])
    if "pages" in f:
        item["page"] = f["pages"].replace("--", "-")
    if "doi" in f:
        item["DOI"] = f["doi"]
    if f.get("archiveprefix", "").lower() == "arxiv" and "eprint" in f:
        item["URL"] = f"https://arxiv.org/abs/{f['eprint']}"
        item.setdefault("number", f"arXiv:{f['eprint']}")
    if "year" in f and re.fullmatch(r"[0-9]{4}", f["year"].strip()):
        item["issued"] = {"date-parts": [[int(f["year"])]]}
    return item


def entry_citation_entry(catalog: Catalog, entry_id: str) -> tuple[str, Entry]:
    """A BibTeX @misc for a catalog entry itself."""
    obj = catalog.get(entry_id)
    if obj is None:
        raise KeyError(entry_id)
    kind = catalog.kind_of(entry_id) or "risk model"
    name = getattr(obj, "name", entry_id)
    stable = getattr(obj, "stable_id", None)
    ident = f"{stable} ({entry_id})" if stable else entry_id
    key = f"medfool:{entry_id}"
    fields = {
        "title": f"{{{_escape_bibtex(name)}}}",
        "howpublished": f"medfool catalog, {kind} entry {ident}, version {catalog.version}",
        "year": str(date.today().year),
        "version": catalog.version,
    }
    return key, Entry("misc", fields=fields, persons={"author": [Person(PROJECT_AUTHOR)]})


def _escape_bibtex(value: str) -> str:
    return re.sub(r"([&%$#_])", r"\\\1", value)


def key_papers(catalog: Catalog, entry_id: str) -> list[str]:
    kind = catalog.kind_of(entry_id)
    if kind == "attack":
        rel = papers_by_relation(catalog, entry_id)
        return list(dict.fromkeys(rel["proposes"] + rel["analyses"] + rel["demonstrates"]))
    obj = catalog.get(entry_id)
    if kind == "domain":
        return [p.id for p in catalog.papers.values() if entry_id in p.domains or any(entry_id in d.domains for d in p.demonstrates)]
    return list(getattr(obj, "papers", []))


def cite(catalog: Catalog, entry_id: str, fmt: str = "bibtex") -> str:
    """Citation text for any catalog entry in one of :data:`FORMATS`."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    obj = catalog.get(entry_id)
    if obj is None:
        raise KeyError(entry_id)
    entries: dict[str, Entry] = {}
    if entry_id in catalog.papers:
        paper = catalog.papers[entry_id]
        entries[paper.bibkey] = public_entry(catalog.bib.entry(paper.bibkey))
    else:
        key, entry = entry_citation_entry(catalog, entry_id)
        entries[key] = entry
        for pid in key_papers(catalog, entry_id):
            bibkey = catalog.papers[pid].bibkey
            entries[bibkey] = public_entry(catalog.bib.entry(bibkey))
    if fmt == "bibtex":
        return bibtex_of(entries)
    if fmt == "csl-json":
        return json.dumps([csl_item(k, e) for k, e in entries.items()], indent=2, ensure_ascii=False)
    lines = []
    for i, (k, e) in enumerate(entries.items()):
        lines.append(("" if i == 0 else "Key paper: ") + format_text(k, e))
    return "\n".join(lines)


def full_bibtex(catalog: Catalog) -> str:
    return bibtex_of({p.bibkey: public_entry(catalog.bib.entry(p.bibkey)) for p in catalog.papers.values()})


def full_csl(catalog: Catalog) -> list[dict[str, Any]]:
    return [csl_item(p.bibkey, public_entry(catalog.bib.entry(p.bibkey))) for p in catalog.papers.values()]
