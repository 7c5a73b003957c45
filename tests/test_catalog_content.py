"""The shipped catalog: valid, complete against the survey, and Table 1 exactly as the survey gives it."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from medfool_ref.catalog import Severity, check_catalog, default_root, load_catalog
from medfool_ref.catalog.derive import route_of, table1
from medfool_ref.catalog.models import Family, Route

ROOT = default_root()
# the survey's text is not part of the repository; the tests use it only where it is present beside a checkout
# (or named by MEDFOOL_SURVEY_TEXT)
SURVEY = Path(os.environ.get("MEDFOOL_SURVEY_TEXT") or ROOT.parent / "shared" / "seed" / "sipola2020-survey.txt")
TABLE1 = yaml.safe_load((Path(__file__).parent / "fixtures" / "survey-table1.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_shipped_catalog_has_no_problems() -> None:
    catalog, problems = check_catalog()
    assert catalog is not None
    assert [str(p) for p in problems] == []


def test_every_survey_reference_is_a_paper_once(catalog) -> None:
    refs = Counter(p.survey.ref for p in catalog.papers.values() if p.survey and p.survey.ref)
    assert sorted(refs) == list(range(1, 38))
    assert set(refs.values()) == {1}
    assert "sipola2020fooling" in catalog.papers


def test_confidence_counts_match_the_reference_review(catalog) -> None:
    # shared/reference/seed-references.md, its update and the second check (seed-references-check-2.md, issue #18,
    # which raised refs 21 and 22 to verified): refs 1-37 stand at 23 verified, 11 likely, 3 unknown
    seed = [p for p in catalog.papers.values() if p.survey and p.survey.ref]
    counts = Counter(p.confidence.value for p in seed)
    assert counts == {"verified": 23, "likely": 11, "unknown": 3}
    unknown = sorted(p.survey.ref for p in seed if p.confidence.value == "unknown")
    assert unknown == [14, 27, 31]
    raised = {p.survey.ref: p.confidence.value for p in seed if p.survey.ref in (21, 22)}
    assert raised == {21: "verified", 22: "verified"}


def test_every_method_the_survey_names_has_an_attack(catalog) -> None:
    names = {a.name.lower() for a in catalog.attacks.values()} | {al.lower() for a in catalog.attacks.values() for al in a.aliases}
    for method in ["fooling images", "deepfool", "eot", "adversarial patch", "one pixel attack", "badnets",
                   "autoencoder poisoning", "direct gradient method", "moea-apga", "gradient shielding",
                   "colour constancy error", "common adversarial noise", "pgd", "fgsm", "synthetic lung nodules"]:
        assert any(method in n for n in names), method


def test_every_domain_the_survey_names_exists(catalog) -> None:
    assert set(catalog.domains) >= {"histopathology", "chest-xray", "fundoscopy", "dermoscopy", "lung-ct", "brain-mri", "ecg", "eeg"}
    assert min(catalog.domains.values(), key=lambda d: d.order).id == "histopathology"


def test_figure2_routes(catalog) -> None:
    # Figure 2: images, patches and one-pixel attacks alter inputs; backdoors and poisoning tamper with training
    routes = {a.id: route_of(a) for a in catalog.attacks.values()}
    assert routes["badnets"] is Route.TRAINING_TAMPERING
    assert routes["generative-poisoning"] is Route.TRAINING_TAMPERING
    for attack in ("fooling-images", "deepfool", "eot", "adversarial-patch", "one-pixel"):
        assert routes[attack] is Route.INPUT_ALTERATION
    assert {a.family for a in catalog.attacks.values()} == set(Family)


def _survey_table_groups(text: str) -> list[list[int]]:
    """The bracketed reference groups of Table 1 in the survey's plain text, in reading order."""
    block = text[text.index("Table 1. Fooling methods"):text.index("Conclusions")]
    return [[int(n) for n in re.findall(r"\d+", line)] for line in block.splitlines() if re.fullmatch(r"\s*(\[\d+\],?)+\s*", line)]


def _cells_from_groups(groups: list[list[int]]) -> list[dict]:
    """Place the text groups into Table 1's cells by the mapping the fixture records."""
    rows = [{"method": r["method"], "general": [], "medical": []} for r in TABLE1["rows"]]
    for group, (row, column) in zip(groups, TABLE1["text_cells"], strict=True):
        rows[row][column] = group
    return rows


def test_table1_seed_equals_the_survey(catalog) -> None:
    """Golden test: the catalog's Table 1 equals the survey's, cell by cell and in the survey's order.

    The survey's cells are facts kept in tests/fixtures/survey-table1.yaml; where the survey's own text is
    present beside the checkout (../shared/seed/, our development machines), the fixture is also checked
    against that text, so a wrong fixture cannot pass there.
    """
    expected = {r["method"]: (r["general"], r["medical"]) for r in TABLE1["rows"]}
    table = table1(catalog, "seed")
    got = {}
    for row in table.rows:
        got[row.method] = ([catalog.papers[p].survey.ref for p in row.general], [catalog.papers[p].survey.ref for p in row.medical])
    assert got == expected
    assert [r.method for r in table.rows] == list(expected)
    # the fixture's two records of the table agree with each other
    assert _cells_from_groups(TABLE1["text_groups"]) == TABLE1["rows"]
    if SURVEY.is_file():
        assert _survey_table_groups(SURVEY.read_text(encoding="utf-8")) == TABLE1["text_groups"]


def test_survey_text_parser_reads_flattened_groups() -> None:
    """The parser used against the survey's text, on a made-up flattened table (no survey text needed)."""
    text = "intro [99]\nTable 1. Fooling methods of a survey.\nMethod\n\n[3],[1]\nRow two\n[4]\n[2],[5],[6]\n\nConclusions\n[7]"
    assert _survey_table_groups(text) == [[3, 1], [4], [2, 5, 6]]
    shuffled = [[1], [2], [3], [4], [5], [6]]
    rows = _cells_from_groups(shuffled)
    assert rows[1] == {"method": "Adversarial patches", "general": [3], "medical": [5]}


def test_table1_notes_flag_the_questionable_cells(catalog) -> None:
    notes = " ".join(table1(catalog, "seed").notes)
    for pid in ("armanious2019adversarial", "mikolajczyk2018data", "kugler2018exploring"):
        assert pid in notes


def test_table1_all_is_computed_from_relations(catalog) -> None:
    table = {r.family: r for r in table1(catalog, "all").rows}
    assert "goodfellow2015explaining" in table[Family.ADVERSARIAL_IMAGE].general
    assert "chuquicusma2018fool" in table[Family.ADVERSARIAL_IMAGE].medical
    # benign generative work is not an attack: not in the computed table
    assert "armanious2019adversarial" not in table[Family.ADVERSARIAL_IMAGE].medical
    for row in table.values():
        for pid in row.general + row.medical:
            assert pid in catalog.papers


def test_all_scope_differs_from_the_seed_table(catalog) -> None:
    before = [r.as_json() for r in table1(catalog, "seed").rows]
    extended = [r.as_json() for r in table1(catalog, "all").rows]
    assert before != extended


def test_datasets_cover_the_65_tiles(catalog) -> None:
    tiles = [f for d in catalog.datasets.values() for f in d.files if f.label]
    assert len(tiles) == 65
    for ds in catalog.datasets.values():
        assert ds.licence.value == "CC-BY-4.0" and "CC BY 4.0" in ds.attribution
        assert (ROOT / ds.location / "PROVENANCE.md").is_file()


def test_no_warnings_in_the_shipped_bibliography() -> None:
    _, problems = check_catalog()
    assert not [p for p in problems if p.severity is Severity.WARNING]
