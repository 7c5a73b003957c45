"""``medfool attack`` end to end, and the clear errors it gives for bad input."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfool_ref.cli import main
from medfool_ref.inputs.samples import TILE_ROOT

TUMOUR_TILE = TILE_ROOT / "kather2016-crc-texture-sample/01_TUMOR/1A11_CRC-Prim-HE-07_022.tif_Row_601_Col_151.tif"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name,extra", [("pgd", ["--set", "eps=8/255", "--set", "steps=10"]), ("deepfool", []), ("fgsm", ["--set", "eps=8/255"])])
def test_attack_writes_tile_figure_and_report(tmp_path: Path, capsys, name: str, extra: list[str]) -> None:
    out = tmp_path / name
    code, stdout, err = run(capsys, "attack", name, "--tile", str(TUMOUR_TILE), "--out", str(out), *extra)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    for key in ("attack", "success", "pred_before", "pred_after", "confidence_before", "confidence_after", "norms", "queries", "seconds", "params"):
        assert key in report
    adv = Image.open(out / "adversarial.png")
    assert adv.mode == "RGB" and adv.size == (150, 150)
    fig = Image.open(out / "comparison.png")
    assert fig.size[0] > 3 * 150
    # the report describes the saved 8-bit tile, re-checked after quantisation
    original = np.asarray(Image.open(TUMOUR_TILE)).astype(int)
    saved = np.asarray(adv).astype(int)
    assert report["norms"]["linf_255"] == pytest.approx(np.abs(saved - original).max(), abs=1e-3)
    if name == "pgd":
        assert report["norms"]["linf_255"] <= 8.0 + 1e-6
    if name == "pgd":
        assert report["success"] is True and report["pred_after"] != report["pred_before"]
    if name == "deepfool":
        # the minimal perturbation fools the model in floating point; rounding to 8 bits can undo it,
        # and the report says so rather than hiding it
        assert report["success_before_quantisation"] is True
    assert ("fooled" in stdout)


def test_deepfool_with_overshoot_survives_quantisation(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "attack", "deepfool", "--tile", str(TUMOUR_TILE), "--set", "overshoot=1.0", "--out", str(tmp_path))
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["success"] is True and report["params"]["overshoot"] == 1.0


def test_targeted_attack(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "attack", "pgd", "--tile", str(TUMOUR_TILE), "--target", "NORM", "--set", "steps=20", "--out", str(tmp_path))
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["target"] == "NORM" and report["pred_after"] == "NORM" and report["success"]


def _png16(path: Path) -> None:
    w = h = 64
    rows = b"".join(b"\x00" + np.random.default_rng(0).integers(0, 65535, w * 3, dtype=np.uint16).astype(">u2").tobytes() for _ in range(h))
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _write(kind: str, path: Path) -> Path:
    if kind == "corrupt":
        path.write_bytes(b"this is not an image at all")
    elif kind == "truncated":
        data = (TILE_ROOT / "crc-val-he-7k-sample/TUM-TCGA-DRHQMTQA.png").read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "grey":
        Image.new("L", (96, 96), 128).save(path)
    elif kind == "rgba":
        Image.new("RGBA", (96, 96), (1, 2, 3, 4)).save(path)
    elif kind == "16-bit":
        _png16(path)
    elif kind == "tiny":
        Image.new("RGB", (16, 16), "white").save(path)
    elif kind == "huge":
        Image.new("RGB", (5000, 40), "white").save(path)
    return path


@pytest.mark.parametrize("kind,message", [
    ("corrupt", "cannot read the image"),
    ("truncated", "cannot read the image"),
    ("grey", "image mode is L"),
    ("rgba", "image mode is RGBA"),
    ("16-bit", "16-bit images are not supported"),
    ("tiny", "tiles must be at least 32 pixels a side"),
    ("huge", "tiles must be at most 4096 pixels a side"),
    ("missing", "no such file"),
])
def test_bad_tiles_get_clear_errors(tmp_path: Path, capsys, kind: str, message: str) -> None:
    tile = _write(kind, tmp_path / f"{kind}.png")
    code, _, err = run(capsys, "attack", "pgd", "--tile", str(tile), "--out", str(tmp_path / "out"))
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "report.json").exists()


@pytest.mark.parametrize("argv,message", [
    (["attack", "cw", "--tile", str(TUMOUR_TILE)], "unknown attack 'cw'; known: adversarial-stain-perturbation, apgd, badnets, common-noise, deepfool, direct-gradient-poisoning, eot, fgsm"),
    (["attack", "pgd", "--tile", str(TUMOUR_TILE), "--set", "epsilon=0.1"], "--set epsilon: unknown parameter; this attack takes"),
    (["attack", "pgd", "--tile", str(TUMOUR_TILE), "--set", "steps=many"], "--set steps=many: expected int"),
    (["attack", "pgd", "--tile", str(TUMOUR_TILE), "--set", "eps"], "--set 'eps': expected key=value"),
    (["attack", "pgd", "--tile", str(TUMOUR_TILE), "--set", "eps=-1"], "eps must be > 0"),
    (["attack", "deepfool", "--tile", str(TUMOUR_TILE), "--target", "NORM"], "deepfool is untargeted; --target is not accepted"),
    (["attack", "pgd", "--tile", str(TUMOUR_TILE), "--target", "KIDNEY"], "--target 'KIDNEY': expected one of ADI"),
    (["attack", "generative-poisoning", "--tile", str(TUMOUR_TILE)], "use 'medfool poison generative --out DIR'"),
    (["attack", "direct-gradient-poisoning", "--tile", str(TUMOUR_TILE)], "use 'medfool poison generative --out DIR'"),
    (["poison", "generative", "--set", "retrain_steps=0"], "--set retrain_steps=0: must be >= 1"),
])
def test_bad_arguments_get_clear_errors(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    code, _, err = run(capsys, *argv, "--out", str(tmp_path))
    assert code == 2
    assert message in err and "Traceback" not in err


def test_pickled_model_files_are_refused(tmp_path: Path, capsys) -> None:
    evil = tmp_path / "model.pt"
    evil.write_bytes(b"\x80\x04not really a pickle")
    code, _, err = run(capsys, "attack", "pgd", "--tile", str(TUMOUR_TILE), "--model", str(evil), "--out", str(tmp_path / "o"))
    assert code == 2 and "pickled .pt/.pth files are refused" in err
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"garbage")
    code, _, err = run(capsys, "attack", "pgd", "--tile", str(TUMOUR_TILE), "--model", str(fake), "--out", str(tmp_path / "o"))
    assert code == 2 and "not a readable safetensors file" in err


def test_console_script_attack_exit_code(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "medfool"
    bad = subprocess.run([str(exe), "attack", "pgd", "--tile", str(tmp_path / "none.png"), "--out", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_unwritable_output_is_a_clear_error(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("a file where the output folder should go")
    code, _, err = run(capsys, "attack", "fgsm", "--tile", str(TUMOUR_TILE), "--out", str(blocker))
    assert code == 2 and str(blocker) in err and "Traceback" not in err
