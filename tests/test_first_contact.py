"""What a newcomer runs first: sample tiles, clear refusals, non-finite numbers, 8-bit adversarials, versions."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

from medfool_ref import __version__
from medfool_ref.cli import main
from medfool_ref.inputs.samples import CLASSES, TILE_ROOT, sample_tile, sample_tiles
from medfool_ref.inputs.tiles import TileError, read_tile
from medfool_ref.registry import SPECS

NCT_TUMOUR = TILE_ROOT / "nct-crc-he-100k-sample" / "TUM-AACHEHDV.tif"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- non-finite numbers

# every attack with a command (direct-gradient-poisoning is reported from the generative experiment)
FLOAT_PARAMS = sorted((name, p.name) for name, s in SPECS.items() if not s.showcase.same_as
                      for p in s.parameters().values() if p.kind in (float, tuple))


@settings(max_examples=60, deadline=None)
@given(case=st.sampled_from(FLOAT_PARAMS), bad=st.sampled_from(["nan", "inf", "-inf", "NaN", "1/0", "+inf", "1e999"]))
def test_no_float_parameter_of_any_attack_accepts_a_non_finite_value(tmp_path_factory, case: tuple[str, str], bad: str) -> None:
    name, param = case
    s = SPECS[name]
    out = tmp_path_factory.mktemp("nan")
    verb = ["poison", s.verb] if s.command == "poison" else ["attack", name]
    argv = [*verb, "--set", f"{param}={bad}", "--out", str(out)]
    if s.command == "attack" and s.inputs != "none":
        argv += ["--tile", "sample:TUM"]
    if s.targeted == "required" and s.inputs == "tiles+training":
        argv += ["--target", "NORM"]
    code = main(argv)
    assert code == 2
    assert not any(out.iterdir())  # refused before anything ran or was written


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean(dim=(2, 3)))


TILE_FLOATS = sorted((name, p) for name, s in SPECS.items() if s.inputs in ("tiles", "tiles+training", "none")
                     for p, q in inspect.signature(s.function_object()).parameters.items()
                     if q.kind is inspect.Parameter.KEYWORD_ONLY and (isinstance(q.default, float) or "float" in str(q.annotation)))


@settings(max_examples=40, deadline=None)
@given(case=st.sampled_from(TILE_FLOATS), bad=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_the_python_api_refuses_non_finite_values_too(case: tuple[str, str], bad: float) -> None:
    name, param = case
    torch.manual_seed(0)
    model = _Toy().eval()
    x = torch.rand(2, 3, 32, 32)
    func = SPECS[name].function_object()
    kwargs = {param: bad}
    if SPECS[name].targeted == "required":
        kwargs["target" if name != "fooling-images" else "classes"] = 1 if name != "fooling-images" else [1]
    with pytest.raises(ValueError, match="finite|must be"):
        if name == "fooling-images":
            func(model, size=16, generations=1, **kwargs)
        else:
            func(model, x, **kwargs)


# --------------------------------------------------------------------------- tiles a newcomer has


def test_medfool_tiles_lists_every_shipped_tile_with_its_label(capsys) -> None:
    code, out, _ = run(capsys, "tiles")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == len(sample_tiles()) == 65
    assert {line.split()[0] for line in lines} == set(CLASSES)
    assert sum("sample:" in line for line in lines) == len(CLASSES)  # the first of each class carries its short name
    code, out, _ = run(capsys, "tiles", "--label", "tum")
    assert code == 0 and all(line.startswith("TUM") for line in out.strip().splitlines())


def test_sample_tiles_work_wherever_a_tile_is_taken(tmp_path: Path, capsys) -> None:
    code, out, err = run(capsys, "attack", "fgsm", "--tile", "sample:TUM", "--out", str(tmp_path))
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["tile"] == "sample:TUM" and report["label"] == "TUM"
    assert sample_tile("TUM").is_file() and sample_tile("tum") == sample_tile("TUM")
    code, _, err = run(capsys, "attack", "fgsm", "--tile", "sample:KIDNEY", "--out", str(tmp_path / "x"))
    assert code == 2 and "unknown class" in err and "Traceback" not in err


# --------------------------------------------------------------------------- tiles we refuse, and the ones we now take


def test_an_opaque_rgba_tile_is_taken_and_the_report_says_so(tmp_path: Path, capsys) -> None:
    rgb = Image.open(sample_tile("TUM")).convert("RGB")
    rgba = rgb.copy()
    rgba.putalpha(255)
    rgba.save(tmp_path / "opaque.png")
    assert torch.equal(read_tile(tmp_path / "opaque.png"), read_tile(sample_tile("TUM")))
    code, out, err = run(capsys, "attack", "fgsm", "--tile", str(tmp_path / "opaque.png"), "--out", str(tmp_path / "o"))
    assert code == 0, err
    notes = json.loads((tmp_path / "o" / "report.json").read_text())["input_notes"]
    assert notes and "fully opaque alpha" in notes[0] and "note:" in out


@pytest.mark.parametrize("make,message", [
    (lambda: Image.new("RGBA", (64, 64), (200, 100, 150, 254)), "translucent"),
    (lambda: Image.new("L", (64, 64), 128), "greyscale); H&E tiles are colour"),
    (lambda: Image.new("LA", (64, 64), (128, 255)), "greyscale); H&E tiles are colour"),
])
def test_translucent_and_grey_tiles_are_refused_with_the_reason(tmp_path: Path, make, message: str) -> None:
    make().save(tmp_path / "t.png")
    with pytest.raises(TileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_tile(tmp_path / "t.png")


def test_a_folder_given_as_tile_is_named_as_a_folder(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "attack", "pgd", "--tile", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2 and "is a directory" in err and "no such file" not in err


# --------------------------------------------------------------------------- DeepFool's saved tile fools


def test_deepfool_on_the_nct_tumour_tile_saves_a_tile_that_fools(tmp_path: Path, capsys) -> None:
    code, out, err = run(capsys, "attack", "deepfool", "--tile", str(NCT_TUMOUR), "--out", str(tmp_path))
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["success"] is True and report["pred_after"] != report["pred_before"] and ": fooled" in out
    saved = read_tile(tmp_path / "adversarial.png")[None]
    from medfool_ref.targets.reference import load_model

    model = load_model(device="cpu")
    with torch.no_grad():
        assert CLASSES[int(model(saved).argmax(1))] == report["pred_after"]  # the file on disk is what fools
    assert 0 < report["extra"]["l2_unrounded"] and report["norms"]["l2"] <= 3 * report["extra"]["l2_unrounded"]  # the price, reported


def test_deepfool_keeps_its_float_solution_on_request(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "attack", "deepfool", "--tile", "sample:TUM", "--set", "round_to_8bit=false", "--out", str(tmp_path))
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["params"]["round_to_8bit"] is False and report["success_before_quantisation"] is True


# --------------------------------------------------------------------------- version and show


def test_version_and_where_the_site_page_is(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"medfool {__version__}"
    code, out, _ = run(capsys, "show", "deepfool")
    assert code == 0 and "http://127.0.0.1:8000/attacks/deepfool.html" in out and "site/attacks/deepfool.html" in out
