"""The built documentation site: pages, Table 1, links, BibTeX blocks, self-containment, escaping."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from pybtex.database import parse_string

from medfool_ref.catalog import load_catalog
from medfool_ref.catalog.derive import table1
from sitebuild import build, copy_project, read

SECTIONS = {"attack": "attacks", "paper": "papers", "domain": "domains", "defence": "defences", "dataset": "datasets"}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_every_entry_has_a_page(built_site: Path, catalog) -> None:
    for kind, table in catalog.tables().items():
        for entry_id in table:
            assert (built_site / SECTIONS[kind] / f"{entry_id}.html").is_file(), (kind, entry_id)
    for page in ("index", "table1", "routes", "risk-model", "cite", "contributing", "reference-model", "benchmarks"):
        assert (built_site / f"{page}.html").is_file()


@pytest.mark.parametrize("scope", ["seed", "all"])
def test_table1_rows_and_links_equal_the_catalog(built_site: Path, catalog, scope: str) -> None:
    page = read(built_site / "table1.html")
    rows = [r for r in page.tables[f"table1-{scope}"] if r]
    expected = table1(catalog, scope).rows
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected):
        _, general, medical = row
        assert [h for h, _ in general] == [f"papers/{p}.html" for p in want.general]
        assert [h for h, _ in medical] == [f"papers/{p}.html" for p in want.medical]
        for (_, text), pid in zip(general + medical, want.general + want.medical):
            assert pid in text


def test_paper_bibtex_block_parses(built_site: Path, catalog) -> None:
    for pid in ("su2019one", "kugler2018exploring", "mihajlovic2018fooling"):
        page = read(built_site / "papers" / f"{pid}.html")
        blocks = [b for b in page.code_blocks if b.lstrip().startswith("@")]
        assert len(blocks) == 1, pid
        data = parse_string(blocks[0], "bibtex")
        assert list(data.entries) == [catalog.papers[pid].bibkey]
        assert "x-confidence" not in blocks[0]


def _html_files(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html"))


def test_every_internal_link_resolves(built_site: Path) -> None:
    broken = []
    ids_cache: dict[Path, set[str]] = {}
    for path in _html_files(built_site):
        page = read(path)
        for link in page.links + page.resources:
            parts = urlsplit(link)
            if parts.scheme in ("http", "https", "mailto"):
                continue
            if parts.scheme == "data" and link.startswith("data:image/") and link in page.resources:
                continue  # an image inlined in a self-contained report (the audit's report.html)
            assert parts.scheme == "", f"{path}: unexpected link scheme {link[:80]!r}"
            base = built_site if parts.path.startswith("/") else path.parent
            target = (base / unquote(parts.path).lstrip("/")).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{path.relative_to(built_site)} -> {link}")
                continue
            if parts.fragment and target.suffix == ".html" and not parts.fragment.startswith("__"):
                ids = ids_cache.setdefault(target, read(target).ids)
                if parts.fragment not in ids:
                    broken.append(f"{path.relative_to(built_site)} -> {link} (no such anchor)")
    assert broken == []


def test_site_is_self_contained(built_site: Path) -> None:
    for path in _html_files(built_site):
        page = read(path)
        for res in page.resources:
            assert not re.match(r"^(https?:)?//", res), f"{path}: loads {res}"
        text = path.read_text(encoding="utf-8")
        for host in ("fonts.googleapis", "fonts.gstatic", "unpkg.com", "cdn.jsdelivr", "cdnjs"):
            assert host not in text, f"{path}: mentions {host}"
    for css in built_site.rglob("*.css"):
        assert not re.search(r"url\((['\"]?)(https?:)?//", css.read_text(encoding="utf-8")), css


def test_downloads(built_site: Path, catalog) -> None:
    import json

    bib = parse_string((built_site / "downloads/medfool.bib").read_text(), "bibtex")
    assert set(bib.entries) == {p.bibkey for p in catalog.papers.values()}
    csl = json.loads((built_site / "downloads/medfool.csl.json").read_text())
    assert len(csl) == len(catalog.papers)
    export = json.loads((built_site / "downloads/catalog.json").read_text())
    assert export["version"] == catalog.version
    schema = json.loads((built_site / "downloads/catalog.schema.json").read_text())
    assert schema["title"] == "medfool catalog export"


def test_interop_downloads_and_atlas_links(built_site: Path, catalog) -> None:
    import stix2

    bundle = stix2.parse((built_site / "downloads/medfool.stix.json").read_text(), allow_custom=False)
    kinds = [o.type for o in bundle.objects]
    assert kinds.count("attack-pattern") == len(catalog.attacks) and kinds.count("course-of-action") == len(catalog.defences)
    for name in ("medfool.atlas-layer.json", "medfool.atlas-layer.audit.json"):  # the site has the recorded audit
        layer = json.loads((built_site / "downloads" / name).read_text())
        assert layer["domain"] == "atlas-atlas" and layer["techniques"]
    cite = read(built_site / "cite.html")
    for name in ("medfool.stix.json", "medfool.atlas-layer.json", "medfool.atlas-layer.audit.json"):
        assert f"downloads/{name}" in cite.links
    page = read(built_site / "attacks" / "pgd.html")
    assert [u for u in page.links if "atlas.mitre.org" in u] == [f"https://atlas.mitre.org/techniques/{t.id}" for t in catalog.attacks["pgd"].atlas]
    page = read(built_site / "defences" / "adversarial-training.html")
    assert "https://atlas.mitre.org/mitigations/AML.M0003" in page.links


def test_routes_svg_links_every_attack(built_site: Path, catalog) -> None:
    text = (built_site / "routes.html").read_text(encoding="utf-8")
    start = text.index('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 760')
    svg = text[start:text.index("</svg>", start)]
    for aid in catalog.attacks:
        assert f'href="attacks/{aid}.html"' in svg


def test_risk_matrix_places_every_scenario(built_site: Path, catalog) -> None:
    page = read(built_site / "risk-model.html")
    cells = [c for row in page.tables["risk-matrix"] for c in row]
    placed = [h for cell in cells for h, _ in cell]
    assert sorted(placed) == sorted(f"#scenario-{s.id}" for s in catalog.risk_model.scenarios)


def test_search_index_has_names_and_aliases(built_site: Path) -> None:
    index = (built_site / "search" / "search_index.json").read_text(encoding="utf-8")
    for term in ("DeepFool", "Expectation over Transformation", "EOT", "BadNets", "trojan trigger"):
        assert term in index


HOSTILE = "Evil <script>alert('x')</script> <img src=x onerror=alert(1)> [click](javascript:alert(2)) **bold** & more"


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = copy_project(tmp_path_factory.mktemp("project"))
    path = project / "catalog/attack/deepfool.yaml"
    text = path.read_text()
    quoted = json.dumps(HOSTILE)  # a JSON string is a valid YAML scalar
    text = text.replace("name: DeepFool\n", f"name: {quoted}\n")
    text = re.sub(r"summary: >-\n(  .*\n)+", f"summary: {quoted}\n", text)
    path.write_text(text)
    out = project / "built"
    result = build(project, out)
    assert result.returncode == 0, result.stderr
    return out


class _Elements(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []
        self.script_text: list[str] = []
        self._script = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {k: v or "" for k, v in attrs}))
        self._script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._script = False

    def handle_data(self, data: str) -> None:
        if self._script:
            self.script_text.append(data)


def test_catalog_text_renders_as_text(hostile_site: Path) -> None:
    for page in (hostile_site / "attacks/deepfool.html", hostile_site / "table1.html", hostile_site / "index.html",
                 hostile_site / "routes.html", hostile_site / "risk-model.html"):
        parsed = _Elements(page.read_text(encoding="utf-8"))
        for tag, attrs in parsed.found:
            assert not (tag == "img" and attrs.get("src") == "x"), page
            assert not any(k.startswith("on") for k in attrs), (page, tag, attrs)
            assert not attrs.get("href", "").startswith("javascript:"), page
        assert not any("alert(" in s for s in parsed.script_text), page
    attack = (hostile_site / "attacks/deepfool.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(" in attack and "&lt;img src=x onerror=alert(1)&gt;" in attack
    assert "<strong>bold</strong>" not in attack


def test_catalog_error_fails_the_build(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    path = project / "catalog/attack/pgd.yaml"
    path.write_text(path.read_text().replace("family: adversarial-image", "family: adversarial-images"))
    result = build(project, tmp_path / "out")
    assert result.returncode != 0
    assert "catalog/attack/pgd.yaml:9: family: 'adversarial-images' is not one of" in result.stdout + result.stderr


def test_attack_page_shows_a_real_run(tmp_path: Path) -> None:
    import subprocess
    import sys

    project = copy_project(tmp_path / "project")
    exe = Path(sys.executable).parent / "medfool"
    run = subprocess.run([str(exe), "results", "--only", "fgsm", "--out", str(project / "build/results")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = json.loads((project / "build/results/fgsm/report.json").read_text())["summary"]
    assert report["images"] >= 40 and 0 < report["successes"] <= report["images"]
    out = tmp_path / "out"
    result = build(project, out)
    assert result.returncode == 0, result.stderr
    page = (out / "attacks/fgsm.html").read_text(encoding="utf-8")
    assert "Results of a real run on the sample tiles" in page
    assert f"<dd>{report['successes']}</dd>" in page
    assert (out / "results/fgsm/comparison.png").is_file()
    assert 'src="../results/fgsm/comparison.png"' in page
    # an attack without a recorded run says so
    assert "No run of <code>pgd</code> is recorded" in (out / "attacks/pgd.html").read_text(encoding="utf-8")


def test_results_show_provenance_and_staleness(tmp_path: Path) -> None:
    from medfool_ref.site.results import results_html

    folder = tmp_path / "fgsm"
    folder.mkdir()
    provenance = {"medfool": "0.1.0", "code_hash": "abc123", "machine": "x86_64", "date": "2026-01-02",
                  "command": "medfool results --only fgsm"}
    report = {"summary": {"images": 45, "successes": 40, "success_rate": 0.8889, "not_a_known_key": 1,
                          "by_trigger": {"ink-mark": {"attack_success_rate": 0.5}}},  # other keys missing
              "provenance": provenance}
    (folder / "report.json").write_text(json.dumps(report))
    html = results_html("fgsm", tmp_path, "attacks/fgsm.md")
    assert "<dd>40</dd>" in html and "<dd>88.9% (40/45, 95% CI 76.5-95.2%)</dd>" in html and "not_a_known_key" not in html
    assert "ink-mark: CA ? (clean model ?), ASR 50.0% (clean model ?), RA ?" in html
    assert "<h4>Provenance</h4>" in html
    for key, value in provenance.items():
        assert f"<dt>{key}</dt><dd>{value}</dd>" in html
    assert "mf-stale" not in html

    (folder / "report.json").write_text(json.dumps({**report, "provenance": {**provenance, "stale": True}}))
    html = results_html("fgsm", tmp_path, "attacks/fgsm.md")
    assert re.search(r'<p class="mf-stale">The code or parameters that produced this result have changed since', html)

    (folder / "report.json").write_text(json.dumps({"summary": {"images": 3}}))  # an older report, without provenance
    html = results_html("fgsm", tmp_path, "attacks/fgsm.md")
    assert "<dd>3</dd>" in html and "Provenance" not in html


def test_a_recorded_result_is_stale_when_its_code_changes_and_a_fresh_one_wins(tmp_path: Path) -> None:
    from medfool_ref.registry import source_fingerprint
    from medfool_ref.site.results import read_run, result_files

    fresh, recorded = tmp_path / "fresh", tmp_path / "recorded"
    for folder, n in ((recorded, 7), (fresh, 9)):
        (folder / "patch").mkdir(parents=True)
        (folder / "patch" / "comparison.png").write_bytes(b"png")
    current = {"code_sha256": source_fingerprint("patch"), "command": "medfool results --recorded"}
    (recorded / "patch" / "report.json").write_text(json.dumps({"summary": {"images": 7}, "provenance": current}))
    run = read_run("patch", [fresh, recorded], "attacks/adversarial-patch.md")
    assert run.status == "found" and ("tiles attacked (those the reference model classifies correctly)", "7") in run.facts
    assert not run.stale
    changed = {**current, "code_sha256": "0" * 64}  # made by other code than today's
    (recorded / "patch" / "report.json").write_text(json.dumps({"summary": {"images": 7}, "provenance": changed}))
    assert read_run("patch", [fresh, recorded], "attacks/adversarial-patch.md").stale
    (fresh / "patch" / "report.json").write_text(json.dumps({"summary": {"images": 9}, "provenance": current}))
    run = read_run("patch", [fresh, recorded], "attacks/adversarial-patch.md")
    assert ("tiles attacked (those the reference model classifies correctly)", "9") in run.facts and not run.stale
    assert dict(result_files([fresh, recorded]))["results/patch/comparison.png"] == fresh / "patch" / "comparison.png"


def test_the_histopathology_page_links_the_recorded_runs(built_site: Path) -> None:
    """The shipped site has the Whole slides (and, once recorded, Audit) pages, and the H&E domain page links them."""
    page = built_site / "domains" / "histopathology.html"
    text = page.read_text(encoding="utf-8")
    assert "Measured here" in text and 'href="../slides.html"' in text
    if (built_site / "audit.html").is_file():
        assert 'href="../audit.html"' in text
    other = built_site / "domains" / "chest-xray.html"
    assert "Measured here" not in other.read_text(encoding="utf-8")


def test_the_defences_measured_page_lists_every_defence_and_the_recorded_runs(built_site: Path, catalog) -> None:
    """Every registered defence has a row (its catalog entry linked where it has one); the recorded hardening and
    certification runs appear with n and 95% intervals; every defence entry with an implementation links here."""
    from medfool_ref.defences.registry_hardening import NAMES
    from medfool_ref.defences.specs import SPECS

    text = (built_site / "defences-measured.html").read_text(encoding="utf-8")
    names = re.findall(r"<tr><td><code>([^<]+)</code></td>", text)
    assert names == [*SPECS, *NAMES]
    rows = [r for r in read(built_site / "defences-measured.html").tables["defence-registry"] if r]  # cells: their links
    linked = {name: row[2] for name, row in zip(names, rows)}
    for d in catalog.defences.values():
        if d.implementation:
            assert linked[d.implementation] == [(f"defences/{d.id}.html", d.name)], d.id
            page = (built_site / "defences" / f"{d.id}.html").read_text(encoding="utf-8")
            anchor = f"defended-{d.implementation}" if d.implementation in {"jpeg", "bit-depth", "median", "stain-norm", "resize-pad"} else "registered"
            assert f'href="../defences-measured.html#{anchor}"' in page, d.id
            assert f'id="{anchor}"' in text, d.id  # the row or section it links exists
    from sitebuild import ROOT

    card = json.loads((ROOT / "docs/results/hardening/card.json").read_text())
    after = card["after"]["robust"]
    assert f"{after['correct']}/{after['tiles']} ({after['accuracy']:.0%}; 95% CI {after['wilson95'][0]:.0%}-{after['wilson95'][1]:.0%})" in text
    cert = json.loads((ROOT / "docs/results/certify/certify.json").read_text())
    r0 = cert["certified_accuracy"][0]
    assert f"{r0['certified']}/{r0['tiles']} (" in text and 'src="defences/certified-accuracy.png"' in text
    assert (built_site / "defences" / "certified-accuracy.png").is_file()
    assert "mf-stale" not in text  # the committed runs were made by today's code
    # the recorded defended audits: one summary row per defence, part and budget, held-out first, then training, then all
    summary = [r for r in read(built_site / "defences-measured.html").tables["defended-summary"] if r]
    recorded = sorted(p.parent.name for p in (ROOT / "docs/results/defended").glob("*/report.json"))
    assert recorded and len(summary) == 3 * 2 * len(recorded)
    for name in recorded:
        doc = json.loads((ROOT / "docs/results/defended" / name / "report.json").read_text())
        held = doc["defence"]["splits"][0]
        b = held["budgets"][-1]
        row = f"{round(b['adaptive'] * held['tiles'])}/{held['tiles']} ({b['adaptive']:.0%}; 95% CI {b['adaptive_ci95'][0]:.0%}-{b['adaptive_ci95'][1]:.0%})"
        section = text[text.index(f'href="#defended-{name}"'):]
        assert held["name"] == "held-out" and row in section[:section.index("</tr>", section.index("8/255"))], name
        assert f'id="defended-{name}"' in text
        body = text[text.index(f'id="defended-{name}"'):]
        body = body[:min(i for i in (body.find("<h3", 1), body.find("<h2", 1), len(body)) if i > 0)]
        assert ('class="mf-unreliable"' in body) == bool(doc["unreliable"]), name  # a failed validity check is shown


def test_a_defence_run_is_stale_when_its_code_changes(tmp_path: Path, catalog) -> None:
    from sitebuild import ROOT

    from medfool_ref.site.defences import defences_page

    for run, name in (("hardening", "card.json"), ("certify", "certify.json")):
        (tmp_path / run).mkdir()
        doc = json.loads((ROOT / "docs/results" / run / name).read_text())
        doc["provenance"] = {**doc["provenance"], "code_sha256": "0" * 64}
        (tmp_path / run / name).write_text(json.dumps(doc))
    (tmp_path / "defended" / "jpeg").mkdir(parents=True)
    doc = json.loads((ROOT / "docs/results/defended/jpeg/report.json").read_text())
    doc["provenance"] = {**doc["provenance"], "code_sha256": "0" * 64}
    (tmp_path / "defended" / "jpeg" / "report.json").write_text(json.dumps(doc))
    body = defences_page(catalog, tmp_path).body
    assert body.count('class="mf-stale"') == 3
    assert "No recorded run" in defences_page(catalog, tmp_path / "absent").body
