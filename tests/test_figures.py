"""Every figure with its uncertainty, on the right tiles; a broken model's outputs never crash the audit (issue 25)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from scipy.stats import binomtest

from medfool_ref.reports.intervals import FEW, fmt, interval, wilson
from medfool_ref.cli import main
from medfool_ref.inputs.samples import sample_tiles
from medfool_ref.reports.audit_schema import schema

FIXTURE = Path(__file__).parent / "fixtures" / "user_model"
BROKEN = ["--config", str(FIXTURE / "reference_config.yaml")]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    """12 real tiles, 4 each of TUM, NORM and STR (one NORM tile is brighter than 0.75, one STR tile than 0.70)."""
    root = tmp_path_factory.mktemp("tiles")
    for t in sample_tiles():
        if t.label in ("TUM", "NORM", "STR") and t.dataset == "crc-val-he-7k-sample":
            (root / t.label).mkdir(exist_ok=True)
            shutil.copy(t.path, root / t.label / t.path.name)
    return root


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 4), (2, 4), (60, 65), (13, 15), (3, 50), (500, 1000), (1, 7)])
def test_the_wilson_interval_agrees_with_scipy(k: int, n: int) -> None:
    want = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(want.low, abs=1e-9) and hi == pytest.approx(want.high, abs=1e-9)
    assert interval(k, n)["few"] is (n < FEW)
    assert ("fewer than 20 tiles" in fmt(k, n)) is (n < FEW)


def test_nan_outputs_on_some_tiles_are_model_errors_and_the_report_is_written(tiles: Path, tmp_path: Path, capsys) -> None:
    code, out, err = run(capsys, "audit", "--data", str(tiles), "--out", str(tmp_path), "--model",
                         f"{FIXTURE / 'model.py'}:nan_bright", *BROKEN, "--attacks", "fgsm,pgd", "--budgets", "2,8",
                         "--set", "pgd.steps=3")
    assert code == 0, err
    doc = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(doc, schema())
    errors = doc["model_errors"]
    assert errors["clean"] == ["NORM/NORM-TCGA-CWFDHWAH.png"]  # the one clean tile brighter than 0.75
    assert errors["by_attack"].get("pgd", 0) >= 1 and "STR/STR-TCGA-NLFWFRGN.png" in errors["tiles"]  # PGD's start is off-grid
    assert doc["data"]["clean_accuracy_ci"]["n"] == 11  # the NaN tile is not counted as right or wrong
    for b in next(a for a in doc["attacks"] if a["id"] == "pgd")["budgets"]:
        assert b["model_errors"] >= 1 and b["ci"]["success_rate"]["n"] == b["tiles_attacked"]
        assert b["ci"]["robust_accuracy"]["n"] == 11 - b["model_errors"]
    for w in doc["worst_case"]:
        assert w["tiles"] + w["model_errors"] == 11 and w["ci"]["robust_accuracy"]["n"] == w["tiles"]
        assert w["ci"]["robust_accuracy"]["few"] is True
    assert "model errors" in out and "fewer than 20 tiles" in out
    html = (tmp_path / "report.html").read_text()
    assert "Model errors" in html and "NORM-TCGA-CWFDHWAH" in html and "fewer than 20 tiles" in html


def test_nan_outputs_on_too_many_clean_tiles_stop_the_audit_at_once(tiles: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "audit", "--data", str(tiles), "--out", str(tmp_path / "o"), "--model",
                       f"{FIXTURE / 'model.py'}:nan_many", *BROKEN, "--attacks", "fgsm", "--budgets", "8")
    assert code == 2 and "NaN or inf on 2 of 12 clean tiles" in err and "above 10%" in err and "Traceback" not in err, err
    assert not (tmp_path / "o" / "report.json").exists()


def test_probabilities_where_the_config_says_logits_are_named(tiles: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "audit", "--data", str(tiles), "--out", str(tmp_path), "--model",
                       f"{FIXTURE / 'model.py'}:probabilities", *BROKEN, "--attacks", "fgsm", "--budgets", "8")
    assert code == 0, err
    assert "warning:" in err and "look like probabilities" in err and "output: probabilities" in err
    doc = json.loads((tmp_path / "report.json").read_text())
    assert len(doc["warnings"]) == 1 and "'output: logits'" in doc["warnings"][0]
    assert "look like probabilities" in (tmp_path / "report.html").read_text()
    code, _, err = run(capsys, "audit", "--data", str(tiles), "--out", str(tmp_path / "ok"), "--model",
                       f"{FIXTURE / 'model.py'}:nan_bright", *BROKEN, "--attacks", "fgsm", "--budgets", "8")
    assert code == 0 and "look like probabilities" not in err  # real logits: no warning


def test_the_sample_audit_reports_held_out_tiles_first(tmp_path: Path, capsys) -> None:
    code, out, err = run(capsys, "audit", "--data", "sample", "--out", str(tmp_path), "--attacks", "fgsm", "--budgets", "8")
    assert code == 0, err
    doc = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(doc, schema())
    held, train = doc["splits"]
    assert (held["name"], held["tiles"], train["name"], train["tiles"]) == ("held-out", 15, "training", 50)
    assert held["ci"]["clean_accuracy"]["few"] and not train["ci"]["clean_accuracy"]["few"]
    assert held["ci"]["clean_accuracy"]["k"] + train["ci"]["clean_accuracy"]["k"] == doc["data"]["clean_accuracy_ci"]["k"]
    w_all, w_held, w_train = doc["worst_case"][0], held["worst_case"][0], train["worst_case"][0]
    assert w_held["ci"]["robust_accuracy"]["k"] + w_train["ci"]["robust_accuracy"]["k"] == w_all["ci"]["robust_accuracy"]["k"]
    assert out.index("held-out tiles") < out.index("training tiles") < out.index("all tiles")
    html = (tmp_path / "report.html").read_text()
    assert html.index("Held-out tiles (15)") < html.index("Training tiles (50)") < html.index("All 65 tiles together")


def test_attack_defaults_are_quick_and_the_papers_budget_is_one_flag_away(tmp_path: Path, capsys) -> None:
    from medfool_ref.cli.budget import planned_passes
    from medfool_ref.registry import SPECS

    defaults = {k: e.default for k, e in SPECS["one-pixel"].parameters().items()}
    assert planned_passes("one-pixel", {}, defaults) == (40_400, 0)  # the paper's 400 x 100: the function's own default
    code, _, err = run(capsys, "attack", "one-pixel", "--tile", "sample:TUM", "--out", str(tmp_path / "q"), "--set", "generations=1")
    assert code == 0, err
    params = json.loads((tmp_path / "q" / "report.json").read_text())["params"]
    assert params["population"] == 100 and params["generations"] == 1  # the quick preset, --set on top
    assert "estimate: at most about" in err and "200 forward" in err and "--preset paper" in err  # printed before the run
    code, _, err = run(capsys, "attack", "one-pixel", "--tile", "sample:TUM", "--out", str(tmp_path / "p"), "--preset", "paper",
                       "--set", "generations=0")
    assert code == 0, err
    assert json.loads((tmp_path / "p" / "report.json").read_text())["params"]["population"] == 400
    assert "400 forward" in err and "the paper's budget" in err
