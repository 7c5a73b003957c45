"""The committed results of the long experiments (docs/results/, written by `make results`) are what today's
code produces: each recorded configuration is re-run here at its committed budget and its figures compared with
the committed ones, timings and machine names aside.

CPU runs are deterministic for one build of torch on one instruction set and one thread count (reductions are split
by thread): the reproductions run on as many threads as the recording machine had CPUs, and on a machine with the
recording's CPU capability (``provenance.cpu_capability``, e.g. AVX512) every figure must be equal (floats to 1e-9
relative). On
another (AVX2, say), torch's kernels round differently, as on a GPU, and trained or evolved results drift; there
the same structure is required and every rate and accuracy within 10 points of the committed one."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch

from medfool_ref.cli import main
from medfool_ref.registry import SPECS, source_fingerprint

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "docs" / "results"
VOLATILE = {"seconds", "machine", "device", "timing", "seconds_clean", "seconds_backdoored", "seconds_total", "forward_images_per_s"}
RATE = re.compile(r"rate|accuracy|adversarial|success|grey|noise|^score$|confidence")
DRIFT = 0.10  # the tolerance on rates across instruction sets


def _recorded_threads(prov: dict) -> int:
    """The recording's thread count: torch's default there, one per CPU (``machine`` says how many)."""
    found = re.search(r"(\d+) CPUs", prov.get("machine", ""))
    assert found, f"the provenance names no CPU count: {prov.get('machine')!r}"
    return int(found.group(1))


@pytest.fixture(autouse=True)
def _recording_threads():
    """Every test here runs on the recording's thread count (the committed results share one machine line)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(_recorded_threads(_committed("apgd")["provenance"]))
    yield
    torch.set_num_threads(threads)


def _committed(name: str) -> dict:
    path = RECORDED / name / "report.json"
    assert path.is_file(), f"{path} is missing: run `make results`"
    return json.loads(path.read_text())


def _exact(prov: dict) -> bool:
    """Whether this run uses the kernels the recording used (same torch build, CPU capability and thread count)."""
    return (prov.get("cpu_capability") == torch.backends.cpu.get_cpu_capability()
            and prov.get("machine", "").endswith(f"torch {torch.__version__}")
            and torch.get_num_threads() == _recorded_threads(prov))


def _same(a, b, where: str = "", *, exact: bool = True, key: str = "") -> None:
    """Equal figures (floats to 1e-9 relative), volatile keys aside; with ``exact`` False, equal structure and
    every rate within ``DRIFT``."""
    if isinstance(a, dict):
        keys = (set(a) | set(b)) - VOLATILE
        assert set(a) - VOLATILE == set(b) - VOLATILE, (where, sorted(set(a) ^ set(b)))
        for k in sorted(keys):
            _same(a[k], b[k], f"{where}.{k}", exact=exact, key=str(k))
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]", exact=exact, key=key)
    elif not exact:
        if isinstance(a, (int, float)) and not isinstance(a, bool) and RATE.search(key) and b is not None:
            assert abs(a - b) <= DRIFT, (where, a, b)
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (where, a, b)
    else:
        assert a == b, (where, a, b)


@pytest.mark.parametrize("name", sorted(n for n, s in SPECS.items() if s.showcase.recorded))
def test_every_recorded_result_carries_its_provenance(name: str) -> None:
    doc = _committed(name)
    prov = doc["provenance"]
    assert {"medfool", "code_sha256", "model_sha256", "machine", "cpu_capability", "date", "command"} <= set(prov)
    assert prov["command"].startswith("medfool results")
    assert prov["code_sha256"] == source_fingerprint(name), f"{name}: recorded by other code than today's (stale): run `make results`"


# the patch is re-run at its committed budget only (area 0.1, whose units and figures do not depend on the other
# areas' runs): the three areas together take about 10 minutes on 2 cores
REPRODUCED_RUN = {"patch": {"area": 0.1}}


@pytest.mark.parametrize("name", ["one-pixel", "fooling-images", "patch", "apgd"])
def test_a_recorded_attack_reproduces_at_its_committed_budget(name: str, tmp_path: Path, capsys, monkeypatch) -> None:
    committed = _committed(name)
    expected = committed["summary"]
    if name in REPRODUCED_RUN:
        s = SPECS[name]
        runs = tuple(r for r in s.showcase.runs if dict(r) == REPRODUCED_RUN[name])
        assert len(runs) == 1, runs
        monkeypatch.setitem(SPECS, name, dataclasses.replace(s, showcase=dataclasses.replace(s.showcase, runs=runs)))
        label = s.budget.label(REPRODUCED_RUN[name]["area"])
        expected = {**expected, "by_area": {label: expected["by_area"][label]}}
    assert main(["results", "--only", name, "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    fresh = json.loads((tmp_path / name / "report.json").read_text())["summary"]
    _same(fresh, expected, name, exact=_exact(committed["provenance"]))


def test_badnets_defaults_give_the_documented_figures(tmp_path: Path, capsys) -> None:
    """`medfool poison badnets` with its defaults is the recorded run's first entry, figure for figure."""
    assert main(["poison", "badnets", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    m = json.loads((tmp_path / "report.json").read_text())["metrics"]
    committed = _committed("badnets")
    recorded = committed["summary"]["by_trigger"]["ink-mark"]
    tol = {"rel": 1e-9} if _exact(committed["provenance"]) else {"abs": DRIFT}
    assert m["backdoored_model"]["attack_success_rate"] == pytest.approx(recorded["attack_success_rate"], **tol)
    assert m["backdoored_model"]["clean_accuracy"] == pytest.approx(recorded["clean_accuracy_backdoored"], **tol)
    assert m["clean_model"]["clean_accuracy"] == pytest.approx(recorded["clean_accuracy_clean_model"], **tol)
    assert m["backdoored_model"]["attack_success_rate"] >= 0.55  # the README's floor for the defaults


SLIDE_VOLATILE = {"provenance"}


def test_the_recorded_slide_demo_carries_its_provenance_and_reproduces(tmp_path: Path, capsys) -> None:
    """`medfool slide demo` (the Whole slides page) gives the committed summary figure for figure."""
    from medfool_ref.site.slides import slide_code_sha256

    committed = json.loads((RECORDED / "slides" / "summary.json").read_text())
    prov = committed["provenance"]
    assert {"medfool", "code_sha256", "machine", "cpu_capability", "date", "command"} <= set(prov)
    assert prov["command"].startswith("medfool slide demo")
    assert prov["code_sha256"] == slide_code_sha256(), "the slide demo was recorded by other code (stale): run `make results`"
    assert main(["slide", "demo", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]) == 0
    capsys.readouterr()
    fresh = json.loads((tmp_path / "out" / "summary.json").read_text())
    _same({k: v for k, v in fresh.items() if k not in SLIDE_VOLATILE},
          {k: v for k, v in committed.items() if k not in SLIDE_VOLATILE}, "slides", exact=_exact(prov))
    for figure in committed["cmu1"]["figures"].values():
        assert (RECORDED / "slides" / figure).is_file(), figure


def test_the_comparison_is_exact_on_the_recording_kernels_and_bounded_elsewhere() -> None:
    doc = {"success_rate": 0.5, "forward_images": 100, "label": "x"}
    _same(doc, dict(doc))
    with pytest.raises(AssertionError):
        _same({**doc, "success_rate": 0.5 + 1e-6}, doc)
    _same({**doc, "success_rate": 0.55, "forward_images": 180}, doc, exact=False)
    with pytest.raises(AssertionError):
        _same({**doc, "success_rate": 0.65}, doc, exact=False)
    with pytest.raises(AssertionError):
        _same({**doc, "extra": 1}, doc, exact=False)


AUDIT_REPRODUCED = ("fgsm", "pgd", "deepfool")  # the battery's quick part; every attack's rows are independent of the others'


def test_the_recorded_audit_carries_its_provenance_and_its_quick_rows_reproduce(tmp_path: Path, capsys) -> None:
    """The Audit page's recorded audit (`medfool audit --data sample`): current code, and the FGSM, PGD and DeepFool rows
    and the data section re-run figure for figure."""
    from medfool_ref.registry import audit_fingerprint

    committed = json.loads((RECORDED / "audit" / "report.json").read_text())
    prov = committed["provenance"]
    assert {"medfool", "code_sha256", "machine", "cpu_capability", "date", "command"} <= set(prov)
    assert prov["command"].startswith("medfool audit --data sample --out docs/results/audit")
    ran = sorted({a["attack"] for a in committed["attacks"]})
    assert prov["code_sha256"] == audit_fingerprint(ran), "the audit was recorded by other code (stale): run `make results`"
    assert (RECORDED / "audit" / "report.html").is_file()
    out = tmp_path / "audit"
    # the validity checks are not compared (they run on the whole battery): one tile keeps them short
    assert main(["audit", "--data", "sample", "--attacks", ",".join(AUDIT_REPRODUCED), "--validity-tiles", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    fresh = json.loads((out / "report.json").read_text())
    exact = _exact(prov)
    _same({k: v for k, v in fresh["data"].items() if k != "source"},
          {k: v for k, v in committed["data"].items() if k != "source"}, "audit.data", exact=exact)
    rows = {a["id"]: a for a in committed["attacks"]}
    for a in fresh["attacks"]:
        _same(a, rows[a["id"]], f"audit.{a['id']}", exact=exact)


# the input defences whose defended audits are committed (`make results`; resize-pad's took 51 min on 2 cores, every
# attack step being 8 EOT draws)
DEFENDED = ("jpeg", "bit-depth", "median", "stain-norm", "resize-pad")
# BPDA through a smooth stand-in, white-box through a differentiable chain, and EOT over seeded random draws
DEFENDED_REPRODUCED = ("jpeg", "stain-norm", "resize-pad")


def _defended(name: str) -> dict:
    path = RECORDED / "defended" / name / "report.json"
    assert path.is_file(), f"{path} is missing: run `make results`"
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", DEFENDED)
def test_every_input_defence_has_a_current_recorded_defended_audit_held_out_first(name: str) -> None:
    """The Defences measured page's recorded defended audits: current code, the defence alone in the chain, the three
    systems at 2/255 and 8/255 with intervals, the held-out tiles first, the validity checks run."""
    from medfool_ref.registry import audit_fingerprint

    doc = _defended(name)
    prov = doc["provenance"]
    assert prov["command"].startswith(f"medfool audit --data sample --defence {name} ")
    ran = sorted({a["attack"] for a in doc["attacks"]})
    assert prov["code_sha256"] == audit_fingerprint(ran, [name]), f"defended/{name} was recorded by other code (stale): run `make results`"
    d = doc["defence"]
    assert [c.split(":")[0] for c in d["chain"]] == [name] and d["tiles"] == doc["data"]["tiles"] == 65
    assert [b["eps_255"] for b in d["budgets"]] == [2, 8]
    assert [p["name"] for p in d["splits"]] == ["held-out", "training"] and sum(p["tiles"] for p in d["splits"]) == 65
    for part in [d] + d["splits"]:
        for b in part["budgets"]:
            for key in ("undefended", "adaptive", "non_adaptive"):
                lo, hi = b[f"{key}_ci95"]
                assert lo <= b[key] <= hi and b["tiles"] == part["tiles"]
    assert {c["id"] for c in doc["validity"]} >= {"large-budget", "more-steps", "gradient-free"}
    assert doc["residual_risk"] and (RECORDED / "defended" / name / "report.html").is_file()


@pytest.mark.parametrize("name", DEFENDED_REPRODUCED)
def test_a_recorded_defended_audit_reproduces_its_fgsm_rows(name: str, tmp_path: Path, capsys) -> None:
    """The recorded command with FGSM alone (and one validity tile): the clean passes and the FGSM rows of the defended
    system, figure for figure."""
    committed = _defended(name)
    out = tmp_path / name
    assert main(["audit", "--data", "sample", "--defence", name, "--budgets", "2,8", "--attacks", "fgsm",
                 "--validity-tiles", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    fresh = json.loads((out / "report.json").read_text())
    exact = _exact(committed["provenance"])
    _same({k: v for k, v in fresh["data"].items() if k != "source"},
          {k: v for k, v in committed["data"].items() if k != "source"}, f"{name}.data", exact=exact)
    for key in ("clean_accuracy_undefended", "clean_accuracy_defended", "chain", "eot_draws", "randomised"):
        _same(fresh["defence"][key], committed["defence"][key], f"{name}.defence.{key}", exact=exact, key=key)
    rows = {a["id"]: a for a in committed["attacks"]}
    (fgsm,) = fresh["attacks"]
    _same(fgsm, rows["fgsm"], f"{name}.fgsm", exact=exact)
