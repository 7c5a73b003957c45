"""The campaign core: specs, deterministic units, one code path for every caller, a store that survives a kill."""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from devices import DEVICE
from medfool_ref.campaign.execute import execute, run_attack
from medfool_ref.campaign.metrics import tile_metrics
from medfool_ref.campaign.plan import PlanError, resolve_params, sample_items, tile_units
from medfool_ref.campaign.run import run_campaign
from medfool_ref.campaign.store import ResultsStore, StoreError
from medfool_ref.campaign.units import file_item, keyed
from medfool_ref.cli import main
from medfool_ref.inputs.samples import CLASSES, sample_tile
from medfool_ref.inputs.tiles import quantise
from medfool_ref.registry import SPECS
from medfool_ref.targets.target import reference_target

VOLATILE = {"seconds"}


@pytest.fixture(scope="module")
def target():
    return reference_target(device=DEVICE)


def _records(store: ResultsStore, key: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("path",)} for r in store.items([key])]


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_spec_matches_its_function_and_catalog_entry(name: str) -> None:
    from medfool_ref.catalog import load_catalog

    s = SPECS[name]
    func = s.function_object()
    sig = inspect.signature(func).parameters
    entry = load_catalog().attacks[s.implements]
    assert entry.implementation == name
    assert s.knowledge in [k.value for k in entry.nist.knowledge]
    assert {"never": "untargeted", "required": "targeted", "optional": "both"}[s.targeted] == entry.targeted.value
    if s.budget is not None:
        assert sig[s.budget.param].default == s.budget.default  # the spec's default is the function's
        assert s.budget.default in s.budget.sweep and list(s.budget.sweep) == sorted(s.budget.sweep)
    for runs in s.showcase.runs:
        assert set(runs) <= set(s.parameters()), runs  # showcase parameters exist
    assert (s.inputs == "training") == (entry.family.value == "training-tampering")


def test_parameters_are_resolved_and_checked() -> None:
    p = resolve_params(SPECS["pgd"], {"eps": 4 / 255})
    assert p["eps"] == 4 / 255 and p["steps"] == 10 and p["seed"] == 0  # every default is explicit in the unit
    with pytest.raises(PlanError, match="unknown parameter"):
        resolve_params(SPECS["pgd"], {"epsilon": 0.1})
    with pytest.raises(PlanError, match="not a finite number"):
        resolve_params(SPECS["pgd"], {"eps": float("nan")})


# --------------------------------------------------------------------------- units


def test_a_unit_run_twice_gives_the_same_result(target) -> None:
    items = sample_items()[:3]
    (unit,) = [keyed(u, target.fingerprint) for u in tile_units("pgd", items, params={"steps": 5})]
    a, b = execute(unit, target), execute(unit, target)
    assert [r.__dict__ for r in a.records] == [r.__dict__ for r in b.records]
    assert a.forward_images == b.forward_images and a.key == b.key


def test_the_key_changes_with_what_the_result_depends_on(target, tmp_path: Path) -> None:
    items = sample_items()[:2]
    base = keyed(tile_units("fgsm", items)[0], target.fingerprint)
    variants = [tile_units("fgsm", items, params={"eps": 4 / 255})[0], tile_units("fgsm", items[:1])[0],
                tile_units("fgsm", items, target=CLASSES.index("NORM"))[0],
                tile_units("fgsm", [replace(items[0], label=0), items[1]])[0]]
    keys = {keyed(v, target.fingerprint).key for v in variants} | {keyed(base, "another model").key}
    assert base.key not in keys and len(keys) == 5
    copy = tmp_path / "x.png"
    copy.write_bytes(Path(items[0].path).read_bytes())
    moved = file_item(copy, label=items[0].label)  # the same bytes elsewhere: the same key
    assert keyed(tile_units("fgsm", [moved, items[1]])[0], target.fingerprint).key == base.key


def test_metrics_come_from_the_store_and_agree_with_the_attack(target, tmp_path: Path) -> None:
    items = [i for i in sample_items() if i.name.startswith("crc-val")][:6]
    store = ResultsStore(tmp_path)
    run = run_campaign(tile_units("fgsm", items), target, store, progress=False)
    m = tile_metrics(ResultsStore(tmp_path), run.keys, CLASSES)  # a fresh reader: nothing comes from memory
    from medfool_ref.campaign.execute import load_items

    x, y = load_items(items, target.device)
    r = run_attack("fgsm", target.model, x, y)
    with torch.no_grad():
        q_ok = target.model(quantise(r.adversarial)).argmax(1) != y
    assert m["images"] == 6 and m["successes"] == int(r.success.sum())
    assert m["success_after_8bit_quantisation"] == int(q_ok.sum())
    assert m["robust_accuracy"] == pytest.approx(1 - float((r.pred_after != y).float().mean()))
    assert m["forward_images"] == r.forward_images and m["backward_images"] == r.backward_images
    if m["successes"]:
        assert m["median_linf_255"] == pytest.approx(8.0, abs=1e-3)


def test_resume_skips_finished_units_and_a_rerun_replaces_them(target, tmp_path: Path) -> None:
    units = tile_units("fgsm", sample_items()[:8], batch_size=2)
    first = run_campaign(units, target, ResultsStore(tmp_path), progress=False)
    assert first.ran == 4 and first.skipped == 0
    again = run_campaign(units, target, ResultsStore(tmp_path), resume=True, progress=False)
    assert again.ran == 0 and again.skipped == 4 and again.keys == first.keys
    redo = run_campaign(units, target, ResultsStore(tmp_path), progress=False)
    assert redo.ran == 4
    assert len(ResultsStore(tmp_path).units()) == 4  # replaced by key, not duplicated


def test_a_failing_unit_is_recorded_and_the_others_complete(target, tmp_path: Path) -> None:
    items = sample_items()[:4]
    good = tile_units("fgsm", items[:2])
    bad = tile_units("fgsm", items[2:], params={"eps": 2.0})  # refused by the attack: eps must be <= 1
    store = ResultsStore(tmp_path)
    run = run_campaign(good + bad, target, store, progress=False)
    assert run.ran == 1 and len(run.failures) == 1 and run.failures[0].kind == "invalid"
    assert "eps must be <= 1.0" in run.failures[0].error
    failed = store.units(status="failed")
    assert len(failed) == 1 and failed[0]["error"] == run.failures[0].error


def test_a_campaign_refused_outright_writes_nothing(target, tmp_path: Path) -> None:
    run = run_campaign(tile_units("fgsm", sample_items()[:2], params={"eps": 2.0}), target, ResultsStore(tmp_path / "out"),
                       progress=False)
    assert len(run.failures) == 1 and not (tmp_path / "out").exists()


def test_a_foreign_file_is_not_taken_for_a_store(tmp_path: Path) -> None:
    bad = tmp_path / "results.sqlite"
    bad.write_text("not a database")
    with pytest.raises(StoreError, match="not a medfool results store"):
        ResultsStore(tmp_path).done_keys()


# --------------------------------------------------------------------------- one code path


def test_a_unit_is_the_same_from_the_cli_the_results_run_and_the_api(target, tmp_path: Path, capsys) -> None:
    tile = sample_tile("TUM")
    assert main(["attack", "pgd", "--tile", str(tile), "--label", "TUM", "--out", str(tmp_path / "cli")]) == 0
    report = json.loads((tmp_path / "cli" / "report.json").read_text())
    cli_store = ResultsStore(tmp_path / "cli")
    # the campaign API, planned from scratch: the same key and the same record
    unit = keyed(tile_units("pgd", [file_item(tile, label=CLASSES.index("TUM"))])[0], target.fingerprint)
    assert unit.key == report["unit"]
    api = ResultsStore(tmp_path / "api")
    run_campaign([unit], target, api, progress=False)
    assert _records(api, unit.key) == _records(cli_store, unit.key)
    # the results run: its units, re-run through the API, give what it stored
    assert main(["results", "--only", "pgd", "--out", str(tmp_path / "results")]) == 0
    capsys.readouterr()
    results = ResultsStore(tmp_path / "results")
    stored = [u for u in results.units(attack="pgd")]
    assert stored and sum(u["n_items"] for u in stored) == json.loads(
        (tmp_path / "results" / "pgd" / "report.json").read_text())["summary"]["images"]
    from medfool_ref.campaign.showcase import correct_items, plan

    correct, _ = correct_items(target, ResultsStore(":memory:"), resume=False, progress=False)
    for u in plan(["pgd"], target, correct)["pgd"][0].units:
        again = execute(u, target)
        assert [{k: v for k, v in r.__dict__.items() if k not in ("path", "extra")} for r in again.records] == \
               [{k: v for k, v in r.items() if k not in ("path", "extra", "unit", "pos")} for r in results.items([u.key])]


def test_a_new_spec_needs_no_command_line_code(monkeypatch, tmp_path: Path, capsys) -> None:
    """Registering an attack is enough for `medfool attack` to plan, run and report it."""
    from medfool_ref import registry

    monkeypatch.setitem(registry.SPECS, "fgsm-copy", replace(SPECS["fgsm"], name="fgsm-copy"))
    assert main(["attack", "fgsm-copy", "--tile", "sample:TUM", "--set", "eps=2/255", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["attack"] == "fgsm-copy" and report["norms"]["linf_255"] <= 2.0 + 1e-6
    assert "fgsm-copy" in capsys.readouterr().out


# --------------------------------------------------------------------------- crashes


CHILD = textwrap.dedent("""
    import sys
    from medfool_ref.campaign.plan import sample_items, tile_units
    from medfool_ref.campaign.run import run_campaign
    from medfool_ref.campaign.store import ResultsStore
    from medfool_ref.targets.target import reference_target

    units = tile_units("pgd", sample_items(), params={"steps": 4, "early_stop": False}, batch_size=1)
    run_campaign(units, reference_target(device="cpu"), ResultsStore(sys.argv[1]), resume=True, progress=False)
""")


def test_the_store_survives_a_sigkill_and_the_campaign_resumes(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done, deadline = 0, time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if (out / "results.sqlite").is_file():
            done = len(ResultsStore(out).done_keys())
            if done >= 5:
                break
        time.sleep(0.05)
    assert child.poll() is None, child.stderr.read().decode()  # still running: killed mid-campaign
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    store = ResultsStore(out)
    assert store.integrity() == "ok"
    kept = store.units()
    assert 5 <= len(kept) < 65
    for u in kept:  # a unit is there whole or not at all
        assert len(store.items([u["key"]])) == u["n_items"] == 1
    # resume finishes the campaign; what was kept is what an uninterrupted run gives
    target = reference_target(device="cpu")
    units = tile_units("pgd", sample_items(), params={"steps": 4, "early_stop": False}, batch_size=1)
    run = run_campaign(units, target, store, resume=True, progress=False)
    assert run.skipped == len(kept) and run.ran == 65 - len(kept) and not run.failures
    fresh = ResultsStore(tmp_path / "fresh")
    for u in [keyed(u, target.fingerprint) for u in units[:3]] + [keyed(units[-1], target.fingerprint)]:
        run_campaign([u], target, fresh, progress=False)
        assert _records(fresh, u.key) == _records(store, u.key)
