"""Markdown pages generated from the catalog.

Every page is front matter (title, tags) plus one raw HTML block in which every piece of
catalog text is escaped, so a summary holding ``<script>`` or Markdown link syntax renders as
text. Links are relative, so the built site also works from ``file://``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
from ..catalog.risk import RULE, likelihood, scores
from ..catalog.show import paper_links
from .html import block, dl, esc, external, href, link, page_uri, ul
from .results import results_html
from .svg import routes_svg

if TYPE_CHECKING:
    from ..catalog.loader import Catalog

KIND_TITLES = {"attack": "Attacks", "paper": "Papers", "domain": "Domains", "defence": "Defences", "dataset": "Datasets"}
DOWNLOADS = {
    "downloads/medfool.bib": "BibTeX of every paper in the catalog",
    "downloads/medfool.csl.json": "CSL-JSON of every paper (for Zotero, Pandoc, citeproc)",
    "downloads/catalog.json": "the flat JSON export (medfool export)",
    "downloads/catalog.schema.json": "its JSON Schema (medfool export --format jsonschema)",
}


@dataclass
class Page:
    uri: str  # path under docs/, e.g. attacks/deepfool.md
    title: str
    body: str
    tags: tuple[str, ...] = ()

    def markdown(self) -> str:
        front = [f"title: {json.dumps(esc(self.title))}"]  # MkDocs renders titles unescaped
        if self.tags:
            front.append("tags:")
            front += [f"  - {json.dumps(t)}" for t in self.tags]
        return "---\n" + "\n".join(front) + "\n---\n\n" + self.body


def _paper_label(c: Catalog, pid: str) -> str:
    p = c.papers[pid]
    ref = f"[{p.survey.ref}] " if p.survey and p.survey.ref else ""
    return f"{ref}{pid}"


def _paper_link(c: Catalog, here: str, pid: str) -> str:
    return link(here, page_uri("paper", pid), _paper_label(c, pid))


def _entry_link(c: Catalog, here: str, kind: str, eid: str) -> str:
    obj = c.get(eid)
    return link(here, page_uri(kind, eid), getattr(obj, "name", eid))


def _chip(text: str, cls: str = "") -> str:
    return f'<span class="mf-chip {esc(cls)}">{esc(text)}</span>'


# --------------------------------------------------------------------------- home and tables


def home(c: Catalog) -> Page:
    here = "index.md"
    counts = [(KIND_TITLES[k], len(t), f"{k}s") for k, t in c.tables().items()]
    stats = "".join(f'<div class="mf-stat"><span class="mf-num">{n}</span> {link(here, f"{sec_dir(k)}/index.md", title)}</div>'
                    for (title, n, _), k in zip(counts, c.tables()))
    confidence: dict[str, int] = {}
    for p in c.papers.values():
        confidence[p.confidence.value] = confidence.get(p.confidence.value, 0) + 1
    conf = ", ".join(f"{n} {k}" for k, n in sorted(confidence.items()))
    body = block(
        f"<p>{esc(c.meta.title)}, version {esc(c.version)}. An executable threat-modelling knowledge base about fooling "
        "the neural networks used in medical imaging, computational pathology (H&amp;E whole-slide images and their tiles) "
        "first. It starts from the short survey by Sipola, Puuska and Kokkonen (2020) and turns it into validated catalog "
        "entries, a computed Table 1, a risk model and reference implementations.</p>",
        f'<div class="mf-stats">{stats}</div>',
        f"<p>Papers by identification confidence: {esc(conf)}. Every paper page says how sure we are that it is the work "
        "the survey cites, and where its metadata was checked.</p>",
        "<h2>Where to start</h2>",
        "<ul>"
        f"<li><strong>Security reviewers</strong>: the {link(here, 'risk-model.md', 'risk model')} places every attack by likelihood "
        f"and clinical severity; the {link(here, 'routes.md', 'attack routes')} show where each enters the pipeline.</li>"
        f"<li><strong>Pathologists and clinicians</strong>: start with the {link(here, 'domains/histopathology.md', 'histopathology domain')} "
        f"and the {link(here, 'risk-model.md', 'severity scale')} grounded in clinical consequences.</li>"
        f"<li><strong>Medical-AI developers</strong>: the {link(here, 'attacks/index.md', 'attack pages')} give threat-model facets, "
        f"reference implementations, the {link(here, 'reference-model.md', 'reference tile classifier')} they run against, "
        f"and the {link(here, 'defences/index.md', 'defences')} that counter them.</li>"
        f"<li><strong>Researchers</strong>: {link(here, 'table1.md', 'Table 1')} reproduces the survey and extends it over the "
        f"catalog; {link(here, 'cite.md', 'cite and download')} gives BibTeX, CSL-JSON and the JSON export.</li>"
        "</ul>",
    )
    return Page(here, "medfool", body)


def sec_dir(kind: str) -> str:
    return page_uri(kind, "x").split("/")[0]


def _table_html(c: Catalog, here: str, scope: str) -> str:
    t = table1(c, scope)
    rows = []
    for r in t.rows:
        gen = ", ".join(_paper_link(c, here, p) for p in r.general) or "—"
        med = ", ".join(_paper_link(c, here, p) for p in r.medical) or "—"
        rows.append(f'<tr data-family="{esc(r.family.value)}"><td>{esc(r.method)}</td><td>{gen}</td><td>{med}</td></tr>')
    table = (f'<table class="mf-table mf-sortable" id="table1-{scope}" data-scope="{scope}">'
             "<thead><tr><th>Method</th><th>References</th><th>Medical domain</th></tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>")
    notes = ul([esc(n) for n in t.notes], empty="no notes")
    return table + f'<div class="mf-notes"><h3>Notes</h3>{notes}</div>'


def _filter_box(target: str) -> str:
    return (f'<p><label>Filter rows: <input type="search" class="mf-filter" data-target="{esc(target)}" '
            'placeholder="method or paper"></label> <span class="mf-hint">Click a column heading to sort.</span></p>')


def table1_page(c: Catalog) -> Page:
    here = "table1.md"
    body = block(
        "<p>The survey's Table 1: fooling methods against deep networks, the general references for each, and those "
        "used in the medical domain. It is computed from where the catalog records that the survey lists each paper, "
        "checked against the survey's own text by a golden test; where our relations disagree with the survey's "
        "placement, a note says why and the survey's placement is kept.</p>",
        "<h2 id=\"seed\">Table 1 as the survey gives it</h2>",
        _filter_box("table1-seed"),
        _table_html(c, here, "seed"),
        "<h2 id=\"all\">Extended over the whole catalog</h2>",
        "<p>The same rows computed from the catalog's relations for every paper.</p>",
        _filter_box("table1-all"),
        _table_html(c, here, "all"),
        "<h2>Every attack</h2>",
        _filter_box("attacks-table"),
        _attacks_table(c, here),
    )
    return Page(here, "Table 1: fooling methods", body)


def _attacks_table(c: Catalog, here: str) -> str:
    rows = []
    for a in c.attacks.values():
        lik, _ = likelihood(a)
        rows.append(
            f"<tr><td>{link(here, page_uri('attack', a.id), a.name)}</td><td>{esc(a.stable_id)}</td>"
            f"<td>{esc(FAMILY_LABELS[a.family])}</td><td>{esc(ROUTE_LABELS[route_of(a)])}</td>"
            f"<td>{esc(', '.join(k.value for k in a.nist.knowledge))}</td><td>{esc(a.perturbation.norm.value)}</td>"
            f"<td>{lik}</td><td>{esc(a.implementation or '—')}</td></tr>")
    return ('<table class="mf-table mf-sortable" id="attacks-table"><thead><tr><th>Attack</th><th>Stable id</th><th>Family</th>'
            "<th>Route</th><th>Knowledge</th><th>Norm</th><th>Likelihood</th><th>Implementation</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def routes_page(c: Catalog) -> Page:
    here = "routes.md"
    lists = []
    for route in Route:
        items = [link(here, page_uri("attack", a.id), a.name) + f" ({esc(FAMILY_LABELS[a.family])})"
                 for a in c.attacks.values() if route_of(a) is route]
        lists.append(f"<h3>{esc(ROUTE_LABELS[route])}</h3>{ul(items)}")
    body = block(
        "<p>The survey's Figure 2: an attacker can alter the images fed to a trained classifier, or tamper with the "
        "training process that produces it. The diagram is drawn from the catalog at build time; each box links to "
        "its attack page.</p>",
        f'<figure class="mf-figure">{routes_svg(c, here)}<figcaption>Figure 2 (after Sipola et al. 2020): the two attack routes, '
        "with the catalog's methods on each.</figcaption></figure>",
        *lists,
    )
    return Page(here, "Attack routes (Figure 2)", body)


def risk_page(c: Catalog) -> Page:
    here = "risk-model.md"
    rm = c.risk_model
    assert rm is not None
    sc = {s.scenario: s for s in scores(c)}
    stages = "".join(f"<li><strong>{esc(s.name)}</strong>: {esc(s.description)}</li>" for s in rm.stages)
    motives = "".join(
        f"<li><strong>{esc(m.name)}</strong>: {esc(m.description)}"
        + (f" ({', '.join(_paper_link(c, here, p) for p in m.papers)})" if m.papers else "") + "</li>" for m in rm.motives)
    roles = "".join(
        f"<tr><td>{esc(r.name)}</td><td>{esc(r.description)}</td><td>{esc(', '.join(r.stages))}</td>"
        f"<td>{esc(', '.join(x.value for x in r.capabilities))}</td><td>{esc(', '.join(r.motives))}</td></tr>" for r in rm.roles)
    severity = "".join(f"<tr><td>{s.level}</td><td>{esc(s.name)}</td><td>{esc(s.clinical_consequence)}</td><td>{esc(s.example)}</td></tr>"
                       for s in sorted(rm.severity_scale, key=lambda s: s.level))
    role_names = {r.id: r.name for r in rm.roles}
    scen_rows = []
    for s in rm.scenarios:
        score = sc[s.id]
        scen_rows.append(
            f'<tr id="scenario-{esc(s.id)}"><td>{esc(s.id)}</td><td>{link(here, page_uri("attack", s.attack), c.attacks[s.attack].name)}</td>'
            f"<td>{esc(role_names[s.role])}</td><td>{esc(s.entry_stage)}</td><td>{link(here, page_uri('domain', s.domain), c.domains[s.domain].name)}</td>"
            f"<td>{score.likelihood}</td><td>{score.severity}</td><td class=\"mf-band-{score.band}\">{score.risk} ({score.band})</td>"
            f"<td>{esc(s.narrative)} <em>Consequence:</em> {esc(s.consequence)}</td></tr>")
    body = block(
        f"<p>{esc(rm.summary)}</p>",
        f"<p>Sources: {', '.join(_paper_link(c, here, p) for p in rm.papers)}.</p>",
        "<h2>Pipeline stages</h2>", f"<ol>{stages}</ol>",
        "<h2>Attacker motives</h2>", f"<ul>{motives}</ul>",
        "<h2>Attacker roles</h2>",
        '<table class="mf-table"><thead><tr><th>Role</th><th>Who</th><th>Stages reached</th><th>Capabilities</th><th>Motives</th></tr></thead>'
        f"<tbody>{roles}</tbody></table>",
        "<h2>Severity scale</h2>",
        '<table class="mf-table"><thead><tr><th>Level</th><th>Name</th><th>Clinical consequence</th><th>Example</th></tr></thead>'
        f"<tbody>{severity}</tbody></table>",
        '<h2 id="rule">Scoring rule</h2>', ul([esc(r) for r in RULE]),
        '<h2 id="matrix">Likelihood × severity</h2>', _heatmap(c, here),
        "<h2>Scenarios</h2>",
        _filter_box("scenarios-table"),
        '<table class="mf-table mf-sortable" id="scenarios-table"><thead><tr><th>Scenario</th><th>Attack</th><th>Role</th><th>Entry stage</th>'
        "<th>Domain</th><th>Likelihood</th><th>Severity</th><th>Risk</th><th>What happens</th></tr></thead>"
        f"<tbody>{''.join(scen_rows)}</tbody></table>",
    )
    return Page(here, "Risk model", body)


def _heatmap(c: Catalog, here: str) -> str:
    cells: dict[tuple[int, int], list[str]] = {}
    for s in scores(c):
        cells.setdefault((s.likelihood, s.severity), []).append(
            f'<a href="{href(here, here, "scenario-" + s.scenario)}" title="{esc(s.scenario)}">{esc(c.attacks[s.attack].name)}</a>')
    head = "".join(f"<th>{sev}</th>" for sev in range(1, 6))
    rows = []
    for lik in range(5, 0, -1):
        tds = []
        for sev in range(1, 6):
            risk = lik * sev
            band = "critical" if risk >= 20 else "high" if risk >= 12 else "medium" if risk >= 6 else "low"
            content = "<br>".join(cells.get((lik, sev), []))
            tds.append(f'<td class="mf-heat mf-band-{band}" data-risk="{risk}">{content}</td>')
        rows.append(f"<tr><th>{lik}</th>{''.join(tds)}</tr>")
    return ('<table class="mf-heatmap" id="risk-matrix"><thead><tr><th>likelihood ↓ / severity →</th>'
            f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


# --------------------------------------------------------------------------- entry pages


def attack_page(c: Catalog, aid: str, results_dir: object = None) -> Page:
    a = c.attacks[aid]
    here = page_uri("attack", aid)
    lik, parts = likelihood(a)
    rel = papers_by_relation(c, aid)
    p = a.perturbation
    facts = dl([
        ("Stable id", f"<code>{esc(a.stable_id)}</code> (cite this; never reused)"),
        ("Aliases", esc(", ".join(a.aliases))),
        ("Family (Table 1 row)", esc(FAMILY_LABELS[a.family])),
        ("Route (Figure 2)", link(here, "routes.md", ROUTE_LABELS[route_of(a)])),
        ("Lifecycle stage (NIST AI 100-2)", esc(a.nist.lifecycle_stage.value)),
        ("Attacker objective", esc(", ".join(o.value for o in a.nist.objectives))),
        ("Capabilities needed", esc(", ".join(x.value for x in a.nist.capabilities))),
        ("Knowledge", esc(", ".join(k.value for k in a.nist.knowledge))),
        ("Targeted", esc(a.targeted.value)),
        ("Perturbation", esc(f"{p.norm.value} norm, {p.locality.value}" + (f", {p.pixels} pixel(s)" if p.pixels else ""))
         + (f"; budget {esc(p.budget)}" if p.budget else "")),
        ("Physically realisable", "yes" if p.physically_realisable else "no"),
        ("Likelihood", f"{lik}/5 ({esc(', '.join(f'{k} {v}' for k, v in parts.items()))}; "
                       f"{link(here, 'risk-model.md', 'rule')})"),
    ])
    demos = [f"{_paper_link(c, here, pid)} on " + ", ".join(link(here, page_uri('domain', d), c.domains[d].name) for d in doms)
             for pid, doms in demonstrations_of(c, aid)]
    impl = a.implementation
    if impl:
        from ..registry import IMPLEMENTATIONS

        module, func = IMPLEMENTATIONS[impl]
        python, cli = usage(impl, module, func)
        impl_html = (f"<p>Reference implementation <code>{esc(impl)}</code> "
                     f"(<code>medfool_ref/attacks/{esc(module)}.py</code>). From Python:</p>"
                     f"<pre><code>{esc(python)}</code></pre>"
                     "<p>From the command line:</p>"
                     f"<pre><code>{esc(cli)}</code></pre>"
                     + results_html(impl, results_dir, here))
    else:
        impl_html = ('<p class="mf-none">No reference implementation yet. When one is added it is linked here with the '
                     "results of a real run on the sample H&amp;E tiles.</p>")
    body = block(
        f'<p class="mf-summary">{esc(a.summary)}</p>',
        f'<p class="mf-note">{esc(a.notes)}</p>' if a.notes else "",
        facts,
        "<h2>Papers</h2>",
        "<h3>Proposed by</h3>", ul([_paper_link(c, here, x) for x in rel["proposes"]]),
        "<h3>Analysed by</h3>" if rel["analyses"] else "", ul([_paper_link(c, here, x) for x in rel["analyses"]]) if rel["analyses"] else "",
        "<h3>Demonstrated on medical images</h3>", ul(demos, empty="no medical-domain demonstration in the catalog"),
        "<h2>Defences</h2>", ul([_entry_link(c, here, "defence", d) for d in defences_for(c, aid)], empty="none recorded"),
        "<h2>What the papers report</h2>" if a.paper_figures else "",
        ul([f"{esc(f.figure)} ({_paper_link(c, here, f.paper)}; "
            + ("checked against the paper's text" if f.checked else "<strong>recalled, not yet checked</strong>") + ")"
            for f in a.paper_figures]) if a.paper_figures else "",
        '<h2 id="implementation">Reference implementation</h2>', impl_html,
        "<h2>Cite this entry</h2>", f"<pre><code>medfool cite {esc(aid)}</code></pre>",
    )
    return Page(here, a.name, body, tags=(a.family.value, route_of(a).value))


_LOAD = ("from medfool_ref.model import load_model\n"
         "from medfool_ref.tiles import read_tile\n")


def usage(impl: str, module: str, func: str) -> tuple[str, str]:
    """How to call an implementation from Python and from the command line."""
    if impl == "badnets":
        return (f"from medfool_ref.attacks.{module} import {func}\n"
                "from medfool_ref.tiles import sample_tiles, split\n"
                "from medfool_ref.training import TrainConfig, crop_bank\n\n"
                "train_tiles, held_out = split(sample_tiles())\n"
                "result = badnets(crop_bank(train_tiles, crop=64), held_out, config=TrainConfig(steps=400, crop=64),\n"
                "                 trigger=\"ink-mark\", fraction=0.1)\n"
                "print(result.metrics)  # CA, ASR, RA of the backdoored model beside a clean one",
                "medfool poison badnets --out out/ [--target NORM] [--set trigger=pixel-pattern --set fraction=0.1 ...]\n"
                "# writes backdoored.safetensors, MODEL_CARD.md, report.json and triggered.png")
    if impl in ("generative-poisoning", "direct-gradient-poisoning"):
        return ("from medfool_ref.attacks.poisoning import direct_gradient_poison, generative_poisoning\n"
                "from medfool_ref.tiles import sample_tiles, split\n"
                "from medfool_ref.training import crop_bank\n\n"
                "train_tiles, held_out = split(sample_tiles())\n"
                "result = generative_poisoning(crop_bank(train_tiles, crop=64), held_out, fractions=(0.1, 0.2, 0.3))\n"
                "print(result.metrics[\"by_fraction\"])  # accuracy and loss vs label-flip and noise controls\n"
                "print(result.metrics[\"timing\"])       # generative vs direct-gradient time per poisoned tile",
                "medfool poison generative --out out/ [--set fraction=0.2 --set fractions=0.1,0.3 --set objective=reward --set repeats=3 ...]\n"
                "# writes poisoned.safetensors, MODEL_CARD.md, report.json and poisoned.png")
    if impl == "fooling-images":
        return ("from medfool_ref.model import load_model\n"
                f"from medfool_ref.attacks.{module} import {func}\n\n"
                "result = fooling_images(load_model(), classes=[8], generations=100)  # 8 = TUM\n"
                "print(result.summary())",
                "medfool attack fooling-images --target TUM --out out/   # gallery.png, one PNG per class, report.json")
    if impl == "patch":
        return (_LOAD + f"from medfool_ref.attacks.{module} import {func}\n\n"
                "model = load_model()\n"
                "x = tiles_batch  # (B, 3, H, W) in [0, 1]: the tiles to train the universal patch on\n"
                "result = adversarial_patch(model, x, target=6, area=0.1, steps=100)  # 6 = NORM\n"
                "print(result.extra[\"placements\"])  # success beside grey and noise patches",
                "medfool attack patch --tile TILE.png --target NORM --set area=0.1 --out out/\n"
                "medfool attack patch --tile TILE.png --target NORM --set patch_file=out/patch.png --out out2/")
    return (_LOAD + f"from medfool_ref.attacks.{module} import {func}\n\n"
            "model = load_model()  # the reference tile classifier (CUDA when available)\n"
            "x = read_tile(\"tile.png\")[None].to(next(model.parameters()).device)  # (1, 3, H, W) in [0, 1]\n"
            f"result = {func}(model, x)  # keyword-only parameters, see help({func})\n"
            "print(result.summary())",
            f"medfool attack {impl} --tile TILE.png --out out/ [--set key=value ...]\n"
            "# writes the 8-bit adversarial tile, a comparison figure and report.json")


def paper_page(c: Catalog, pid: str) -> Page:
    p = c.papers[pid]
    here = page_uri("paper", pid)
    entry = public_entry(c.bib.entry(p.bibkey))
    reference = format_text(p.bibkey, entry)
    bibtex = bibtex_of({p.bibkey: entry})
    links = [external(u, u) for u in paper_links(c, pid)]
    demos = [link(here, page_uri("attack", d.attack), c.attacks[d.attack].name) + " on "
             + ", ".join(link(here, page_uri("domain", x), c.domains[x].name) for x in d.domains)
             + (f" <em>({esc(d.note)})</em>" if d.note else "") for d in p.demonstrates]
    survey = ""
    if p.survey:
        cells = ", ".join(f"{FAMILY_LABELS[t.row]} / {t.column.value}" for t in p.survey.table1) or "not in Table 1"
        survey = dl([("Survey reference", esc(p.survey.ref) if p.survey.ref else ""),
                     ("Cited for", esc(p.survey.context)),
                     ("Survey's Table 1", esc(cells) + (" " + link(here, "table1.md", "(table)") if p.survey.table1 else "")),
                     ("Note", esc(p.survey.note or ""))])
    body = block(
        f'<p class="mf-reference">{esc(reference)}</p>',
        f"<p>{' · '.join(links)}</p>" if links else "",
        f'<p class="mf-summary">{esc(p.summary)}</p>',
        dl([("Identification confidence", _chip(p.confidence.value, f"mf-conf-{p.confidence.value}")),
            ("Metadata checked in", esc("; ".join(p.checked_in))),
            ("About the identification", esc(p.confidence_note or "")),
            ("Roles", esc(", ".join(r.value for r in p.roles))),
            ("Proposes", ", ".join(link(here, page_uri("attack", a), c.attacks[a].name) for a in p.proposes)),
            ("Analyses", ", ".join(link(here, page_uri("attack", a), c.attacks[a].name) for a in p.analyses)),
            ("Domains", ", ".join(link(here, page_uri("domain", d), c.domains[d].name) for d in p.domains))]),
        "<h2>Medical demonstrations</h2>" if demos else "", ul(demos) if demos else "",
        "<h2>How the survey cites it</h2>" if survey else "", survey,
        '<h2 id="bibtex">BibTeX</h2>',
    )
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


def domain_page(c: Catalog, did: str) -> Page:
    d = c.domains[did]
    here = page_uri("domain", did)
    papers = [pp.id for pp in c.papers.values() if did in pp.domains or any(did in x.domains for x in pp.demonstrates)]
    datasets = [ds.id for ds in c.datasets.values() if ds.domain == did]
    scen = [s for s in (c.risk_model.scenarios if c.risk_model else []) if s.domain == did]
    body = block(
        f'<p class="mf-summary">{esc(d.summary)}</p>',
        dl([("Modality", esc(d.modality.value)), ("Granularity", esc(", ".join(g.value for g in d.granularity)))]),
        "<h2>Typical tasks</h2>", ul([esc(t) for t in d.typical_tasks]),
        "<h2>Pipeline stages</h2>", "<ol>" + "".join(f"<li>{esc(s)}</li>" for s in d.pipeline_stages) + "</ol>",
        "<h2>Attacks demonstrated here</h2>",
        ul([_entry_link(c, here, "attack", a) for a in attacks_in_domain(c, did)], empty="no demonstration in the catalog yet"),
        "<h2>Risk scenarios</h2>",
        ul([link(here, "risk-model.md", s.id) + f": {esc(c.attacks[s.attack].name)}" for s in scen], empty="none"),
        "<h2>Sample data</h2>", ul([_entry_link(c, here, "dataset", x) for x in datasets], empty="none shipped"),
        "<h2>Papers</h2>", ul([_paper_link(c, here, x) for x in papers]),
    )
    return Page(here, d.name, body, tags=(did,))


def defence_page(c: Catalog, did: str) -> Page:
    d = c.defences[did]
    here = page_uri("defence", did)
    body = block(
        f'<p class="mf-summary">{esc(d.summary)}</p>',
        dl([("Stable id", f"<code>{esc(d.stable_id)}</code>"), ("Aliases", esc(", ".join(d.aliases))),
            ("Adaptive-attack evaluation", _chip(d.adaptive_evaluation.value, f"mf-adaptive-{d.adaptive_evaluation.value}")),
            ("About that evaluation", esc(d.adaptive_note)), ("Limitations", esc(d.limitations))]),
        "<h2>Counters</h2>", ul([_entry_link(c, here, "attack", a) for a in d.counters]),
        "<h2>Papers</h2>", ul([_paper_link(c, here, p) for p in d.papers], empty="no paper in the catalog"),
    )
    return Page(here, d.name, body, tags=("defence",))


def dataset_page(c: Catalog, did: str) -> Page:
    d = c.datasets[did]
    here = page_uri("dataset", did)
    files = "".join(f"<tr><td><code>{esc(f.path)}</code></td><td>{esc(f.label or '')}</td><td><code>{esc(f.sha256)}</code></td></tr>"
                    for f in d.files)
    body = block(
        f'<p class="mf-summary">{esc(d.summary)}</p>',
        dl([("Licence", esc(d.licence.value)), ("Attribution", esc(d.attribution)), ("Changes", esc(d.changes or "none")),
            ("Source", esc(d.source)),
            ("DOI", external(f"https://doi.org/{d.source_doi}", d.source_doi) if d.source_doi else ""),
            ("Domain", _entry_link(c, here, "domain", d.domain)),
            ("Papers", ", ".join(_paper_link(c, here, p) for p in d.papers)),
            ("Shipped in", f"<code>{esc(d.location)}</code>"),
            ("Classes", esc(", ".join(d.classes)))]),
        f"<h2>Files ({len(d.files)}, sha256 checked on load)</h2>",
        f'<table class="mf-table"><thead><tr><th>File</th><th>Label</th><th>sha256</th></tr></thead><tbody>{files}</tbody></table>',
    )
    return Page(here, d.name, body, tags=(d.domain, "dataset"))


def index_page(c: Catalog, kind: str) -> Page:
    here = f"{sec_dir(kind)}/index.md"
    table = c.tables()[kind]
    rows = []
    for obj in table.values():
        name = getattr(obj, "name", None) or obj.id  # type: ignore[attr-defined]
        extra = ""
        if kind == "attack":
            extra = f"{FAMILY_LABELS[obj.family]} · {ROUTE_LABELS[route_of(obj)]}"  # type: ignore[attr-defined]
        elif kind == "paper":
            extra = f"{obj.confidence.value}" + (f" · survey ref {obj.survey.ref}" if obj.survey and obj.survey.ref else "")  # type: ignore[attr-defined]
        elif kind == "defence":
            extra = obj.adaptive_evaluation.value  # type: ignore[attr-defined]
        elif kind == "dataset":
            extra = obj.licence.value  # type: ignore[attr-defined]
        elif kind == "domain":
            extra = obj.modality.value  # type: ignore[attr-defined]
        rows.append(f"<tr><td>{link(here, page_uri(kind, obj.id), name)}</td><td>{esc(extra)}</td></tr>")  # type: ignore[attr-defined]
    tid = f"{kind}-index"
    body = block(
        _filter_box(tid),
        f'<table class="mf-table mf-sortable" id="{tid}"><thead><tr><th>Entry</th><th>About</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>",
    )
    return Page(here, KIND_TITLES[kind], body)


def cite_page(c: Catalog) -> Page:
    here = "cite.md"
    downloads = [f"{link(here, path, path.split('/')[-1])}: {esc(what)}" for path, what in DOWNLOADS.items()]
    body = block(
        "<h2>Cite the catalog</h2>",
        f"<p>Cite medfool as a whole with <code>CITATION.cff</code> at the root of the repository (version {esc(c.version)}), "
        "or one entry with its stable id and the catalog version:</p>",
        "<pre><code>medfool cite deepfool                 # BibTeX of the entry and its key papers\n"
        "medfool cite MFA-0002 --format text   # the same by stable id, as formatted text\n"
        "medfool cite su2019one --format csl-json</code></pre>",
        "<p>Attack and defence stable ids (<code>MFA-nnnn</code>, <code>MFD-nnnn</code>) are never reused: retired ids "
        "are listed in <code>catalog/catalog.yaml</code> and the validator refuses them.</p>",
        "<h2>Downloads</h2>", ul(downloads),
        "<h2>Cite the survey this catalog starts from</h2>",
        f"<p>{_paper_link(c, here, 'sipola2020fooling')}</p>",
    )
    return Page(here, "Cite and download", body)


def all_pages(c: Catalog, results_dir: object = None) -> list[Page]:
    pages = [home(c), table1_page(c), routes_page(c), risk_page(c), cite_page(c)]
    for kind in c.tables():
        pages.append(index_page(c, kind))
    pages += [attack_page(c, a, results_dir) for a in c.attacks]
    pages += [paper_page(c, p) for p in c.papers]
    pages += [domain_page(c, d) for d in sorted(c.domains, key=lambda d: c.domains[d].order)]
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
