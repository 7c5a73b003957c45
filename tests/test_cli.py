"""The medfool CLI: table formats, citations, export round trip, show/list and exit codes."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from pybtex.database import parse_string

from medfool_ref.catalog import load_catalog
from medfool_ref.catalog.export import from_export, to_export
from medfool_ref.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_table_json_rows(capsys, catalog) -> None:
    code, out, _ = run(capsys, "table", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert [r["method"] for r in rows] == ["Adversarial images", "Adversarial patches", "One-pixel attack", "Training process tampering"]
    assert set(rows[0]) >= {"method", "general", "medical"}
    assert rows[1] == {"method": "Adversarial patches", "family": "adversarial-patch",
                       "general": ["brown2017adversarial"], "medical": ["finlayson2018adversarial"]}
    for row in rows:
        for pid in row["general"] + row["medical"]:
            assert pid in catalog.papers


def test_table_csv(capsys) -> None:
    code, out, _ = run(capsys, "table", "--format", "csv", "--scope", "all")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 4 and "goodfellow2015explaining" in rows[0]["general"].split("; ")


def test_table_latex_is_a_well_formed_tabular(capsys, catalog) -> None:
    code, out, _ = run(capsys, "table", "--format", "latex")
    assert code == 0
    assert out.startswith("\\begin{tabular}{lll}") and out.rstrip().endswith("\\end{tabular}")
    body = [l for l in out.splitlines() if l.endswith("\\\\")]
    assert len(body) == 5  # header + 4 rows
    for line in body:
        assert line.count("&") == 2
        assert line.count("{") == line.count("}")
    keys = re.findall(r"\\cite\{([^}]+)\}", out)
    assert keys and all(k in catalog.bib for k in keys)


def test_table_markdown_has_notes(capsys) -> None:
    code, out, _ = run(capsys, "table")
    assert code == 0
    assert "| One-pixel attack | [33] su2019one, [17] kugler2018exploring | — |" in out
    assert "the survey lists no medical-domain work" in out


@pytest.mark.parametrize("entry", ["su2019one", "deepfool", "histopathology", "adversarial-training", "kather2016-crc-texture-sample"])
def test_cite_bibtex_parses(capsys, catalog, entry: str) -> None:
    code, out, _ = run(capsys, "cite", entry)
    assert code == 0
    data = parse_string(out, "bibtex")
    assert data.entries
    for e in data.entries.values():
        assert not any(k.lower().startswith("x-") for k in e.fields)
    if entry in catalog.papers:
        assert list(data.entries) == [entry]
    else:
        assert f"medfool:{entry}" in data.entries
        assert catalog.version in data.entries[f"medfool:{entry}"].fields["howpublished"]


@pytest.mark.parametrize("entry", ["su2019one", "mihajlovic2018fooling", "pgd"])
def test_cite_csl_json(capsys, entry: str) -> None:
    code, out, _ = run(capsys, "cite", entry, "--format", "csl-json")
    assert code == 0
    items = json.loads(out)
    assert isinstance(items, list) and items
    for item in items:
        assert {"id", "type", "title"} <= set(item)
        assert "{" not in item["title"] and "\\" not in item["title"]
    if entry == "mihajlovic2018fooling":
        assert items[0]["author"][0] == {"family": "Mihajlović", "given": "Marko"}
        assert items[0]["DOI"] == "10.1109/MELCON.2018.8379110"


def test_cite_text_uses_pybtex_style(capsys) -> None:
    code, out, _ = run(capsys, "cite", "su2019one", "--format", "text")
    assert code == 0
    assert out.startswith("Jiawei Su, Danilo Vasconcellos Vargas, and Kouichi Sakurai. One pixel attack")
    assert "23(5):828–841" in out


def test_cite_by_stable_id_and_alias(capsys) -> None:
    assert run(capsys, "cite", "MFA-0007")[0] == 0
    code, out, _ = run(capsys, "show", "EOT")
    assert code == 0 and "MFA-0003" in out


def test_unknown_entry_is_a_usage_error(capsys) -> None:
    code, out, err = run(capsys, "cite", "deepfol")
    assert code == 2
    assert "no catalog entry 'deepfol'; did you mean deepfool?" in err
    assert "Traceback" not in err


def test_bad_option_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["table", "--format", "pdf"])
    assert exc.value.code == 2


def test_show_paper_and_list(capsys, catalog) -> None:
    code, out, _ = run(capsys, "show", "finlayson2018adversarial")
    assert code == 0
    assert "https://arxiv.org/abs/1804.05296" in out and "pgd on fundoscopy, chest-xray, dermoscopy" in out
    code, out, _ = run(capsys, "list", "--kind", "attack")
    assert code == 0 and len(out.splitlines()) == len(catalog.attacks) > 15  # the survey's 15 and the literature since


def test_export_round_trip(tmp_path: Path, capsys, catalog) -> None:
    target = tmp_path / "catalog.json"
    assert run(capsys, "export", "-o", str(target))[0] == 0
    data = json.loads(target.read_text())
    assert set(data) >= {"version", "attacks", "papers", "domains", "defences", "datasets", "risk_model"}
    for kind in ("attacks", "papers", "domains", "defences", "datasets"):
        assert all("id" in obj for obj in data[kind])
    back = from_export(target.read_text())
    assert to_export(back) == to_export(catalog)
    assert back.tables().keys() == catalog.tables().keys()
    for kind, table in catalog.tables().items():
        assert back.tables()[kind] == table


def test_export_validates_against_its_schema(tmp_path: Path, capsys) -> None:
    code, schema_text, _ = run(capsys, "export", "--format", "jsonschema")
    assert code == 0
    schema = json.loads(schema_text)
    code, export_text, _ = run(capsys, "export")
    data = json.loads(export_text)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(data, schema)
    data["attacks"][0]["family"] = "not-a-family"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)


def test_export_to_missing_folder(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "export", "-o", str(tmp_path / "no" / "x.json"))
    assert code == 2 and "does not exist" in err


def test_console_script_exit_codes(tmp_path: Path, catalog) -> None:
    exe = Path(sys.executable).parent / "medfool"
    ok = subprocess.run([str(exe), "validate"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip().startswith(f"valid: {len(catalog.attacks)} attacks, {len(catalog.papers)} papers, {len(catalog.domains)} domains")
    bad = subprocess.run([str(exe), "validate", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 1
    usage = subprocess.run([str(exe), "frobnicate"], capture_output=True, text=True)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_show_risk_model(capsys) -> None:
    code, out, _ = run(capsys, "show", "digital-pathology-service")
    assert code == 0
    assert "Scoring rule:" in out and "vendor-backdoor" in out


def test_results_rejects_unknown_attacks(capsys) -> None:
    code, _, err = run(capsys, "results", "--only", "nothing", "--out", "/tmp/never-written")
    assert code == 2 and "--only nothing: unknown attack" in err
