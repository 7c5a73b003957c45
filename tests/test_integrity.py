"""Model integrity: sha256 pins in the model config, verified before any command runs the model (issue 22)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from medfool_ref.cli import main
from medfool_ref.targets.config import load_config
from medfool_ref.targets.integrity import IntegrityError, verify_pins
from medfool_ref.targets.reference import DEFAULT_WEIGHTS
from medfool_ref.targets.user import user_target

FIXTURE = Path(__file__).parent / "fixtures" / "user_model"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def user(tmp_path: Path) -> dict[str, Path]:
    """The fixture model's file (with a marker written when it is imported), random weights and a config to pin."""
    model = tmp_path / "model.py"
    marker = tmp_path / "imported"
    model.write_text((FIXTURE / "model.py").read_text() + f"\nimport pathlib\npathlib.Path({str(marker)!r}).write_text('yes')\n")
    import importlib.util

    spec = importlib.util.spec_from_file_location("pinned_fixture", FIXTURE / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    weights = tmp_path / "w.safetensors"
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in mod.build().state_dict().items()}, str(weights))
    return {"model": model, "weights": weights, "marker": marker, "dir": tmp_path}


def _config(user: dict[str, Path], weights_pin: str, factory_pin: str) -> Path:
    path = user["dir"] / "config.yaml"
    text = (FIXTURE / "config.yaml").read_text()
    path.write_text(text + f"integrity:\n  weights_sha256: '{weights_pin}'\n  factory_sha256: '{factory_pin}'\n")
    return path


def test_matching_pins_load_the_model(user: dict[str, Path]) -> None:
    cfg = _config(user, sha(user["weights"]), sha(user["model"]))
    target = user_target(f"{user['model']}:build", load_config(cfg), weights=user["weights"])
    assert target.classes[-1] == "TUM" and user["marker"].exists()


def test_a_wrong_weight_pin_is_refused_before_the_factory_is_imported(user: dict[str, Path], tmp_path: Path, capsys) -> None:
    good = sha(user["weights"])
    bad = "0" * 64
    cfg = _config(user, bad, sha(user["model"]))
    code = main(["audit", "--data", "sample", "--out", str(tmp_path / "out"), "--model", f"{user['model']}:build",
                 "--weights", str(user["weights"]), "--config", str(cfg), "--attacks", "fgsm", "--max-tiles", "2"])
    err = capsys.readouterr().err
    assert code == 2
    assert good in err and bad in err and "integrity.weights_sha256" in err and "Traceback" not in err
    assert not user["marker"].exists()  # the user's code never ran
    assert not (tmp_path / "out" / "results.sqlite").exists()  # nor did any attack


def test_a_tampered_factory_file_is_refused_with_both_hashes(user: dict[str, Path]) -> None:
    pinned = sha(user["model"])
    cfg = _config(user, sha(user["weights"]), pinned)
    user["model"].write_text(user["model"].read_text() + "\n# one byte more\n")
    with pytest.raises(IntegrityError) as exc:
        user_target(f"{user['model']}:build", load_config(cfg), weights=user["weights"], config_path=cfg)
    msg = str(exc.value)
    assert pinned in msg and sha(user["model"]) in msg and str(cfg) in msg and not user["marker"].exists()


def test_the_reference_model_can_be_pinned_and_a_swapped_file_is_refused(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "ref.yaml"
    ref = (DEFAULT_WEIGHTS.parent / "config.yaml").read_text()
    cfg.write_text(ref + f"integrity:\n  weights_sha256: {sha(DEFAULT_WEIGHTS)}\n")
    swapped = tmp_path / "other.safetensors"
    shutil.copy(DEFAULT_WEIGHTS, swapped)
    swapped.write_bytes(swapped.read_bytes() + b" ")  # one byte appended: a different file
    code = main(["audit", "--data", "sample", "--out", str(tmp_path / "o"), "--weights", str(swapped), "--config", str(cfg),
                 "--attacks", "fgsm", "--max-tiles", "2"])
    err = capsys.readouterr().err
    assert code == 2 and sha(swapped) in err and sha(DEFAULT_WEIGHTS) in err


def test_pins_are_validated_and_a_pin_without_its_file_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text((FIXTURE / "config.yaml").read_text() + "integrity:\n  weights_sha256: not-a-hash\n")
    with pytest.raises(Exception) as exc:
        load_config(cfg)
    assert "integrity.weights_sha256" in str(exc.value)
    with pytest.raises(IntegrityError, match="no --weights file"):
        verify_pins({"weights_sha256": "a" * 64}, weights=None, factory=None)
    assert verify_pins(None, weights=None, factory=None) == []


def test_a_defence_entry_may_name_only_a_registered_defence(tmp_path: Path, capsys) -> None:
    root = Path(__file__).resolve().parents[1]
    for d in ("catalog", "bib"):
        shutil.copytree(root / d, tmp_path / d)
    entry = tmp_path / "catalog" / "defence" / "adversarial-training.yaml"
    entry.write_text(entry.read_text().replace("implementation: pgd-adversarial-training", "implementation: os.system"))
    assert main(["validate", str(tmp_path)]) == 1
    err = capsys.readouterr()
    assert "'os.system' is not in the defences registry" in err.out + err.err
