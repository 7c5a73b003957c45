"""`medfool audit`: a user's model and tiles, the battery, the worst case, the report and its gates."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from medfool_ref.cli import main
from medfool_ref.inputs.samples import TILE_ROOT, sample_tiles, split
from reportdiff import stable

FIXTURE = Path(__file__).parent / "fixtures" / "user_model"
QUICK = ["--set", "apgd-ce.steps=10", "--set", "apgd-t.steps=10", "--set", "decision-apgd.steps=10", "--budgets", "2,8"]
VOLATILE = {"date", "seconds", "engine", "command"}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _stable(doc):
    return stable(doc, VOLATILE)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    """A user's folder-per-class data: 3 classes of real tiles, plus a non-image, a truncated PNG and a 16-bit tile."""
    root = tmp_path_factory.mktemp("tiles")
    for t in sample_tiles():
        if t.label in ("TUM", "NORM", "STR") and t.dataset == "crc-val-he-7k-sample":
            (root / t.label).mkdir(exist_ok=True)
            shutil.copy(t.path, root / t.label / t.path.name)
    (root / "STR" / "readme.txt").write_text("not an image")
    data = (TILE_ROOT / "crc-val-he-7k-sample/TUM-TCGA-DRHQMTQA.png").read_bytes()
    (root / "TUM" / "truncated.png").write_bytes(data[: len(data) // 3])
    import numpy as np

    Image.fromarray(np.full((64, 64), 40000, dtype=np.uint16)).save(root / "NORM" / "sixteen.png")
    return root


@pytest.fixture(scope="module")
def user_weights(tmp_path_factory) -> Path:
    """The fixture model trained briefly on the sample tiles' training split (normalised outside the model, as its config says)."""
    sys.path.insert(0, str(FIXTURE))
    try:
        import model as user  # noqa: PLC0415 - the fixture file itself
    finally:
        sys.path.pop(0)
    from safetensors.torch import save_file

    from medfool_ref.training.loop import augment, crop_bank

    net = user.build()
    train, _ = split(sample_tiles())
    bank = crop_bank(train, crop=64)
    mean, std = torch.tensor([0.70, 0.55, 0.70]).view(1, 3, 1, 1), torch.tensor([0.15, 0.18, 0.13]).view(1, 3, 1, 1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(250):
        idx = torch.randint(0, bank.images.shape[0], (32,), generator=gen)
        x = augment(bank.images[idx].float().div(255), gen, 0.1)
        loss = F.cross_entropy(net((x - mean) / std), bank.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("w") / "smallnet.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


# --------------------------------------------------------------------------- end to end


def test_audit_of_the_reference_model_with_the_whole_battery(tiles: Path, tmp_path: Path, capsys) -> None:
    quick = QUICK + ["--set", "patch-missed-tumour.steps=5", "--set", "patch-overcall.steps=5", "--set", "one-pixel.generations=1",
                     "--set", "three-pixel.generations=1", "--set", "one-pixel.population=8", "--set", "three-pixel.population=8",
                     "--set", "eot.steps=2", "--set", "eot.samples=2"]
    code, out, err = run(capsys, "audit", "--data", str(tiles), "--out", str(tmp_path), *quick)
    assert code == 0, err
    doc = json.loads((tmp_path / "report.json").read_text())
    code, schema_text, _ = run(capsys, "audit", "--schema")
    jsonschema.validate(doc, json.loads(schema_text))  # the published schema describes the report
    assert {s["path"].rsplit("/", 1)[-1] for s in doc["skipped"]} == {"readme.txt", "truncated.png", "sixteen.png"}
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in doc["skipped"]}
    assert "16-bit" in reasons["sixteen.png"] and "cannot read" in reasons["truncated.png"]
    assert doc["data"]["tiles"] == 12 and doc["data"]["by_class"] == {"NORM": 4, "STR": 4, "TUM": 4}
    ids = {a["id"] for a in doc["attacks"]}
    assert ids == {"fgsm", "pgd", "pgd-l2", "apgd-ce", "apgd-t", "decision-apgd", "deepfool", "eot", "patch-missed-tumour",
                   "patch-overcall", "one-pixel", "three-pixel"}
    for a in doc["attacks"]:
        assert a["stable_id"] and a["stable_id"].startswith("MFA-")
        for b in a["budgets"]:
            assert b["robust_accuracy"] <= b["clean_accuracy"] + 1e-9
    clean = doc["data"]["clean_accuracy"]
    worst = [w["robust_accuracy"] for w in doc["worst_case"]]
    pgd = [b["robust_accuracy"] for b in next(a for a in doc["attacks"] if a["id"] == "pgd")["budgets"]]
    assert worst == sorted(worst, reverse=True) and pgd == sorted(pgd, reverse=True) and max(worst) <= clean
    for w, eps in zip(doc["worst_case"], (2, 8)):  # the worst case is at least as strong as each attack in it
        assert w["eps_255"] == eps
        for a in doc["attacks"]:
            if a["id"] in w["attacks"] and not a["cascade"]:
                b = [b for b in a["budgets"] if b["eps_255"] == eps]
                assert not b or w["robust_accuracy"] <= b[0]["robust_accuracy"] + 1e-9
    scen = {s["attack"]: s for s in doc["threat_model"]}
    assert scen["one-pixel"]["likelihood_measured"] == scen["one-pixel"]["likelihood_catalog"] - 1  # it fooled none: lowered
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "http://" not in html.replace("http://www.w3.org", "")
    assert "missed tumour" in html and "worst case" in out


def test_audit_of_a_users_own_architecture(tiles: Path, user_weights: Path, tmp_path: Path, capsys) -> None:
    code, out, err = run(capsys, "audit", "--data", str(tiles), "--out", str(tmp_path), "--model", f"{FIXTURE / 'model.py'}:build",
                         "--weights", str(user_weights), "--config", str(FIXTURE / "config.yaml"),
                         "--attacks", "fgsm,pgd,apgd-ce,apgd-t,decision-apgd,deepfool", *QUICK)
    assert code == 0, err
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["model"]["name"] == "model.py:build" and doc["model"]["config"]["input"]["size"] == 64
    assert doc["data"]["clean_accuracy"] > 0.3  # it learned something: there are tiles to attack
    pgd = next(a for a in doc["attacks"] if a["id"] == "pgd")["budgets"]
    assert pgd[-1]["success_rate"] > 0.5  # the attacks reach through the resize and the normalisation


def test_the_report_is_rendered_with_every_value_escaped(tmp_path: Path) -> None:
    from medfool_ref.reports.audit_output import render_html

    hostile = "<script>alert(1)</script>"
    b = {"eps": 0.03, "eps_255": 8.0, "norm": "linf", "tiles_attacked": 1, "clean_accuracy": 1.0, "robust_accuracy": 0.0,
         "robust_accuracy_8bit": 0.0, "success_rate": 1.0, "success_rate_8bit": 1.0, "median_l2": 1.0, "median_linf_255": 8.0,
         "flips": {"missed_tumour": {"count": 0, "of": 0, "rate": None}, "overcall": {"count": 0, "of": 0, "rate": None}},
         "queries": {}, "seconds": 1.0, "extra": {hostile: hostile}}
    report = {"medfool": "x", "date": hostile, "device": "cpu", "engine": "local",
              "model": {"name": hostile, "sha256": "f" * 64}, "data": {"tiles": 1, "source": hostile, "clean_accuracy": 1.0,
                                                                      "decision_accuracy": 1.0},
              "skipped": [{"path": hostile, "reason": '" onerror="alert(1)'}],
              "attacks": [{"id": hostile, "attack": "pgd", "catalog_id": hostile, "stable_id": hostile, "summary": hostile,
                           "view": "class", "cascade": False, "params": {}, "budgets": [b]}],
              "worst_case": [{"eps": 0.03, "eps_255": 8.0, "robust_accuracy": 0.0, "robust_accuracy_8bit": 0.0, "fooled": 1,
                              "missed_tumour_rate": None, "overcall_rate": None, "attacks": [hostile]}],
              "threat_model": [{"scenario": hostile, "attack": hostile, "severity": 1, "likelihood_catalog": 1, "likelihood_measured": 1,
                                "risk_catalog": 1, "risk_measured": 1, "band_catalog": hostile, "band_measured": hostile,
                                "evidence": "javascript:alert(1)"}], "rule": [hostile],
              "validity": [{"id": hostile, "title": hostile, "passed": False, "measured": hostile, "tiles": 1, "detail": {}}],
              "unreliable": True}
    html = render_html(report, {"robustness": "data:image/png;base64,AAAA"}, [{"gate": hostile, "measured": 0.5, "required": 0.6,
                                                                                "passed": False}])
    assert "<script>alert" not in html and '" onerror="' not in html and "&lt;script&gt;" in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html  # nothing off the machine, even if injected


# --------------------------------------------------------------------------- gates


def test_fail_under_gates_exit_3_and_are_checked_before_anything_runs(tiles: Path, tmp_path: Path, capsys) -> None:
    base = ["audit", "--data", str(tiles), "--attacks", "fgsm,pgd", "--budgets", "2,8"]
    code, _, err = run(capsys, *base, "--out", str(tmp_path / "a"), "--fail-under", "worst_case@8/255=0.99")
    assert code == 3 and "gate failed: worst_case@8/255=0.99" in err
    doc = json.loads((tmp_path / "a" / "report.json").read_text())
    assert doc["gates"][0]["passed"] is False and doc["gates"][0]["measured"] < 0.99
    code, _, err = run(capsys, *base, "--out", str(tmp_path / "a"), "--resume", "--fail-under", "pgd@2/255=0.0",
                       "--fail-under", "worst_case@2=0")
    assert code == 0, err
    for bad, message in (("worst_case@3/255=0.5", "not an audited budget"), ("cw@8/255=0.5", "not worst_case or an audited attack"),
                         ("worst_case@8/255=2", "must be in [0, 1]"), ("worst_case8=1", "expected NAME@EPS=VALUE"),
                         ("worst_case@8/255=nan", "must be in [0, 1]")):
        code, _, err = run(capsys, *base, "--out", str(tmp_path / "b"), "--fail-under", bad)
        assert code == 2 and message in err, (bad, err)
    assert not (tmp_path / "b").exists()


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("args,message", [
    (["--model", "nosuch.py:build"], "no such file"),
    (["--model", "{fx}/model.py:missing"], "defines no 'missing'"),
    (["--model", "{fx}/model.py:broken"], "the factory raised RuntimeError: the GPU driver is too old"),
    (["--model", "{fx}/model.py:not_a_module"], "returned a str, not a torch.nn.Module"),
    (["--model", "{fx}/model.py:four_outputs"], "output is (2, 4); the config lists 9 classes"),
    (["--model", "{fx}/model.py:nan_outputs"], "not finite"),
    (["--model", "{fx}/model.py"], "expected path/to/file.py:factory"),
    (["--model", "{fx}/config.yaml:build"], "is not a Python file"),
    (["--model", "{fx}/model.py:build", "--weights", "{w}/other.safetensors"], "do not fit the architecture: missing body.0.weight"),
    (["--model", "{fx}/model.py:build", "--weights", "{w}/pickled.pt"], "weights_only=True"),
    (["--model", "{fx}/model.py:build", "--config", "{w}/bad.yaml"], "bad.yaml:3: positive: "),
    (["--attacks", "pgd,cw"], "--attacks cw: unknown"),
    (["--set", "pgd.epsilon=1"], "pgd takes"),
    (["--budgets", "2,inf"], "finite number"),
])
def test_every_model_config_and_option_mistake_is_a_clear_error(tiles: Path, tmp_path: Path, capsys, args: list[str], message: str) -> None:
    from safetensors.torch import save_file
    from torch import nn

    save_file({"other.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "pickled.pt")  # a full pickle: never loaded
    (tmp_path / "bad.yaml").write_text("name: x\nclasses: [ADI, BACK, DEB, LYM, MUC, MUS, NORM, STR, TUM]\npositive: [KIDNEY]\n"
                                       "input:\n  size: 64\n  mean: [0.5, 0.5, 0.5]\n")
    argv = [a.format(fx=FIXTURE, w=tmp_path) for a in args]
    if "--model" in argv and "--config" not in argv:
        argv += ["--config", str(FIXTURE / "config.yaml")]
    code, _, err = run(capsys, "audit", "--data", str(tiles), "--out", str(tmp_path / "out"), *argv)
    assert code == 2, err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()  # refused before any attack ran


def test_bad_data_is_refused_with_every_problem(tmp_path: Path, capsys) -> None:
    (tmp_path / "KIDNEY").mkdir()
    code, _, err = run(capsys, "audit", "--data", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2 and "folder(s) KIDNEY are not classes of the model" in err
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\na.png,TUM\nb.png,KIDNEY\n,NORM\n")
    code, _, err = run(capsys, "audit", "--data", str(csv), "--out", str(tmp_path / "o"))
    assert code == 2 and f"{csv}:3: label: 'KIDNEY'" in err and f"{csv}:4: path: empty" in err
    csv.write_text("path,label\nmissing.png,TUM\n")
    code, _, err = run(capsys, "audit", "--data", str(csv), "--out", str(tmp_path / "o"))
    assert code == 2 and "no usable tile" in err and "no such file" in err


# --------------------------------------------------------------------------- resume after a kill


def test_an_audit_killed_midway_resumes_to_the_same_report(tiles: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "medfool"
    args = ["audit", "--data", str(tiles), "--attacks", "fgsm,pgd,apgd-ce", "--budgets", "1,2,4,8", "--batch-size", "1",
            "--set", "apgd-ce.steps=10"]
    killed = tmp_path / "killed"
    child = subprocess.Popen([str(exe), *args, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and child.poll() is None:
        store = killed / "results.sqlite"
        if store.is_file():
            from medfool_ref.campaign.store import ResultsStore

            if len(ResultsStore(killed).done_keys()) >= 12:  # the clean pass and a few attack units
                break
        time.sleep(0.1)
    assert child.poll() is None, child.stderr.read().decode()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not (killed / "report.json").exists()
    resumed = subprocess.run([str(exe), *args, "--out", str(killed), "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    whole = subprocess.run([str(exe), *args, "--out", str(tmp_path / "whole")], capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    a = json.loads((killed / "report.json").read_text())
    b = json.loads((tmp_path / "whole" / "report.json").read_text())
    assert _stable(a) == _stable(b)
