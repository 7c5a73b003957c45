"""The recorded defence runs on the Defences measured page (``docs/results/hardening``: ``medfool harden``;
``docs/results/certify``: ``medfool certify``) are what today's code produces.

As for the recorded attacks (test_recorded.py): on the recording's torch build, CPU capability and thread count the
reproduction must be equal (the hardened weights byte for byte, every certificate to 1e-9); elsewhere trained weights
drift, and the same structure with every accuracy within 10 points is required."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from medfool_ref.campaign.plan import sample_split
from medfool_ref.cli import main
from medfool_ref.reports.provenance import code_sha256

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "docs" / "results"
DRIFT = 0.10
PROVENANCE = {"medfool", "code_sha256", "machine", "cpu_capability", "threads", "device", "date", "command"}


def _doc(path: Path) -> dict:
    assert path.is_file(), f"{path} is missing: run `make results`"
    return json.loads(path.read_text())


def _exact(prov: dict) -> bool:
    return (prov["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
            and prov["machine"].endswith(f"torch {torch.__version__}") and torch.get_num_threads() == prov["threads"])


@pytest.fixture
def threads_of():
    """Run on the recording's thread count (reductions are split by thread), restored afterwards."""
    before = torch.get_num_threads()

    def pin(prov: dict) -> None:
        torch.set_num_threads(int(prov["threads"]))

    yield pin
    torch.set_num_threads(before)


@pytest.mark.parametrize("run, path", [("hardening", "hardening/card.json"), ("certify", "certify/certify.json")])
def test_a_recorded_defence_run_carries_its_provenance_and_is_current(run: str, path: str) -> None:
    from medfool_ref.cli.robust_common import data_hash

    doc = _doc(RECORDED / path)
    prov = doc["provenance"]
    assert PROVENANCE <= set(prov) and prov["command"].startswith(f"medfool {'harden' if run == 'hardening' else 'certify'}")
    assert prov["code_sha256"] == code_sha256(run), f"{run}: recorded by other code than today's (stale): run `make results`"
    train, held = sample_split()
    assert (doc["train_data"]["sha256"] if run == "hardening" else doc["train_data_sha256"]) == data_hash(train)
    if run == "hardening":
        assert doc["held_out"]["sha256"] == data_hash(held)


def test_the_hardened_weights_reproduce_through_their_first_25_steps(threads_of) -> None:
    """The recorded PGD adversarial training, re-run for its first 25 steps (on the full run's schedule): the model's
    state there hashes to the card's trajectory where the kernels are the recording's. The card's figures follow from
    the weights through the audit's worst case, tested in test_audit.py; the remaining 75 steps run the same code."""
    from medfool_ref.cli.harden import fine_tune
    from medfool_ref.targets.target import reference_target
    from medfool_ref.training.reference import reference_config

    card = _doc(RECORDED / "hardening" / "card.json")
    threads_of(card["provenance"])
    recipe = card["recipe"]
    tc = recipe["train_config"]
    config = replace(reference_config(), steps=tc["steps"], lr=tc["lr"], seed=tc["seed"], crop=tc["crop"], batch_size=tc["batch_size"])
    assert config.as_dict() == tc, "the recorded training config is not what today's defaults and recipe give"
    recorded = card["trajectory"]["state_sha256"]
    assert sorted(recorded, key=int) == [str(s) for s in range(25, tc["steps"] + 1, 25)]
    train, _ = sample_split()
    hardened, weights, trajectory = fine_tune(reference_target(), train, recipe, config, stop_after=25)
    assert hardened is None and weights == b"" and list(trajectory) == ["25"]
    if _exact(card["provenance"]):
        assert trajectory["25"] == recorded["25"]
    else:
        assert len(trajectory["25"]) == 64


def test_the_recorded_certification_reproduces(tmp_path: Path, threads_of) -> None:
    """`medfool certify`'s defaults, re-run: the noise fine-tuning in full (the same weights where the kernels are the
    recording's), then CERTIFY on the smallest unit of held-out tiles (a unit's noise draws come from one seeded
    generator, so one unit reproduces on its own): every certificate as committed, to 1e-9; elsewhere the same
    smoothed predictions for all but one tile."""
    from medfool_ref.campaign.certify import certify_units
    from medfool_ref.campaign.run import run_campaign
    from medfool_ref.campaign.store import ResultsStore
    from medfool_ref.cli.certify import noise_finetune
    from medfool_ref.targets.target import reference_target

    doc = _doc(RECORDED / "certify" / "certify.json")
    threads_of(doc["provenance"])
    p = doc["params"]
    train, held = sample_split()
    base = reference_target()
    smoothed = noise_finetune(base, train, sigma=p["sigma"], steps=p["finetune_steps"], seed=p["seed"], out=tmp_path, resume=False)
    exact = _exact(doc["provenance"])
    if exact:
        assert smoothed.fingerprint == doc["smoothed_fingerprint"]
    units = certify_units(held, sigma=p["sigma"], n0=p["n0"], n=p["n"], alpha=p["alpha"], seed=p["seed"], chunk=p["chunk"],
                          base=base.fingerprint)
    assert len(units) == doc["units"]
    unit = min(units, key=lambda u: len(u.items))
    store = ResultsStore(tmp_path)
    run = run_campaign([unit], smoothed, store, resume=False, progress=False, label="certify")
    assert not run.failures
    committed = {r["name"]: r for r in doc["tiles"]}
    fresh = [{"name": r["name"], "label": r["label"], "pred": r["pred_before"], **{k: r["extra"][k] for k in ("radius", "p_lower", "abstain")}}
             for r in store.items(run.keys)]
    assert len(fresh) == len(unit.items) >= 1
    if exact:
        for r in fresh:
            want = committed[r["name"]]
            assert (r["label"], r["pred"], r["abstain"]) == (want["label"], want["pred"], want["abstain"]), r["name"]
            assert math.isclose(r["radius"], want["radius"], rel_tol=1e-9, abs_tol=1e-12), r["name"]
            assert math.isclose(r["p_lower"], want["p_lower"], rel_tol=1e-9, abs_tol=1e-12), r["name"]
    else:
        assert sum(r["pred"] != committed[r["name"]]["pred"] for r in fresh) <= 1
