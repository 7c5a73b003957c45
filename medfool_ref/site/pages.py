"""Markdown pages generated from the catalog.

Every page is front matter (title, tags) plus one raw HTML block rendered from a template in
``templates/`` with autoescaping, so a summary holding ``<script>`` or Markdown link syntax
renders as text. Links are relative, so the built site also works from ``file://``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from ..catalog.atlas import load_atlas
from ..catalog.atlas import url as atlas_url
from ..catalog.cite import bibtex_of, format_text, public_entry
from ..catalog.derive import (
    attacks_in_domain,
    defences_for,
    demonstrations_of,
    papers_by_relation,
    route_of,
    table1,
)
from ..catalog.models import FAMILY_LABELS, ROUTE_LABELS, Family, Route
from ..catalog.risk import RULE, band, likelihood, scores
from ..catalog.show import paper_links
from .html import Link, Page, block, href, page_uri
from .render import render
from .results import read_run
from .svg import layout

if TYPE_CHECKING:
    from ..catalog.loader import Catalog

KIND_TITLES = {"attack": "Attacks", "paper": "Papers", "domain": "Domains", "defence": "Defences", "dataset": "Datasets"}
DOWNLOADS = {
    "downloads/medfool.bib": "BibTeX of every paper in the catalog",
    "downloads/medfool.csl.json": "CSL-JSON of every paper (for Zotero, Pandoc, citeproc)",
    "downloads/catalog.json": "the flat JSON export (medfool export)",
    "downloads/catalog.schema.json": "its JSON Schema (medfool export --format jsonschema)",
    "downloads/audit-report.schema.json": "the JSON Schema of an audit's report.json (medfool audit --schema)",
    "downloads/medfool.stix.json": "STIX 2.1 bundle: an attack-pattern per attack, a course-of-action per defence, "
                                   "mitigates relationships, references to papers and MITRE ATLAS (medfool export --format stix)",
    "downloads/medfool.atlas-layer.json": "MITRE ATLAS Navigator layer of the catalog's attacks, scored by a-priori risk "
                                          "(medfool export --format atlas-layer)",
    "downloads/medfool.atlas-layer.audit.json": "the same layer scored by the recorded audit of the reference model "
                                                "(medfool export --format atlas-layer --audit docs/results/audit/report.json)",
}


class Links:
    """Links from the page ``here`` to other pages, for templates: relative hrefs, as plain strings."""

    def __init__(self, c: Catalog, here: str) -> None:
        self.c, self.here = c, here

    def to(self, uri: str, text: str, anchor: str = "", title: str = "") -> Link:
        return Link(href(self.here, uri, anchor), text, title)

    def paper(self, pid: str) -> Link:
        p = self.c.papers[pid]
        ref = f"[{p.survey.ref}] " if p.survey and p.survey.ref else ""
        return self.to(page_uri("paper", pid), f"{ref}{pid}")

    def papers(self, pids: list[str]) -> list[Link]:
        return [self.paper(p) for p in pids]

    def entry(self, kind: str, eid: str) -> Link:
        obj = self.c.tables()[kind][eid]
        return self.to(page_uri(kind, eid), getattr(obj, "name", eid))

    def entries(self, kind: str, ids: list[str]) -> list[Link]:
        return [self.entry(kind, i) for i in ids]


def _html(template: str, c: Catalog, here: str, **context: Any) -> str:
    """Render a page template into the page's raw block, with link helpers and the catalog's labels."""
    ln = Links(c, here)
    return block(render(template, c=c, to=ln.to, paper=ln.paper, papers=ln.papers, entry=ln.entry, entries=ln.entries,
                        family=FAMILY_LABELS, route_label=lambda a: ROUTE_LABELS[route_of(a)],
                        atlas=load_atlas(), atlas_url=atlas_url, **context))


def sec_dir(kind: str) -> str:
    return page_uri(kind, "x").split("/")[0]


# --------------------------------------------------------------------------- home and tables


def home(c: Catalog) -> Page:
    here = "index.md"
    ln = Links(c, here)
    stats = [(len(t), ln.to(f"{sec_dir(k)}/index.md", KIND_TITLES[k])) for k, t in c.tables().items()]
    confidence: dict[str, int] = {}
    for p in c.papers.values():
        confidence[p.confidence.value] = confidence.get(p.confidence.value, 0) + 1
    conf = ", ".join(f"{n} {k}" for k, n in sorted(confidence.items()))
    body = _html("home.html", c, here, title=c.meta.title, version=c.version, stats=stats, confidence=conf)
    return Page(here, "medfool", body)


def table1_page(c: Catalog) -> Page:
    body = _html("table1.html", c, "table1.md", seed=table1(c, "seed"), all=table1(c, "all"),
                 attacks=[(a, likelihood(a)[0]) for a in c.attacks.values()])
    return Page("table1.md", "Table 1: fooling methods", body)


def routes_page(c: Catalog) -> Page:
    here = "routes.md"
    routes = [(ROUTE_LABELS[r], [a for a in c.attacks.values() if route_of(a) is r]) for r in Route]
    return Page(here, "Attack routes (Figure 2)", _html("routes.html", c, here, fig=layout(c, here), routes=routes))


def risk_page(c: Catalog) -> Page:
    here = "risk-model.md"
    rm = c.risk_model
    assert rm is not None
    ln = Links(c, here)
    cells: dict[tuple[int, int], list[Link]] = {}
    for s in scores(c):
        cells.setdefault((s.likelihood, s.severity), []).append(
            ln.to(here, c.attacks[s.attack].name, anchor=f"scenario-{s.scenario}", title=s.scenario))
    heatmap = [(lik, [{"risk": lik * sev, "band": band(lik * sev), "links": cells.get((lik, sev), [])} for sev in range(1, 6)])
               for lik in range(5, 0, -1)]
    body = _html("risk.html", c, here, rm=rm, rule=RULE, heatmap=heatmap, scores={s.scenario: s for s in scores(c)},
                 roles={r.id: r.name for r in rm.roles})
    return Page(here, "Risk model", body)


# --------------------------------------------------------------------------- entry pages


def attack_page(c: Catalog, aid: str, results_dir: object = None, audit: dict | None = None) -> Page:
    a = c.attacks[aid]
    here = page_uri("attack", aid)
    lik, parts = likelihood(a)
    impl = run = None
    if a.implementation:
        from ..registry import IMPLEMENTATIONS, spec
        from .slides import URI as SLIDES_URI

        module, func = IMPLEMENTATIONS[a.implementation]
        python, cli = usage(a.implementation, module, func)
        impl = {"name": a.implementation, "path": spec(a.implementation).module_path.replace(".", "/") + ".py", "python": python,
                "cli": cli, "slides": href(here, SLIDES_URI) if spec(a.implementation).inputs == "slide" else None}
        run = read_run(a.implementation, results_dir, here)
    from .audit import rows_for

    audit_rows = [(row, href(here, "audit.md", row)) for row in rows_for(audit, aid)]
    body = _html("attack.html", c, here, a=a, likelihood=lik, likelihood_parts=parts, rel=papers_by_relation(c, aid),
                 demos=demonstrations_of(c, aid), defences=defences_for(c, aid), impl=impl, run=run, audit_rows=audit_rows)
    return Page(here, a.name, body, tags=(a.family.value, route_of(a).value))


_LOAD = ("from medfool_ref.targets.reference import load_model\n"
         "from medfool_ref.inputs.samples import sample_tile\n"
         "from medfool_ref.inputs.tiles import read_tile\n")


def usage(impl: str, module: str, func: str) -> tuple[str, str]:
    """How to call an implementation from Python and from the command line."""
    if impl == "badnets":
        python = (f"from medfool_ref.attacks.{module} import {func}\n"
                  "from medfool_ref.inputs.samples import sample_tiles, split\n"
                  "from medfool_ref.training.loop import TrainConfig, crop_bank\n\n"
                  "train_tiles, held_out = split(sample_tiles())\n"
                  "result = badnets(crop_bank(train_tiles, crop=64), held_out, config=TrainConfig(steps=400, crop=64),\n"
                  "                 trigger=\"ink-mark\", fraction=0.1)\n"
                  "print(result.metrics)  # CA, ASR, RA of the backdoored model beside a clean one")
        cli = ("medfool poison badnets --out out/ [--target NORM] [--set trigger=pixel-pattern --set fraction=0.1 ...]\n"
               "# writes backdoored.safetensors, MODEL_CARD.md, report.json and triggered.png")
    elif impl in ("generative-poisoning", "direct-gradient-poisoning"):
        python = ("from medfool_ref.attacks.poisoning import direct_gradient_poison, generative_poisoning\n"
                  "from medfool_ref.inputs.samples import sample_tiles, split\n"
                  "from medfool_ref.training.loop import crop_bank\n\n"
                  "train_tiles, held_out = split(sample_tiles())\n"
                  "result = generative_poisoning(crop_bank(train_tiles, crop=64), held_out, fractions=(0.1, 0.2, 0.3))\n"
                  "print(result.metrics[\"by_fraction\"])  # accuracy and loss vs label-flip and noise controls\n"
                  "print(result.metrics[\"timing\"])       # generative vs direct-gradient time per poisoned tile")
        cli = ("medfool poison generative --out out/ [--set fraction=0.2 --set fractions=0.1,0.3 --set objective=reward "
               "--set repeats=3 ...]\n"
               "# writes poisoned.safetensors, MODEL_CARD.md, report.json and poisoned.png")
    elif impl == "fooling-images":
        python = ("from medfool_ref.targets.reference import load_model\n"
                  f"from medfool_ref.attacks.{module} import {func}\n\n"
                  "result = fooling_images(load_model(), classes=[8], generations=100)  # 8 = TUM\n"
                  "print(result.summary())")
        cli = "medfool attack fooling-images --target TUM --out out/   # gallery.png, one PNG per class, report.json"
    elif impl == "mil-slide-perturbation":
        python = ("# the slide attack is a plan over a slide's tiles run through the campaign core; the command is its interface\n"
                  "import subprocess\n\n"
                  "subprocess.run([\"medfool\", \"slide\", \"demo\", \"--out\", \"slide-demo/\"], check=True)  # the recorded run\n"
                  "# or: medfool slide attack SLIDE --attack pgd --tiles 8 --out DIR (see medfool slide attack --help)")
        cli = ("medfool slide attack SLIDE --attack pgd (--tiles K | --fraction F) [--search] --out DIR\n"
               "# attacks the tiles that carry the call, re-aggregates (max, mean, top-k, attention) and writes the attacked slide\n"
               "medfool attack mil-slide-perturbation ...   # refused (exit 2): it needs a slide, not a tile")
    elif impl == "patch":
        python = ("from medfool_ref.targets.reference import load_model\n"
                  f"from medfool_ref.attacks.{module} import {func}\n\n"
                  "model = load_model()\n"
                  "x = tiles_batch  # (B, 3, H, W) in [0, 1]: the tiles to train the universal patch on\n"
                  "result = adversarial_patch(model, x, target=6, area=0.1, steps=100)  # 6 = NORM\n"
                  "print(result.extra[\"placements\"])  # success beside grey and noise patches")
        cli = ("medfool attack patch --tile sample:TUM --target NORM --set area=0.1 --out out/\n"
               "medfool attack patch --tile sample:TUM --target NORM --set patch_file=out/patch.png --out out2/")
    else:
        python = (_LOAD + f"from medfool_ref.attacks.{module} import {func}\n\n"
                  "model = load_model()  # the reference tile classifier (CUDA when available)\n"
                  "x = read_tile(sample_tile(\"TUM\"))[None].to(next(model.parameters()).device)  # (1, 3, H, W) in [0, 1]\n"
                  f"result = {func}(model, x)  # keyword-only parameters, see help({func})\n"
                  "print(result.summary())")
        cli = (f"medfool attack {impl} --tile sample:TUM --out out/ [--set key=value ...]\n"
               "# writes the 8-bit adversarial tile, a comparison figure and report.json")
    return python, cli


def paper_page(c: Catalog, pid: str) -> Page:
    p = c.papers[pid]
    here = page_uri("paper", pid)
    entry = public_entry(c.bib.entry(p.bibkey))
    bibtex = bibtex_of({p.bibkey: entry})
    body = _html("paper.html", c, here, p=p, reference=format_text(p.bibkey, entry), links=paper_links(c, pid))
    # the BibTeX block is Markdown (a fence the theme gives a copy button), not HTML: Markdown escapes it
    fence = "`" * max(3, _longest_backticks(bibtex) + 1)
    body += f"\n{fence}bibtex\n{bibtex}{fence}\n"
    tags = tuple(dict.fromkeys([r.value for r in p.roles] + list(p.domains)))
    return Page(here, p.bibkey, body, tags=tags)


def _longest_backticks(text: str) -> int:
    best = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        best = max(best, run)
    return best


HE_DOMAIN = "histopathology"  # where medfool's own runs (sample tiles, audit, slides) are made


def domain_page(c: Catalog, did: str, runs: Sequence[tuple[str, str]] = ()) -> Page:
    d = c.domains[did]
    here = page_uri("domain", did)
    papers = [pp.id for pp in c.papers.values() if did in pp.domains or any(did in x.domains for x in pp.demonstrates)]
    body = _html("domain.html", c, here, d=d, attacks=attacks_in_domain(c, did), paper_ids=papers,
                 scenarios=[s for s in (c.risk_model.scenarios if c.risk_model else []) if s.domain == did],
                 datasets=[ds.id for ds in c.datasets.values() if ds.domain == did], runs=list(runs))
    return Page(here, d.name, body, tags=(did,))


def defence_page(c: Catalog, did: str) -> Page:
    d = c.defences[did]
    here = page_uri("defence", did)
    from ..defences.specs import SPECS as DEFENCES

    impl = DEFENCES.get(d.implementation or "")
    # an input defence links its recorded defended audit; the others their row of the registry
    anchor = f"defended-{impl.name}" if impl is not None and impl.kind == "input-restoration" else "registered"
    measured = Links(c, here).to("defences-measured.md", "how it is attacked, and what was measured", anchor)
    return Page(here, d.name, _html("defence.html", c, here, d=d, measured=measured), tags=("defence",))


def dataset_page(c: Catalog, did: str) -> Page:
    d = c.datasets[did]
    here = page_uri("dataset", did)
    return Page(here, d.name, _html("dataset.html", c, here, d=d), tags=(d.domain, "dataset"))


def _about(kind: str, obj: Any) -> str:
    """The index page's one-line description of an entry."""
    if kind == "attack":
        return f"{FAMILY_LABELS[obj.family]} · {ROUTE_LABELS[route_of(obj)]}"
    if kind == "paper":
        return obj.confidence.value + (f" · survey ref {obj.survey.ref}" if obj.survey and obj.survey.ref else "")
    if kind == "defence":
        return obj.adaptive_evaluation.value
    if kind == "dataset":
        return obj.licence.value
    if kind == "domain":
        return obj.modality.value
    return ""


def index_page(c: Catalog, kind: str) -> Page:
    here = f"{sec_dir(kind)}/index.md"
    ln = Links(c, here)
    rows = [(ln.to(page_uri(kind, obj.id), getattr(obj, "name", None) or obj.id), _about(kind, obj))
            for obj in c.tables()[kind].values()]
    body = _html("section-index.html", c, here, table_id=f"{kind}-index", rows=rows)
    return Page(here, KIND_TITLES[kind], body)


AUDIT_LAYER = "downloads/medfool.atlas-layer.audit.json"  # made only when the site has a recorded audit


def cite_page(c: Catalog, audit: dict | None = None) -> Page:
    here = "cite.md"
    ln = Links(c, here)
    downloads = [(ln.to(path, path.split("/")[-1]), what) for path, what in DOWNLOADS.items() if audit is not None or path != AUDIT_LAYER]
    return Page(here, "Cite and download", _html("cite.html", c, here, version=c.version, downloads=downloads))


def all_pages(c: Catalog, results_dir: object = None, audit: dict | None = None,
              runs: Sequence[tuple[str, str]] = ()) -> list[Page]:
    """Every catalog page; ``runs`` are the recorded-run pages (uri, title) the H&E domain page links to."""
    pages = [home(c), table1_page(c), routes_page(c), risk_page(c), cite_page(c, audit)]
    for kind in c.tables():
        pages.append(index_page(c, kind))
    pages += [attack_page(c, a, results_dir, audit) for a in c.attacks]
    pages += [paper_page(c, p) for p in c.papers]
    pages += [domain_page(c, d, runs if d == HE_DOMAIN else ()) for d in sorted(c.domains, key=lambda d: c.domains[d].order)]
    pages += [defence_page(c, d) for d in c.defences]
    pages += [dataset_page(c, d) for d in c.datasets]
    return pages


NAV_ENTRY_LIMIT = 60  # a larger section is reached through its index page only


def nav(c: Catalog) -> list[object]:
    """The site's navigation, in the order readers need it.

    Every page repeats the navigation, so listing every entry would make the build quadratic in
    the catalog's size; a section with more than ``NAV_ENTRY_LIMIT`` entries lists only its index
    page (sortable and filterable), which links every entry.
    """
    def section(kind: str, ids: list[str]) -> dict[str, list[object]]:
        items: list[object] = [f"{sec_dir(kind)}/index.md"]
        if len(ids) > NAV_ENTRY_LIMIT:
            return {KIND_TITLES[kind]: items}
        for i in ids:
            obj = c.tables()[kind][i]
            items.append({getattr(obj, "name", None) or i: page_uri(kind, i)})
        return {KIND_TITLES[kind]: items}

    return [
        {"Home": "index.md"},
        {"Table 1": "table1.md"},
        {"Attack routes": "routes.md"},
        {"Risk model": "risk-model.md"},
        section("attack", sorted(c.attacks, key=lambda a: (list(Family).index(c.attacks[a].family), c.attacks[a].stable_id))),
        section("paper", list(c.papers)),
        section("domain", sorted(c.domains, key=lambda d: c.domains[d].order)),
        section("defence", list(c.defences)),
        section("dataset", list(c.datasets)),
        {"Reference model": "reference-model.md"},
        {"Cite and download": "cite.md"},
        {"Adding an entry": "contributing.md"},
    ]
