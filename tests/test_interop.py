"""Issue 25: the MITRE ATLAS crosswalk, the ATLAS Navigator layer and the STIX 2.1 bundle.

The layer's structure is checked against the Navigator layer format (4.3, the version ATLAS's own layers carry);
the bundle is parsed back with stix2 and compared with the catalog, object by object and link by link.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import stix2
import yaml

from medfool_ref.catalog import load_catalog
from medfool_ref.catalog.atlas import SNAPSHOT, load_atlas, main as atlas_main, url
from medfool_ref.catalog.navigator import wilson
from medfool_ref.catalog.risk import scores
from medfool_ref.cli import main

AUDIT = Path(__file__).resolve().parents[1] / "docs" / "results" / "audit" / "report.json"

# the Navigator layer format (v4.3), the parts a layer must get right to load
_TECHNIQUE = {
    "type": "object",
    "required": ["techniqueID"],
    "additionalProperties": False,
    "properties": {
        "techniqueID": {"type": "string", "pattern": r"^AML\.T[0-9]{4}(\.[0-9]{3})?$"},
        "tactic": {"type": "string"},
        "comment": {"type": "string"},
        "enabled": {"type": "boolean"},
        "score": {"type": "number"},
        "color": {"type": "string"},
        "showSubtechniques": {"type": "boolean"},
        "metadata": {"type": "array", "items": {"type": "object", "required": ["name", "value"]}},
        "links": {"type": "array", "items": {"type": "object", "required": ["label", "url"]}},
    },
}
LAYER_SCHEMA = {
    "type": "object",
    "required": ["name", "domain", "versions", "techniques"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "versions": {"type": "object", "required": ["layer"], "properties": {"layer": {"const": "4.3"}, "navigator": {"type": "string"}}},
        "domain": {"const": "atlas-atlas"},
        "description": {"type": "string"},
        "techniques": {"type": "array", "items": _TECHNIQUE},
        "gradient": {"type": "object", "required": ["colors", "minValue", "maxValue"],
                     "properties": {"colors": {"type": "array", "minItems": 2, "items": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"}},
                                    "minValue": {"type": "number"}, "maxValue": {"type": "number"}}},
        "legendItems": {"type": "array", "items": {"type": "object", "required": ["label", "color"]}},
        "hideDisabled": {"type": "boolean"},
        "selectSubtechniquesWithParent": {"type": "boolean"},
        "metadata": {"type": "array", "items": {"type": "object", "required": ["name", "value"]}},
    },
}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def _export(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "out.json"
    assert main(["export", *extra, "-o", str(out)]) == 0
    return json.loads(out.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- the ATLAS snapshot and crosswalk


def test_snapshot_records_its_source_and_every_entry_maps(catalog) -> None:
    atlas = load_atlas()
    assert atlas.version == catalog.meta.atlas_version == "5.6.0"
    assert atlas.source["repository"] == "https://github.com/mitre-atlas/atlas-data" and len(atlas.source["commit"]) == 40
    assert (len(atlas.techniques), len(atlas.mitigations)) == (170, 35)
    assert atlas.label("AML.T0043.000") == "Craft Adversarial Data: White-Box Optimization"
    assert url("AML.M0003") == "https://atlas.mitre.org/mitigations/AML.M0003"
    assert all(a.atlas for a in catalog.attacks.values()) and all(d.atlas for d in catalog.defences.values())
    for a in catalog.attacks.values():
        assert all(atlas.techniques[t.id] == t.name for t in a.atlas), a.id
    # the survey's two routes land on the right ATLAS techniques
    assert "AML.T0043.000" in {t.id for t in catalog.attacks["pgd"].atlas}
    assert "AML.T0043.001" in {t.id for t in catalog.attacks["one-pixel"].atlas}
    assert "AML.T0020" in {t.id for t in catalog.attacks["badnets"].atlas}
    assert {m.id for m in catalog.defences["adversarial-training"].atlas} == {"AML.M0003"}


def test_snapshot_is_regenerated_from_an_atlas_file(tmp_path: Path) -> None:
    upstream = {"id": "ATLAS", "name": "x", "version": "9.1.0", "matrices": [{
        "id": "ATLAS", "name": "m", "tactics": [],
        "techniques": [{"id": "AML.T0043", "name": "Craft Adversarial Data", "description": "long text"},
                       {"id": "AML.T0043.000", "name": "White-Box Optimization", "subtechnique-of": "AML.T0043"}],
        "mitigations": [{"id": "AML.M0003", "name": "Model Hardening", "description": "d",
                         "techniques": [{"id": "AML.T0043", "use": "why"}, "AML.T0043.000"]}]}]}
    src, out = tmp_path / "ATLAS.yaml", tmp_path / "ids.yaml"
    src.write_text(yaml.safe_dump(upstream), encoding="utf-8")
    assert atlas_main([str(src), "--commit", "a" * 40, "--release", "v9.1.0", "--date", "2027-01-01", "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "long text" not in text and "why" not in text  # facts only, no ATLAS prose
    got = load_atlas(out)
    assert got.version == "9.1.0" and got.techniques == {"AML.T0043": "Craft Adversarial Data", "AML.T0043.000": "White-Box Optimization"}
    assert got.addresses == {"AML.M0003": ("AML.T0043", "AML.T0043.000")}
    assert SNAPSHOT.read_text(encoding="utf-8").startswith("# MITRE ATLAS ids and names")


# --------------------------------------------------------------------------- the ATLAS Navigator layer


def test_layer_from_the_catalog_risk(tmp_path: Path, catalog) -> None:
    layer = _export(tmp_path, "--format", "atlas-layer")
    jsonschema.validate(layer, LAYER_SCHEMA)
    atlas = load_atlas()
    by_id = {t["techniqueID"]: t for t in layer["techniques"]}
    assert len(by_id) == len(layer["techniques"])
    assert set(by_id) <= set(atlas.techniques)
    mapped = {t.id for a in catalog.attacks.values() for t in a.atlas}
    assert mapped <= set(by_id)
    risk: dict[str, int] = {}
    for s in scores(catalog):
        risk[s.attack] = max(risk.get(s.attack, 0), s.risk)
    for tid in mapped:
        want = [risk[a.id] for a in catalog.attacks.values() if tid in {t.id for t in a.atlas} and a.id in risk]
        assert by_id[tid].get("score") == (max(want) if want else None), tid
    assert by_id["AML.T0043.000"]["score"] == 25  # PGD's trial-endpoint scenario: likelihood 5 x severity 5
    assert "score" not in by_id["AML.T0088"] and "no risk scenario" in by_id["AML.T0088"]["comment"]
    assert by_id["AML.T0043"]["showSubtechniques"] and by_id["AML.T0043"]["score"] == 25  # parent shows its subs
    assert layer["gradient"]["maxValue"] == 25 and all(0 < t.get("score", 1) <= 25 for t in layer["techniques"])


def test_layer_from_an_audit(tmp_path: Path) -> None:
    report = {"model": {"name": "my-model", "sha256": "ab" * 32}, "date": "2026-12-02T00:00:00+00:00", "attacks": [
        {"id": "pgd", "catalog_id": "pgd", "budgets": [
            {"eps_255": 2.0, "norm": "linf", "success_rate": 0.25, "tiles_attacked": 40},
            {"eps_255": 8.0, "norm": "linf", "success_rate": 0.5, "tiles_attacked": 40}]},
        {"id": "one-pixel", "catalog_id": "one-pixel", "budgets": [{"eps": None, "norm": "l0", "success_rate": 0.1, "tiles_attacked": 10}]},
        {"id": "not-in-catalog", "catalog_id": "someone-elses", "budgets": [{"success_rate": 1.0, "tiles_attacked": 5}]}]}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report), encoding="utf-8")
    layer = _export(tmp_path, "--format", "atlas-layer", "--audit", str(path))
    jsonschema.validate(layer, LAYER_SCHEMA)
    by_id = {t["techniqueID"]: t for t in layer["techniques"]}
    lo_pgd, lo_pixel = wilson(20, 40)[0], wilson(1, 10)[0]
    assert by_id["AML.T0043.000"]["score"] == round(100 * lo_pgd, 1)  # the lower 95% bound, not the 50% point estimate
    assert by_id["AML.T0043.001"]["score"] == round(100 * lo_pixel, 1)
    assert by_id["AML.T0043.002"]["score"] == round(100 * lo_pgd, 1)
    comment = by_id["AML.T0043.000"]["comment"]
    assert "pgd at 8/255: 20/40 fooled (50%, 95% CI" in comment and "pgd at 2/255: 10/40" in comment
    assert "not run in this audit" in comment  # DeepFool, APGD, ... share the technique but were not run
    assert "1/10 fooled" in by_id["AML.T0040"]["comment"] and "n < 20: little evidence" in by_id["AML.T0040"]["comment"]
    assert "score" not in by_id["AML.T0020"] and "not run in this audit" in by_id["AML.T0020"]["comment"]
    assert layer["gradient"]["maxValue"] == 100
    meta = {m["name"]: m["value"] for m in layer["metadata"]}
    assert meta["audit_model_sha256"] == "ab" * 32 and meta["atlas_data_version"] == "5.6.0"


def test_layer_from_the_recorded_audit(tmp_path: Path) -> None:
    layer = _export(tmp_path, "--format", "atlas-layer", "--audit", str(AUDIT))
    jsonschema.validate(layer, LAYER_SCHEMA)
    by_id = {t["techniqueID"]: t for t in layer["techniques"]}
    recorded = json.loads(AUDIT.read_text(encoding="utf-8"))
    deepfool = next(a for a in recorded["attacks"] if a["id"] == "deepfool")["budgets"][0]
    k = round(deepfool["success_rate"] * deepfool["tiles_attacked"])
    assert by_id["AML.T0015"]["score"] >= round(100 * wilson(k, deepfool["tiles_attacked"])[0], 1)
    assert f"deepfool: {k}/{deepfool['tiles_attacked']} fooled" in by_id["AML.T0015"]["comment"]


@pytest.mark.parametrize("content, message", [
    ('{"attacks": 3}', "no 'attacks' list"),
    ('{"attacks": [{"catalog_id": "pgd"}]}', "attacks[0]: needs 'catalog_id' and a 'budgets' list"),
    ('{"attacks": [{"catalog_id": "pgd", "budgets": [{"success_rate": NaN, "tiles_attacked": 4}]}]}', "is not a rate between 0 and 1"),
    ("not json", "not a JSON audit report"),
])
def test_layer_refuses_a_bad_audit(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str) -> None:
    path = tmp_path / "report.json"
    path.write_text(content, encoding="utf-8")
    assert main(["export", "--format", "atlas-layer", "--audit", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_audit_only_with_the_layer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--format", "stix", "--audit", str(AUDIT)]) == 2
    assert "--audit goes with --format atlas-layer" in capsys.readouterr().err


# --------------------------------------------------------------------------- the STIX 2.1 bundle


def test_stix_bundle_parses_back_and_matches_the_catalog(tmp_path: Path, catalog) -> None:
    out = tmp_path / "bundle.json"
    assert main(["export", "--format", "stix", "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    bundle = stix2.parse(text, allow_custom=False)
    objs = bundle.objects
    by_type: dict[str, list] = {}
    for o in objs:
        by_type.setdefault(o.type, []).append(o)
    assert len(by_type["attack-pattern"]) == len(catalog.attacks)
    assert len(by_type["course-of-action"]) == len(catalog.defences)
    links = {(d.stable_id, catalog.attacks[a].stable_id) for d in catalog.defences.values() for a in d.counters}
    assert len(by_type["relationship"]) == len(links)

    def medfool_id(o) -> str:
        return next(r.external_id for r in o.external_references if r.source_name == "medfool")

    index = {o.id: o for o in objs}
    got = set()
    for r in by_type["relationship"]:
        assert r.relationship_type == "mitigates"
        src, dst = index[r.source_ref], index[r.target_ref]
        assert (src.type, dst.type) == ("course-of-action", "attack-pattern")
        got.add((medfool_id(src), medfool_id(dst)))
    assert got == links
    attacks = {a.stable_id: a for a in catalog.attacks.values()}
    for ap in by_type["attack-pattern"]:
        a = attacks[medfool_id(ap)]
        atlas = [(r.external_id, r.url) for r in ap.external_references if r.source_name == "mitre-atlas"]
        assert atlas == [(t.id, url(t.id)) for t in a.atlas]
        assert ap.name == a.name
    pgd = next(ap for ap in by_type["attack-pattern"] if ap.name == catalog.attacks["pgd"].name)
    madry = next(r for r in pgd.external_references if r.source_name == "madry2018towards")
    assert madry.url == "https://arxiv.org/abs/1706.06083"
    for coa in by_type["course-of-action"]:
        d = next(d for d in catalog.defences.values() if d.stable_id == medfool_id(coa))
        assert [r.external_id for r in coa.external_references if r.source_name == "mitre-atlas"] == [m.id for m in d.atlas]
    # reproducible: the same catalog gives the same bytes, ids are uuid5 of the stable ids
    again = tmp_path / "again.json"
    assert main(["export", "--format", "stix", "-o", str(again)]) == 0
    assert again.read_text(encoding="utf-8") == text
    assert all(o.id.split("--")[1][14] == "5" for o in objs)  # UUID version 5
