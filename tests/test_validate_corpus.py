"""The broken-catalog corpus: one case per problem the validator must catch.

Each case starts from the valid mini catalog in tests/fixtures/mini, applies edits, runs
``medfool validate`` and checks the exit code and the ``path:line: field: message`` lines.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from medfool_ref.cli import main

MINI = Path(__file__).parent / "fixtures" / "mini"
ATTACK = "catalog/attack/pgd.yaml"
PAPER = "catalog/paper/madry2018towards.yaml"
DEFENCE = "catalog/defence/adversarial-training.yaml"
BIB = "bib/refs.bib"

Edit = Callable[[Path], None]


def write(rel: str, text: str | bytes) -> Edit:
    def apply(root: Path) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
    return apply


def replace(rel: str, old: str, new: str) -> Edit:
    def apply(root: Path) -> None:
        path = root / rel
        text = path.read_text(encoding="utf-8")
        assert old in text, f"fixture no longer contains {old!r}"
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return apply


def append(rel: str, extra: str) -> Edit:
    def apply(root: Path) -> None:
        with (root / rel).open("a", encoding="utf-8") as fh:
            fh.write(extra)
    return apply


@dataclass
class Case:
    name: str
    edits: list[Edit]
    expect: list[str]  # regexes, each must match one output line
    code: int = 1
    absent: list[str] = field(default_factory=list)


CASES = [
    Case("yaml-syntax", [append(ATTACK, "aliases: [unclosed\n")], [r"^catalog/attack/pgd\.yaml:2\d: YAML syntax error"]),
    Case("duplicate-key", [append(ATTACK, "name: Second name\n")],
         [r"^catalog/attack/pgd\.yaml:20: name: duplicate key 'name' \(first on line 3\)"]),
    Case("unsafe-tag", [replace(ATTACK, "summary: Repeated", "summary: !!python/object/apply:os.system ['touch PWNED']\nx: Repeated")],
         [r"^catalog/attack/pgd\.yaml:17: summary: tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed"]),
    Case("merge-key", [write("catalog/domain/histopathology.yaml", "base: &b {order: 1}\n<<: *b\n")],
         [r"^catalog/domain/histopathology\.yaml:2: merge keys \('<<'\) are not allowed"]),
    Case("empty-file", [write(ATTACK, "")], [r"^catalog/attack/pgd\.yaml:1: file is empty"]),
    Case("top-level-list", [write(ATTACK, "- id: pgd\n")], [r"^catalog/attack/pgd\.yaml:1: top level must be a mapping, not list"]),
    Case("unknown-field", [replace(ATTACK, "targeted: both", "targeted: both\ncolour: red")],
         [r"^catalog/attack/pgd\.yaml:12: colour: unknown field"]),
    Case("unknown-nested-field", [replace(ATTACK, "  norm: linf", "  norm: linf\n  shape: square")],
         [r"^catalog/attack/pgd\.yaml:14: perturbation\.shape: unknown field"]),
    Case("missing-field", [replace(ATTACK, "name: Projected Gradient Descent\n", "")],
         [r"^catalog/attack/pgd\.yaml:1: name: required field is missing"]),
    Case("wrong-type", [replace("catalog/domain/histopathology.yaml", "order: 1", "order: many")],
         [r"^catalog/domain/histopathology\.yaml:8: order: Input should be a valid integer"]),
    Case("wrong-list-type", [replace(ATTACK, "aliases: [PGD]", "aliases: PGD")],
         [r"^catalog/attack/pgd\.yaml:4: aliases: Input should be a valid list"]),
    Case("bad-enum", [replace(ATTACK, "family: adversarial-image", "family: adversarial-images")],
         [r"^catalog/attack/pgd\.yaml:5: family: 'adversarial-images' is not one of 'adversarial-image', 'adversarial-patch'"]),
    Case("bad-nested-enum", [replace(ATTACK, "knowledge: [white-box]", "knowledge: [white-box, clear-box]")],
         [r"^catalog/attack/pgd\.yaml:10: nist\.knowledge\[1\]: 'clear-box' is not one of"]),
    Case("malformed-id", [replace(ATTACK, "id: pgd", "id: PGD_1")],
         [r"^catalog/attack/pgd\.yaml:1: id: 'PGD_1' does not match the pattern"]),
    Case("malformed-stable-id", [replace(ATTACK, "stable_id: MFA-0001", "stable_id: A-1")],
         [r"^catalog/attack/pgd\.yaml:2: stable_id: 'A-1' does not match the pattern \^MFA-\[0-9\]\{4\}\$"]),
    Case("id-not-file-name", [replace(ATTACK, "id: pgd", "id: pgd-linf")],
         [r"^catalog/attack/pgd\.yaml:1: id: id 'pgd-linf' must equal the file name \('pgd'\.yaml\)"]),
    Case("id-used-twice", [lambda r: (r / "catalog/attack/histopathology.yaml").write_text(
        (r / ATTACK).read_text().replace("id: pgd", "id: histopathology", 1).replace("MFA-0001", "MFA-0002"))],
         [r"^catalog/domain/histopathology\.yaml:1: id: id 'histopathology' is already used by catalog/attack/histopathology\.yaml"]),
    Case("stable-id-twice", [lambda r: (r / "catalog/attack/fgsm.yaml").write_text(
        (r / ATTACK).read_text().replace("id: pgd", "id: fgsm", 1))],
         [r"^catalog/attack/pgd\.yaml:2: stable_id: stable id MFA-0001 is already used by attack 'fgsm'"]),
    Case("retired-stable-id", [replace(ATTACK, "MFA-0001", "MFA-0099")],
         [r"^catalog/attack/pgd\.yaml:2: stable_id: stable id MFA-0099 was retired and can never be reused"]),
    Case("dangling-attack", [replace(PAPER, "proposes: [pgd]", "proposes: [pgd, deepfool]")],
         [r"^catalog/paper/madry2018towards\.yaml:7: proposes\[1\]: unknown attack 'deepfool'"]),
    Case("reference-to-wrong-kind", [replace("catalog/defence/adversarial-training.yaml", "counters: [pgd]", "counters: [histopathology]")],
         [r"^catalog/defence/adversarial-training\.yaml:4: counters\[0\]: unknown attack 'histopathology' \(it is a domain\)"]),
    Case("dangling-domain", [replace(PAPER, "domains: [histopathology]", "domains: [histopathology, retina]")],
         [r"^catalog/paper/madry2018towards\.yaml:10: demonstrates\[0\]\.domains\[1\]: unknown domain 'retina'"]),
    Case("bibkey-missing", [replace(PAPER, "bibkey: madry2018towards", "bibkey: madry2017towards")],
         [r"^catalog/paper/madry2018towards\.yaml:2: bibkey: BibTeX key 'madry2017towards' is not in bib/\*\.bib",
          r"^bib/refs\.bib:1: madry2018towards: warning: BibTeX entry is not used by any paper"]),
    Case("bibtex-syntax", [append(BIB, "@article{broken, title = {No end,\n year = 2000\n")],
         [r"^bib/refs\.bib:\d+: BibTeX: syntax error"]),
    Case("bibtex-duplicate-key", [append(BIB, "\n@misc{madry2018towards, title = {Again}, year = {2018}}\n")],
         [r"^bib/refs\.bib:9: madry2018towards: duplicate BibTeX key 'madry2018towards' \(first on line 1\)"]),
    Case("bibtex-duplicate-across-files", [write("bib/more.bib", "@misc{madry2018towards, title = {Again}, year = {2018}}\n")],
         [r"^bib/refs\.bib:1: madry2018towards: duplicate BibTeX key 'madry2018towards' \(also in bib/more\.bib:1\)"]),
    Case("unused-bib-entry-is-a-warning", [append(BIB, "\n@misc{spare2020, title = {Spare}, year = {2020}}\n")],
         [r"^bib/refs\.bib:9: spare2020: warning: BibTeX entry is not used by any paper", r"^valid: "], code=0),
    Case("confidence-differs-from-bib", [replace(PAPER, "confidence: likely", "confidence: verified")],
         [r"^catalog/paper/madry2018towards\.yaml:3: confidence: confidence 'verified' differs from x-confidence 'likely' in bib/refs\.bib"]),
    Case("not-utf8", [write(ATTACK, b"id: pgd\nname: caf\xe9\n")], [r"^catalog/attack/pgd\.yaml:2: not valid UTF-8"]),
    Case("oversized", [write(ATTACK, "id: pgd\n" + "# padding\n" * 30_000)],
         [r"^catalog/attack/pgd\.yaml: file is \d+ bytes; the limit is 262144"]),
    Case("not-yaml-file", [write("catalog/attack/notes.txt", "hello")],
         [r"^catalog/attack/notes\.txt: not a \.yaml file"]),
    Case("unknown-kind-folder", [write("catalog/attacks/pgd.yaml", "id: pgd\n")],
         [r"^catalog/attacks: unexpected folder: entries go in catalog/<kind>/"]),
    Case("table1-placement-disagrees", [replace(PAPER, "{row: adversarial-image, column: medical, position: 1}", "{row: one-pixel, column: medical, position: 1}")],
         [r"^catalog/paper/madry2018towards\.yaml:14: survey\.table1: the survey places this paper in adversarial-image/general, one-pixel/medical "
          r"but its relations give adversarial-image/general, adversarial-image/medical: add survey\.note"]),
    Case("dataset-hash", [write("data/tile.txt", "changed\n")],
         [r"^catalog/dataset/tiles\.yaml:10: files\[0\]\.sha256: sha256 of data/tile\.txt is [0-9a-f]{64}, not the recorded value"]),
    Case("dataset-file-missing", [lambda r: (r / "data/tile.txt").unlink()],
         [r"^catalog/dataset/tiles\.yaml:10: files\[0\]\.path: file data/tile\.txt does not exist"]),
    Case("dataset-escapes-project", [replace("catalog/dataset/tiles.yaml", "location: data", "location: ../..")],
         [r"^catalog/dataset/tiles\.yaml:7: location: location must stay inside the project"]),
    Case("scenario-role-lacks-capability", [replace("catalog/risk-model/service.yaml", "capabilities: [testing-data-control]", "capabilities: [query-access]")],
         [r"^catalog/risk-model/service\.yaml:19: scenarios\[0\]\.role: role 'provider' lacks the capabilities attack 'pgd' needs: testing-data-control"]),
    Case("severity-out-of-range", [replace("catalog/risk-model/service.yaml", "severity: 3", "severity: 9")],
         [r"^catalog/risk-model/service\.yaml:23: scenarios\[0\]\.severity: Input should be less than or equal to 5"]),
    Case("implementation-not-registered", [replace(ATTACK, "implementation: null", "implementation: os-system")],
         [r"^catalog/attack/pgd\.yaml:18: implementation: 'os-system' is not in the registry of reference implementations"]),
    Case("atlas-unknown-technique", [replace(ATTACK, "id: AML.T0015, name: Evade AI Model", "id: AML.T0045, name: Evade AI Model")],
         [r"^catalog/attack/pgd\.yaml:19: atlas\[1\]\.id: AML\.T0045 is not a technique in ATLAS 5\.6\.0"]),
    Case("atlas-name-differs", [replace(ATTACK, "name: White-Box Optimization", "name: Evade AI Model")],
         [r"^catalog/attack/pgd\.yaml:19: atlas\[0\]\.name: 'Evade AI Model' is not the name of AML\.T0043\.000 in ATLAS 5\.6\.0 "
          r"\('White-Box Optimization'\)"]),
    Case("atlas-mitigation-on-attack", [replace(ATTACK, "id: AML.T0015,", "id: AML.M0003,")],
         [r"^catalog/attack/pgd\.yaml:19: atlas\[1\]\.id: 'AML\.M0003' does not match the pattern"]),
    Case("atlas-unknown-mitigation", [replace(DEFENCE, "AML.M0003, name: Model Hardening", "AML.M0099, name: Model Hardening")],
         [r"^catalog/defence/adversarial-training\.yaml:10: atlas\[0\]\.id: AML\.M0099 is not a mitigation in ATLAS 5\.6\.0"]),
    Case("atlas-mitigation-name", [replace(DEFENCE, "name: Model Hardening", "name: Adversarial Training")],
         [r"^catalog/defence/adversarial-training\.yaml:10: atlas\[0\]\.name: 'Adversarial Training' is not the name of AML\.M0003"]),
    Case("atlas-missing", [replace(DEFENCE, "atlas: [{id: AML.M0003, name: Model Hardening}]\n", "")],
         [r"^catalog/defence/adversarial-training\.yaml:1: atlas: required field is missing"]),
    Case("atlas-listed-twice", [replace(ATTACK, "{id: AML.T0015, name: Evade AI Model}", "{id: AML.T0015, name: Evade AI Model}, {id: AML.T0015, name: Evade AI Model}")],
         [r"^catalog/attack/pgd\.yaml:19: atlas\[2\]: ATLAS technique 'AML\.T0015' listed twice"]),
    Case("atlas-version-differs", [replace("catalog/catalog.yaml", "atlas_version: 5.6.0", "atlas_version: 4.9.0")],
         [r"^catalog/catalog\.yaml:4: atlas_version: the ATLAS ids are checked against ATLAS 5\.6\.0 \(the shipped snapshot\), but the catalog records 4\.9\.0"]),
    Case("atlas-version-missing", [replace("catalog/catalog.yaml", "atlas_version: 5.6.0\n", "")],
         [r"^catalog/catalog\.yaml:1: atlas_version: the ATLAS ids are checked against ATLAS 5\.6\.0 \(the shipped snapshot\), but the catalog records none"]),
    Case("atlas-mitigation-unrelated-is-a-warning", [replace(DEFENCE, "AML.M0003, name: Model Hardening", "AML.M0007, name: Sanitize Training Data")],
         [r"^catalog/defence/adversarial-training\.yaml:4: counters\[0\]: warning: ATLAS 5\.6\.0 links none of this defence's mitigations "
          r"to the techniques of attack 'pgd' \(AML\.T0015, AML\.T0043\.000\)", r"^valid: "], code=0),
    Case("all-errors-at-once", [replace(ATTACK, "family: adversarial-image", "family: nope"),
                                replace("catalog/domain/histopathology.yaml", "order: 1", "order: -3")],
         [r"^catalog/attack/pgd\.yaml:5: family:", r"^catalog/domain/histopathology\.yaml:8: order:"],
         absent=[r"unknown attack 'pgd'"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_broken_catalog(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "project"
    shutil.copytree(MINI, root)
    for edit in case.edits:
        edit(root)
    monkeypatch.chdir(tmp_path)
    code = main(["validate", str(root)])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    for pattern in case.expect:
        assert any(re.search(pattern, line) for line in lines), f"no line matches {pattern!r} in:\n{out}"
    assert code == case.code, out + err
    if code == 1:
        assert re.search(r"^invalid: \d+ error\(s\)", err, re.M)
    assert "Traceback" not in out + err
    for pattern in case.absent:
        assert not any(re.search(pattern, line) for line in lines), f"{pattern!r} should not be reported:\n{out}"
    assert not (tmp_path / "PWNED").exists() and not (root / "PWNED").exists()


def test_mini_fixture_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(MINI)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("valid: 1 attacks, 1 papers")


def test_missing_root_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_folder_without_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path)]) == 1
    assert "no catalog/ folder here" in capsys.readouterr().out
