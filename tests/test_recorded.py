"""The committed results of the long experiments (docs/results/, written by `make results`) are what today's
code produces: each recorded configuration is re-run here at its committed budget (CPU runs are
deterministic) and its figures compared with the committed ones; timings and machine names aside."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from medfool_ref.cli import main
from medfool_ref.registry import SPECS, source_fingerprint

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "docs" / "results"
VOLATILE = {"seconds", "machine", "device", "timing", "seconds_clean", "seconds_backdoored", "seconds_total", "forward_images_per_s"}


def _committed(name: str) -> dict:
    path = RECORDED / name / "report.json"
    assert path.is_file(), f"{path} is missing: run `make results`"
    return json.loads(path.read_text())


def _same(a, b, where: str = "") -> None:
    """Equal figures (floats to 1e-9 relative), volatile keys aside."""
    if isinstance(a, dict):
        keys = (set(a) | set(b)) - VOLATILE
        assert set(a) - VOLATILE == set(b) - VOLATILE, (where, sorted(set(a) ^ set(b)))
        for k in sorted(keys):
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (where, a, b)
    else:
        assert a == b, (where, a, b)


@pytest.mark.parametrize("name", sorted(n for n, s in SPECS.items() if s.showcase.recorded))
def test_every_recorded_result_carries_its_provenance(name: str) -> None:
    doc = _committed(name)
    prov = doc["provenance"]
    assert {"medfool", "code_sha256", "model_sha256", "machine", "date", "command"} <= set(prov)
    assert prov["command"].startswith("medfool results")
    assert prov["code_sha256"] == source_fingerprint(name), f"{name}: recorded by other code than today's (stale): run `make results`"


@pytest.mark.parametrize("name", ["one-pixel", "fooling-images", "patch", "apgd"])
def test_a_recorded_attack_reproduces_at_its_committed_budget(name: str, tmp_path: Path, capsys) -> None:
    assert main(["results", "--only", name, "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    _same(json.loads((tmp_path / name / "report.json").read_text())["summary"], _committed(name)["summary"], name)


def test_badnets_defaults_give_the_documented_figures(tmp_path: Path, capsys) -> None:
    """`medfool poison badnets` with its defaults is the recorded run's first entry, figure for figure."""
    assert main(["poison", "badnets", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    m = json.loads((tmp_path / "report.json").read_text())["metrics"]
    recorded = _committed("badnets")["summary"]["by_trigger"]["ink-mark"]
    assert m["backdoored_model"]["attack_success_rate"] == pytest.approx(recorded["attack_success_rate"], rel=1e-9)
    assert m["backdoored_model"]["clean_accuracy"] == pytest.approx(recorded["clean_accuracy_backdoored"], rel=1e-9)
    assert m["clean_model"]["clean_accuracy"] == pytest.approx(recorded["clean_accuracy_clean_model"], rel=1e-9)
    assert m["backdoored_model"]["attack_success_rate"] >= 0.55  # the README's floor for the defaults
