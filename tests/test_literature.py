"""Issue #18: the literature since the survey, its attacks and defences, and the raised seed references.

Checks that every paper added from the reading list (``bib/literature.bib``) says where its metadata was
seen, that no paper marked verified anywhere in the catalog lacks a DOI, an arXiv id or a URL, that the
new attack and defence entries are wired into the catalog (stable ids, risk scenarios, relations) and that
the built site shows them with those relations.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from medfool_ref.catalog import load_catalog
from medfool_ref.catalog.derive import defences_for, papers_by_relation, table1
from medfool_ref.catalog.models import Column, Family
from medfool_ref.registry import IMPLEMENTATIONS, spec
from sitebuild import read

# the 34 works of shared/reference/literature-2017-2026.md, by BibTeX key
READING_LIST = [
    "tellez2019quantifying", "korpihalkola2020one", "foote2021now", "schomigmarkiefka2021quality", "wang2021stress",
    "ghaffarilaleh2022adversarial", "alatalo2022chromatic", "zhang2022interpreting", "vu2023nuclear", "hanif2024baple",
    "liu2025butterfly", "wang2025universal", "malik2025hierarchical", "carloni2025pathology", "komen2026towards",
    "thiringer2026scanner", "hong2026physics", "mirsky2019ctgan", "ozbulak2019impact", "winkler2019association",
    "hirano2021universal", "apostolidis2021survey", "ma2021understanding", "bortsova2021adversarial",
    "kaviani2022adversarial", "feng2022fiba", "minagi2022natural", "dong2024survey", "disalvo2024medmnistc",
    "clusmann2025prompt", "ilse2018attention", "carlini2019evaluating", "croce2020reliable", "tramer2020adaptive",
]
# found and checked in the same issue: works a security reviewer would miss
FOUND_IN_CHECK = ["moosavidezfooli2017universal", "han2021advancing", "levy2022security"]

NEW_ATTACKS = {
    "mil-slide-perturbation": "MFA-0016",
    "universal-adversarial-perturbation": "MFA-0017",
    "utap": "MFA-0018",
    "adversarial-stain-perturbation": "MFA-0019",
    "physical-artefacts": "MFA-0020",
    "frequency-injection-backdoor": "MFA-0021",
    "prompt-learning-backdoor": "MFA-0022",
    "vlm-prompt-injection": "MFA-0023",
    "apgd": "MFA-0024",
    "segmentation-mask-attack": "MFA-0025",
}
NEW_DEFENCES = {
    "dual-batch-norm": "MFD-0006",
    "hierarchical-adversarial-training": "MFD-0007",
    "calibrated-adversarial-stain-augmentation": "MFD-0008",
    "scanner-invariant-fine-tuning": "MFD-0009",
    "adversarial-example-detection": "MFD-0010",
}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def _literature_keys(catalog) -> list[str]:
    return [key for key, path in catalog.bib.files.items() if path == "bib/literature.bib"]


def test_literature_bib_holds_the_reading_list_and_the_finds(catalog) -> None:
    assert sorted(_literature_keys(catalog)) == sorted(READING_LIST + FOUND_IN_CHECK)


@pytest.mark.parametrize("key", READING_LIST + FOUND_IN_CHECK)
def test_every_added_paper_says_where_it_was_seen(catalog, key: str) -> None:
    fields = catalog.bib.entry(key).fields
    assert fields.get("x-source", "").strip(), f"{key}: no x-source"
    assert fields.get("x-confidence", "").strip() in {"verified", "likely", "unknown"}, key
    paper = next(p for p in catalog.papers.values() if p.bibkey == key)
    assert paper.confidence.value == fields["x-confidence"].strip()
    assert paper.checked_in and all(c.strip() for c in paper.checked_in)
    assert paper.survey is None  # the survey cites none of them


def test_no_verified_paper_lacks_a_doi_an_arxiv_id_or_a_url(catalog) -> None:
    missing = [p.id for p in catalog.papers.values() if p.confidence.value == "verified"
               and not any(catalog.bib.entry(p.bibkey).fields.get(f, "").strip() for f in ("doi", "eprint", "url"))]
    assert missing == []


def test_new_entries_take_the_next_stable_ids(catalog) -> None:
    for aid, sid in NEW_ATTACKS.items():
        attack = catalog.attacks[aid]
        assert attack.stable_id == sid
        # an implementation, where an entry has one, is a registered attack (APGD: the audit's worst case;
        # mil-slide-perturbation: the slide attack); the others are catalogued only
        assert attack.implementation is None or attack.implementation in IMPLEMENTATIONS, aid
    for did, sid in NEW_DEFENCES.items():
        assert catalog.defences[did].stable_id == sid
    retired = set(catalog.meta.retired_attack_ids) | set(catalog.meta.retired_defence_ids)
    assert not retired & (set(NEW_ATTACKS.values()) | set(NEW_DEFENCES.values()))


def test_every_new_attack_has_a_risk_scenario_and_a_paper(catalog) -> None:
    scenario_attacks = {s.attack for s in catalog.risk_model.scenarios}
    for aid in NEW_ATTACKS:
        assert aid in scenario_attacks, f"{aid}: no scenario in the risk model"
        rel = papers_by_relation(catalog, aid)
        assert rel["proposes"] or rel["analyses"] or rel["demonstrates"], f"{aid}: no paper"


def test_relations_of_the_anchor_papers(catalog) -> None:
    def demos(pid: str) -> set[tuple[str, str]]:
        return {(d.attack, dom) for d in catalog.papers[pid].demonstrates for dom in d.domains}

    # existing implementations are linked, not duplicated
    assert ("one-pixel", "histopathology") in demos("korpihalkola2020one")
    assert {("pgd", "histopathology"), ("fgsm", "histopathology")} <= demos("ghaffarilaleh2022adversarial")
    assert "mil-slide-perturbation" in catalog.papers["zhang2022interpreting"].proposes
    assert ("mil-slide-perturbation", "histopathology") in demos("liu2025butterfly")
    assert "utap" in catalog.papers["wang2025universal"].proposes
    assert "frequency-injection-backdoor" in catalog.papers["feng2022fiba"].proposes
    assert "vlm-prompt-injection" in catalog.papers["clusmann2025prompt"].proposes
    assert "apgd" in catalog.papers["croce2020reliable"].proposes
    assert "dual-batch-norm" in defences_for(catalog, "pgd")
    assert catalog.defences["dual-batch-norm"].adaptive_evaluation.value == "evaluated-broken"
    assert {"han2021advancing", "ghaffarilaleh2022adversarial"} <= set(catalog.defences["dual-batch-norm"].papers)


def test_extended_table1_has_the_new_rows_and_the_seed_table_does_not(catalog) -> None:
    seed = {r.family: r for r in table1(catalog, "seed").rows}
    extended = {r.family: r for r in table1(catalog, "all").rows}
    assert [r.family for r in table1(catalog, "all").rows] == list(Family)
    assert "liu2025butterfly" in extended[Family.ADVERSARIAL_IMAGE].medical
    assert "korpihalkola2020one" in extended[Family.ONE_PIXEL].medical
    assert "alatalo2022chromatic" in extended[Family.ONE_PIXEL].general
    assert "feng2022fiba" in extended[Family.TRAINING_TAMPERING].medical
    assert "clusmann2025prompt" in extended[Family.ADVERSARIAL_PATCH].general
    new_papers = set(READING_LIST + FOUND_IN_CHECK)
    for row in seed.values():
        for column in Column:
            assert not new_papers & set(getattr(row, column.value)), row.family


def test_seed_reference_corrections(catalog) -> None:
    for pid in ("mihajlovic2018fooling", "mikolajczyk2018data"):
        assert catalog.papers[pid].confidence.value == "verified"
        assert "issue #18" in catalog.papers[pid].confidence_note
    fields = catalog.bib.entry("armanious2019adversarial").fields
    assert fields["pages"] == "3267--3271" and "ICASSP 2020" in fields["x-remark"]
    assert catalog.bib.entry("gurcan2009histopathological").fields["doi"] == "10.1109/RBME.2009.2034865"
    assert catalog.papers["gurcan2009histopathological"].confidence.value == "unknown"
    for pid in ("aeffner2019introduction", "armanious2019adversarial", "deng2019multiobjective", "madry2018towards"):
        assert catalog.papers[pid].confidence.value == "likely", pid
        assert "issue #18" in catalog.bib.entry(pid).fields["x-source"], pid


# --------------------------------------------------------------------------- the built site


def _targets(site: Path, page: Path) -> set[Path]:
    """Every page (resolved) that a page links to."""
    out = set()
    for link in read(page).links:
        parts = urlsplit(link)
        if parts.scheme or not parts.path:
            continue
        out.add((page.parent / unquote(parts.path)).resolve())
    return out


@pytest.mark.parametrize("aid", list(NEW_ATTACKS))
def test_new_attack_pages_show_their_relations(built_site: Path, catalog, aid: str) -> None:
    page = built_site / "attacks" / f"{aid}.html"
    text = page.read_text(encoding="utf-8")
    assert NEW_ATTACKS[aid] in text
    if catalog.attacks[aid].implementation:
        path = "medfool_ref/" + spec(catalog.attacks[aid].implementation).module_path.split(".", 1)[1].replace(".", "/") + ".py"
        assert path in text and "No reference implementation yet" not in text
    else:
        assert "No reference implementation yet" in text
    links = _targets(built_site, page)
    rel = papers_by_relation(catalog, aid)
    for pid in rel["proposes"] + rel["analyses"] + rel["demonstrates"]:
        assert (built_site / "papers" / f"{pid}.html").resolve() in links, (aid, pid)
    for p in catalog.papers.values():
        for d in p.demonstrates:
            if d.attack == aid:
                for dom in d.domains:
                    assert (built_site / "domains" / f"{dom}.html").resolve() in links, (aid, dom)
    for did in defences_for(catalog, aid):
        assert (built_site / "defences" / f"{did}.html").resolve() in links, (aid, did)
    for fig in catalog.attacks[aid].paper_figures:
        assert (built_site / "papers" / f"{fig.paper}.html").resolve() in links


@pytest.mark.parametrize("did", list(NEW_DEFENCES))
def test_new_defence_pages_show_their_relations(built_site: Path, catalog, did: str) -> None:
    page = built_site / "defences" / f"{did}.html"
    text = page.read_text(encoding="utf-8")
    defence = catalog.defences[did]
    assert NEW_DEFENCES[did] in text
    assert f"mf-adaptive-{defence.adaptive_evaluation.value}" in text
    links = _targets(built_site, page)
    for aid in defence.counters:
        assert (built_site / "attacks" / f"{aid}.html").resolve() in links, (did, aid)
    for pid in defence.papers:
        assert (built_site / "papers" / f"{pid}.html").resolve() in links, (did, pid)


def test_new_papers_render_with_their_bibtex_and_attack_links(built_site: Path, catalog) -> None:
    for pid in ("liu2025butterfly", "clusmann2025prompt", "korpihalkola2020one", "tramer2020adaptive"):
        page = built_site / "papers" / f"{pid}.html"
        parsed = read(page)
        assert [b for b in parsed.code_blocks if b.lstrip().startswith("@")], pid
        links = _targets(built_site, page)
        paper = catalog.papers[pid]
        for aid in [*paper.proposes, *paper.analyses, *(d.attack for d in paper.demonstrates)]:
            assert (built_site / "attacks" / f"{aid}.html").resolve() in links, (pid, aid)


def test_site_table1_lists_the_new_papers(built_site: Path) -> None:
    page = read(built_site / "table1.html")
    extended = {h for row in page.tables["table1-all"] for cell in row for h, _ in cell}
    seed = {h for row in page.tables["table1-seed"] for cell in row for h, _ in cell}
    for pid in ("liu2025butterfly", "korpihalkola2020one", "feng2022fiba", "clusmann2025prompt"):
        assert f"papers/{pid}.html" in extended
        assert f"papers/{pid}.html" not in seed
