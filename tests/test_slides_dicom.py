"""Clinical slide formats and hostile slides: a DICOM WSI made from the shipped CMU-1 region (wsidicom) read by
OpenSlide's libdicom as the SVS is read; the attacked slide written back as DICOM beside the TIFF; a TIFF whose header
claims a 200,000 px square level without a pyramid refused at once; progress with the time left."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from medfool_ref.cli import main
from medfool_ref.inputs.dicom import slide_to_dicom
from medfool_ref.inputs.mosaic import parse_layout, read_truth, write_mosaic
from medfool_ref.inputs.slides import Slide, SlideError, slide_sha256

CMU1 = Path(__file__).resolve().parents[1] / "medfool_ref" / "data" / "slides" / "CMU-1-Small-Region.svs"
USER_MODEL = Path(__file__).parent / "fixtures" / "user_model"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def cmu1_dicom(tmp_path_factory) -> Path:
    """CMU-1's region as a DICOM WSI: five levels, uncompressed (the cheapest to write; the attack test writes JPEG 2000)."""
    folder = tmp_path_factory.mktemp("dicom") / "cmu1"
    dims = slide_to_dicom(CMU1, folder, compression="none")
    assert dims[0] == (2220, 2967) and len(dims) == 5
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> list[str]:
    """The test fixture's SmallNet fed 224 px tiles at 0.5 um/px, without the attention head: cheap model options."""
    text = (USER_MODEL / "config.yaml").read_text().replace("size: 64", "size: 224").replace("resize: resize", "resize: none")
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    path.write_text(text)
    return ["--model", f"{USER_MODEL / 'model.py'}:build", "--config", str(path), "--mil", "none"]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- DICOM in


def test_a_dicom_wsi_made_from_cmu1_reads_as_the_svs(cmu1_dicom: Path) -> None:
    member = sorted(cmu1_dicom.glob("*.dcm"))[-1]  # any one file opens the whole pyramid
    with Slide(CMU1) as svs, Slide(cmu1_dicom) as folder, Slide(member) as one:
        want = svs.read(0, 0, 0, *svs.dimensions)
        for d in (folder, one):
            assert d.properties["openslide.vendor"] == "dicom"
            assert d.dimensions == svs.dimensions and len(d.level_dimensions) == 5
            assert d.mpp == pytest.approx(svs.mpp)  # from the DICOM pixel spacing
            assert np.array_equal(d.read(0, 0, 0, *d.dimensions), want)  # level 0, pixel for pixel
        half = folder.read(0, 0, 1, *folder.level_dimensions[1]).astype(int)
        box = want[: 2 * half.shape[0], : 2 * half.shape[1]].reshape(half.shape[0], 2, half.shape[1], 2, 3).mean((1, 3))
        assert np.abs(half - box).max() <= 1  # level 1 is level 0 halved
    assert slide_sha256(cmu1_dicom) == slide_sha256(member) != slide_sha256(CMU1)


def test_info_and_predict_read_the_dicom_as_the_svs(cmu1_dicom: Path, tmp_path: Path, capsys, tiny: list[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from medfool_ref.campaign.slide import TileProgress

    code, out, err = run(capsys, "slide", "info", str(cmu1_dicom))
    assert code == 0, err
    assert "dicom, 2220 x 2967 px at level 0, 0.499 um/px" in out and "level 4: 138 x 185 px" in out
    monkeypatch.setattr(TileProgress, "EVERY_S", 0.0)  # a line per unit: standard error is not a terminal here
    got = {}
    for name, slide in (("svs", CMU1), ("dicom", cmu1_dicom)):
        code, out, err = run(capsys, "slide", "predict", str(slide), "--out", str(tmp_path / name), "--batch-size", "32", *tiny)
        assert code == 0, err
        got[name] = (json.loads((tmp_path / name / "report.json").read_text()), _rows(tmp_path / name / "predictions.csv"))
    lines = [ln for ln in err.splitlines() if ln.startswith("slide: tiles")]
    assert len(lines) >= 2 and "tiles/s" in lines[0] and "left" in lines[0]
    assert lines[-1].startswith(f"slide: tiles {len(got['dicom'][1])}/{len(got['dicom'][1])} (100%)")
    (rs, ps), (rd, pd) = got["svs"], got["dicom"]
    assert rd["slide"]["vendor"] == "dicom" and rd["grid"] == rs["grid"] and len(ps) > 20
    # the tissue mask is read at the DICOM's 4x level, the SVS's only level is 1x: fractions move a little, tiles do not
    at = {name: {(r["x"], r["y"]): r for r in rows} for name, rows in (("svs", ps), ("dicom", pd))}
    both = at["svs"].keys() & at["dicom"].keys()
    for xy in at["svs"].keys() ^ at["dicom"].keys():
        assert abs(float((at["svs"].get(xy) or at["dicom"][xy])["tissue_fraction"]) - 0.5) < 0.03, xy
    assert len(both) >= len(ps) - 2
    for xy in both:  # the same tile, the same pixels into the model: the same probabilities
        a, b = at["svs"][xy], at["dicom"][xy]
        assert abs(float(a["tissue_fraction"]) - float(b["tissue_fraction"])) < 0.05
        assert all(abs(float(a[k]) - float(b[k])) < 1e-5 for k in a if k.startswith("p_")) and a["pred"] == b["pred"], xy


def _not_a_wsi(tmp_path: Path) -> Path:
    from pydicom.data import get_testdata_file

    folder = tmp_path / "ct"
    folder.mkdir()
    (folder / "ct.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    return folder


@pytest.mark.parametrize("case, message", [
    ("empty folder", "is a folder without .dcm files"),
    ("CT folder", "none of its 1 .dcm file(s) is a DICOM whole-slide image"),
    ("CT file", "a DICOM file, but not a whole-slide image OpenSlide reads"),
])
def test_a_folder_or_dcm_that_is_not_a_dicom_wsi_is_refused(case: str, message: str, tmp_path: Path, capsys) -> None:
    target = {"empty folder": lambda: (tmp_path / "e").mkdir() or tmp_path / "e", "CT folder": lambda: _not_a_wsi(tmp_path),
              "CT file": lambda: _not_a_wsi(tmp_path) / "ct.dcm"}[case]()
    code, _, err = run(capsys, "slide", "info", str(target))
    assert code == 2 and err.strip().startswith("medfool: error: ") and message in err and len(err.strip().splitlines()) == 1, err


# --------------------------------------------------------------------------- DICOM out


def test_the_attacked_slide_is_written_as_dicom_beside_the_tiff(tmp_path: Path, capsys, tiny: list[str]) -> None:
    import openslide

    mosaic = tmp_path / "m.tif"
    write_mosaic(mosaic, parse_layout("4x4", tumour=["1:3,1:3"], glass=["none"]), seed=3)
    out = tmp_path / "a"
    code, stdout, err = run(capsys, "slide", "attack", str(mosaic), "--attack", "fgsm", "--set", "eps=8/255", "--goal", "miss",
                            "--candidates", "all", "--tiles", "3", "--write-format", "both", "--out", str(out), *tiny)
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text())
    assert rep["written"]["format"] == "tiff" and rep["written_dicom"]["compression"] == "jpeg2000-lossless"
    assert "m-attacked.tif" in rep["files"] and "m-attacked-dicom/" in rep["files"] and "m-attacked-dicom/" in stdout
    folder = out / "m-attacked-dicom"
    with Slide(folder) as d, Slide(out / "m-attacked.tif") as t, Slide(mosaic) as src:
        assert d.properties["openslide.vendor"] == "dicom" and d.mpp == pytest.approx(0.5)
        assert d.level_dimensions == t.level_dimensions == ((896, 896), (448, 448), (224, 224))
        dic, tif, clean = (s.read(0, 0, 0, 896, 896) for s in (d, t, src))
        for k in (1, 2):
            assert np.array_equal(d.read(0, 0, k, *d.level_dimensions[k]), t.read(0, 0, k, *t.level_dimensions[k]))
    assert np.array_equal(dic, tif)  # the same attacked slide in both formats, level 0 bit for bit
    touched = np.zeros((896, 896), bool)
    for row in _rows(out / "predictions.csv"):
        if row["tile"] in set(rep["attack"]["tiles"]):
            x, y = int(row["x"]), int(row["y"])
            touched[y:y + 224, x:x + 224] = True
    assert touched.sum() == 3 * 224 * 224
    assert np.array_equal(dic[~touched], clean[~touched]) and not np.array_equal(dic[touched], clean[touched])
    assert read_truth(folder)["attacked_from"] == "m.tif"  # the mosaic's truth travels with the copy
    assert openslide.OpenSlide.detect_format(str(next(folder.glob("*.dcm")))) == "dicom"
    code, _, err = run(capsys, "slide", "attack", str(mosaic), "--attack", "fgsm", "--set", "eps=8/255", "--goal", "miss",
                       "--candidates", "all", "--tiles", "3", "--write-format", "dicom", "--out", str(out), "--resume", *tiny)
    assert code == 2 and "already exists" in err  # never written over


# --------------------------------------------------------------------------- hostile slides


def _huge(tmp_path: Path, side: int = 200_000, tile: int = 512) -> Path:
    """A BigTIFF whose one level claims side x side px with no pyramid; only 4 of its tiles hold data (the others have no
    bytes: OpenSlide reads them as transparent), so it is 5 MB and written in about a second."""
    path = tmp_path / "huge.tif"
    n = -(-side // tile)
    block = np.full((tile, tile, 3), (200, 80, 200), np.uint8)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write((block if i < 4 else None for i in range(n * n)), shape=(side, side, 3), dtype=np.uint8, tile=(tile, tile),
                 photometric="rgb", metadata=None)
    return path


def test_a_huge_level_without_a_pyramid_is_refused_at_once_with_the_figures(tmp_path: Path, capsys, tiny: list[str]) -> None:
    huge = _huge(tmp_path)
    code, _, err = run(capsys, "slide", "predict", str(huge), "--mpp", "0.5", "--out", str(tmp_path / "o"), *tiny)
    assert code == 2, err
    assert "would decode 40,000,000,000 px (all of level 0, 200,000 x 200,000 px" in err and "pixel budget of 1,073,741,824" in err
    code, _, err = run(capsys, "slide", "predict", str(huge), "--mpp", "0.5", "--out", str(tmp_path / "o"), "--max-tiles", "1e5", *tiny)
    assert code == 2 and "the tile grid would hold 795,664 tiles (892 x 892 tiles of 224 px" in err and "--max-tiles" in err
    assert not (tmp_path / "o" / "results.sqlite").exists()


def test_the_budget_counts_the_level_read_not_the_slide(tmp_path: Path) -> None:
    """A mosaic's pyramid keeps its mask read small; without its lower levels the same pixels exceed a small budget."""
    from medfool_ref.inputs.slides import check_budget, mask_read

    mosaic = tmp_path / "m.tif"
    write_mosaic(mosaic, parse_layout("4x4"), seed=0)  # 896 px, levels 1x 2x 4x
    flat = tmp_path / "flat.tif"
    with Slide(mosaic) as s:
        tifffile.imwrite(flat, s.read(0, 0, 0, *s.dimensions), tile=(256, 256), photometric="rgb", resolution=(2e4, 2e4),
                         resolutionunit="CENTIMETER")
        assert mask_read(s, 14.0)[:3] == (2, 224, 224)  # a 64 px mask reads the 4x level
        check_budget(s, 14.0, budget=224 * 224)
    with Slide(flat) as s:
        assert mask_read(s, 14.0)[:3] == (0, 896, 896)
        with pytest.raises(SlideError, match=r"would decode 802,816 px \(all of level 0"):
            check_budget(s, 14.0, budget=224 * 224)
        check_budget(s, 14.0)  # the default budget takes it


def test_progress_lines_and_durations() -> None:
    import io

    from medfool_ref.campaign.slide import TileProgress, _duration

    assert [_duration(s) for s in (4.4, 75, 4000)] == ["4 s", "1 min 15 s", "1 h 06 min"]
    p = TileProgress(1000, "slide: tiles")
    p.stream, p.EVERY_S = io.StringIO(), 0.0
    now = [0.0]
    p.clock, p.start, p.last = (lambda: now[0]), 0.0, 0.0
    now[0] = 10.0
    p.update(100)
    now[0] = 20.0
    p.update(100)
    p.EVERY_S, now[0] = 60.0, 30.0
    p.update(800)  # within a minute of the last line: not shown until the end
    p.close()
    assert p.stream.getvalue().splitlines() == [
        "slide: tiles 100/1,000 (10%), 10.0 tiles/s, about 1 min 30 s left (10 s so far)",
        "slide: tiles 200/1,000 (20%), 10.0 tiles/s, about 1 min 20 s left (20 s so far)",
        "slide: tiles 1,000/1,000 (100%), 33.3 tiles/s (30 s so far)"]
