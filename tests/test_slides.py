"""Whole slides: tiling coordinates, tissue detection, aggregators, the flip search, the write-back, flat memory and
every refusal. Mosaics here are small compositions of the shipped tiles (4x4 to 24x24 cells of 224 px)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from medfool_ref.cli import main
from medfool_ref.inputs.mosaic import CELL, Mosaic, MosaicError, cell_image, parse_layout, read_truth, sources, write_mosaic
from medfool_ref.inputs.slides import Slide, SlideError, detect_tissue, read_regions, read_uint8, tile_grid, tile_items, write_pyramid
from medfool_ref.targets.aggregate import (
    DEFAULT_THRESHOLDS,
    GatedAttention,
    MilConfig,
    MilHead,
    flip_scan,
    load_mil,
    pooled,
    smallest_flip,
    train_mil,
)

CMU1 = Path(__file__).resolve().parents[1] / "medfool_ref" / "data" / "slides" / "CMU-1-Small-Region.svs"
USER_MODEL = Path(__file__).parent / "fixtures" / "user_model"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory) -> Path:
    """A 4x4 mosaic without glass, tumour in the middle 2x2."""
    path = tmp_path_factory.mktemp("mosaic") / "m.tif"
    write_mosaic(path, parse_layout("4x4", tumour=["1:3,1:3"], glass=["none"]), seed=3)
    return path


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    """The test fixture's SmallNet, fed 224 px tiles at 0.5 um/px (it is fully convolutional)."""
    text = (USER_MODEL / "config.yaml").read_text().replace("size: 64", "size: 224").replace("resize: resize", "resize: none")
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- tiling


def test_a_tile_read_at_its_coordinates_is_the_mosaics_source_tile(mosaic: Path) -> None:
    truth = read_truth(mosaic)
    assert truth["contains_tumour"] and truth["statement"].startswith("A mosaic of real labelled")
    with Slide(mosaic) as s:
        assert s.mpp == 0.5 and s.level_downsamples == (1.0, 2.0, 4.0)
        grid = tile_grid(s, mpp0=s.mpp, target_mpp=0.5, side=224)
    boxes, rc = grid.positions()
    assert grid.level == 0 and grid.tile0 == 224 and (grid.rows, grid.cols) == (4, 4)
    assert boxes.tolist()[5] == [224, 224, 224, 224] and rc.tolist()[5] == [1, 1]
    by_name = {src.tile.name: src for src in sources()}
    cells = {(c["row"], c["col"]): c for c in truth["cells"]}
    got = read_uint8(mosaic, boxes, level=0, side=224)
    for (r, c), tile in zip(rc.tolist(), got):
        cell = cells[(r, c)]
        assert [cell["x"], cell["y"]] == [c * CELL, r * CELL]
        assert np.array_equal(tile, cell_image(by_name[cell["tile"]])), (r, c)  # exact at level 0
    items = tile_items(mosaic, "0" * 64, boxes[:3], grid)
    x = read_regions(items)  # what the campaign core's load_items reads
    assert torch.equal((x[1] * 255).round().byte().permute(1, 2, 0), torch.from_numpy(got[1]))
    assert len({i.id for i in items}) == 3 and items[0].region == (0, 0, 224, 224, 0, 224)


def test_the_best_level_overlap_and_resize(mosaic: Path) -> None:
    with Slide(mosaic) as s:
        coarse = tile_grid(s, mpp0=0.5, target_mpp=1.0, side=224)  # twice coarser: level 1 read as is
        assert (coarse.level, coarse.tile0, coarse.cols) == (1, 448, 2)
        m = Mosaic(parse_layout("4x4", tumour=["1:3,1:3"], glass=["none"]), sources(), seed=3)
        assert np.array_equal(s.read_box(448, 0, 448, 448, 224, 224, level=1), m.region(1, 224, 0, 224, 224))
        between = tile_grid(s, mpp0=0.5, target_mpp=0.75, side=224)  # no exact level: level 0, resized 336 -> 224
        assert (between.level, between.tile0) == (0, 336)
        assert s.read_box(0, 0, 336, 336, 224, 224, level=0).shape == (224, 224, 3)
        lapped = tile_grid(s, mpp0=0.5, target_mpp=0.5, side=224, overlap=112)
        boxes, _ = lapped.positions()
        assert lapped.stride0 == 112 and lapped.cols == 7 and boxes[1].tolist() == [112, 0, 224, 224]
        with pytest.raises(SlideError, match="overlap"):
            tile_grid(s, mpp0=0.5, target_mpp=0.5, side=224, overlap=224)


def test_large_boxes_are_read_in_chunks_without_seams(mosaic: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medfool_ref.inputs import slides

    with Slide(mosaic) as s:
        whole = s.read_box(0, 0, 896, 896, 300, 300)
        monkeypatch.setattr(slides, "CHUNK", 128)
        chunked = s.read_box(0, 0, 896, 896, 300, 300)
    assert np.abs(whole.astype(int) - chunked.astype(int)).max() <= 1


# --------------------------------------------------------------------------- tissue


def test_the_tissue_mask_excludes_glass_and_keeps_tissue(tmp_path: Path) -> None:
    from medfool_ref.inputs.slides import tissue_score

    dense = [src for src in sources() if (tissue_score(cell_image(src), "saturation") > 0.1).mean() > 0.95]
    layout = parse_layout("5x5", tumour=[], glass=["border", "2,2"])
    m = Mosaic(layout, [d for d in dense if d.tile.label != "TUM"], seed=0)
    path = tmp_path / "t.tif"
    write_pyramid(path, width=m.width, height=m.height, mpp=0.5, read_level=m.region)
    with Slide(path) as s:
        grid = tile_grid(s, mpp0=0.5, target_mpp=0.5, side=224)
        tissue = detect_tissue(s, scale=224 / 16)
    boxes, rc = grid.positions()
    frac = tissue.fractions(boxes)
    glass = (layout.labels() == "glass")[rc[:, 0], rc[:, 1]]
    assert glass.sum() == 17
    assert frac[glass].max() < 0.1 and frac[~glass].min() > 0.85, np.round(frac, 2)


# --------------------------------------------------------------------------- aggregators and the flip search


def test_each_aggregator_on_hand_made_probabilities() -> None:
    p = torch.tensor([0.1, 0.9, 0.3, 0.5])
    s = pooled(p, k=2)
    assert s["max"] == pytest.approx(0.9) and s["mean"] == pytest.approx(0.45) and s["topk"] == pytest.approx(0.7)
    assert pooled(p, k=10)["topk"] == pytest.approx(0.45)  # k larger than the bag: the mean
    assert torch.allclose(pooled(p[None].repeat(3, 1), k=2)["topk"], torch.full((3,), 0.7))
    head = GatedAttention(dim=2, hidden=1)
    with torch.no_grad():
        for lin in (head.V, head.U, head.w, head.classifier):
            lin.weight.zero_()
            lin.bias.zero_()
        head.V.weight[0] = torch.tensor([1.0, 0.0])  # attention follows the first feature
        head.U.bias.fill_(10.0)  # gate open
        head.w.weight.fill_(5.0)
        head.classifier.weight[0] = torch.tensor([0.0, 4.0])  # the slide score reads the second feature
    h = torch.tensor([[3.0, 1.0], [0.0, -1.0], [0.0, -1.0]])
    logit, w = head(h)
    a = 5 * torch.tanh(h[:, 0]) * torch.sigmoid(torch.tensor(10.0))
    assert torch.allclose(w, a.softmax(0)) and w[0] > 0.9  # Ilse et al. (2018) eq. 9, the strong tile dominates
    assert torch.allclose(logit, 4 * (w * h[:, 1]).sum())
    assert torch.allclose(head(h.flip(0))[0], logit)  # a bag: the order of its tiles does not matter
    padded, _ = head(torch.cat([h, torch.zeros(1, 2)])[None], torch.tensor([[True, True, True, False]]))
    assert torch.allclose(padded, logit)


def _brute(p0, p_adv, order, k, head, h0, h_adv):
    out = {"max": [], "mean": [], "topk": [], "attention": []}
    for j in range(len(order) + 1):
        p, h = p0.clone(), h0.clone()
        p[order[:j]] = p_adv[:j]
        h[order[:j]] = h_adv[:j]
        for name, v in pooled(p, k=k).items():
            out[name].append(float(v))
        with torch.no_grad():
            out["attention"].append(float(torch.sigmoid(head.module(h)[0])))
    return {n: torch.tensor(v, dtype=torch.float64) for n, v in out.items()}


def test_the_flip_search_agrees_with_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    n, K, D = 13, 9, 6
    p0, p_adv = torch.rand(n, generator=g), torch.rand(K, generator=g) * 0.3
    order = torch.randperm(n, generator=g)[:K]
    torch.manual_seed(1)
    head = MilHead(GatedAttention(D, 4).eval(), dict(DEFAULT_THRESHOLDS))
    h0, h_adv = torch.randn(n, D, generator=g), torch.randn(K, D, generator=g)
    fast = flip_scan(p0, p_adv, order, k=3, head=head, h0=h0, h_adv=h_adv, chunk=20)  # tiny chunks: several row blocks
    slow = _brute(p0, p_adv, order, 3, head, h0, h_adv)
    for name in slow:
        assert torch.allclose(fast[name], slow[name], atol=1e-5), name
        for t in (0.2, 0.5, float(slow[name][3]) - 1e-4):
            calls = slow[name] >= t
            first = next((j for j in range(1, K + 1) if calls[j] != calls[0]), None)
            assert smallest_flip(fast[name], t)["k"] == first


def test_the_shipped_attention_head_matches_its_card_and_retrains_the_same() -> None:
    import hashlib

    from medfool_ref.targets.aggregate import MIL_CARD, MIL_WEIGHTS
    from medfool_ref.targets.target import reference_target

    card = json.loads(MIL_CARD.read_text())
    assert hashlib.sha256(MIL_WEIGHTS.read_bytes()).hexdigest() == card["sha256"]
    head = load_mil()
    target = reference_target(device="cpu")
    assert head.tile_fingerprint == target.fingerprint and head.thresholds == card["thresholds"]
    quick = MilConfig(steps=6, calibration_bags=20)
    a, b = (train_mil(target.model, target.fingerprint, positive=target.positive_indices, config=quick) for _ in range(2))
    for (k, va), vb in zip(a.module.state_dict().items(), b.module.state_dict().values()):
        assert torch.equal(va, vb), k  # deterministic: one thread, seeded
    assert a.thresholds == b.thresholds


# --------------------------------------------------------------------------- the command line end to end


def test_predict_and_attack_write_back_an_attacked_slide(mosaic: Path, tmp_path: Path, capsys) -> None:
    import openslide

    from medfool_ref.campaign.store import ResultsStore
    from medfool_ref.inputs.tiles import from_png_bytes

    out = tmp_path / "a"
    code, stdout, err = run(capsys, "slide", "attack", str(mosaic), "--attack", "fgsm", "--set", "eps=8/255", "--goal", "miss",
                            "--candidates", "all", "--tiles", "3", "--search", "--out", str(out))
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text())
    assert {c["id"] for c in rep["catalog"]} == {"mil-slide-perturbation", "fgsm"}
    assert rep["catalog"][0]["stable_id"] == "MFA-0016" and rep["mosaic"]["statement"].startswith("A mosaic")
    assert set(rep["before"]) == set(rep["after"]) == {"max", "mean", "topk", "attention"}
    assert rep["attack"]["attacked"] == 3 and set(rep["search"]) == set(rep["before"])
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("tile,x,y,w,h,level,side,row,col,tissue_fraction,p_ADI")
    assert len(rows) == 1 + rep["tissue"]["tiles_with_tissue"] >= 10
    for name in ("tissue.png", "heatmap.png", "attention.png", "before-after.png"):
        assert (out / name).stat().st_size > 1000
    attacked = out / "m-attacked.tif"
    store = ResultsStore(out)
    units = [u for u in store.units() if u["attack"] == "fgsm"]
    adv = {r["item"]: from_png_bytes(store.artifact(u["key"], f"adversarial/{pos}.png"))
           for u in units for pos, r in enumerate(store.items([u["key"]]))}
    with openslide.OpenSlide(str(attacked)) as s:  # OpenSlide reopens it, with the mpp
        assert s.properties["openslide.mpp-x"] == "0.5" and s.level_count == 3
    src = np.asarray(openslide.OpenSlide(str(mosaic)).read_region((0, 0), 0, (896, 896)))[..., :3]
    new = np.asarray(openslide.OpenSlide(str(attacked)).read_region((0, 0), 0, (896, 896)))[..., :3]
    touched = np.zeros((896, 896), bool)
    ids = set(rep["attack"]["tiles"])
    for line in rows[1:]:
        f = line.split(",")
        if f[0] in ids:
            x, y = int(f[1]), int(f[2])
            touched[y:y + 224, x:x + 224] = True
            assert np.array_equal(new[y:y + 224, x:x + 224], (adv[f[0]] * 255).round().byte().permute(1, 2, 0).numpy())
    assert touched.sum() == 3 * 224 * 224
    assert np.array_equal(new[~touched], src[~touched])  # the untouched regions, pixel for pixel
    assert read_truth(attacked)["attacked_from"] == "m.tif"
    code, again, _ = run(capsys, "slide", "attack", str(mosaic), "--attack", "fgsm", "--set", "eps=8/255", "--goal", "miss",
                         "--candidates", "all", "--tiles", "3", "--search", "--out", str(out), "--resume", "--no-write")
    assert code == 0 and again.splitlines()[:-1] == stdout.splitlines()[:-1]  # resumed from the store: the same calls


def test_the_shipped_slide_is_the_one_its_provenance_names() -> None:
    import hashlib
    import re

    text = (CMU1.parent / "PROVENANCE.md").read_text()
    want = re.search(r"^([0-9a-f]{64})\s+CMU-1-Small-Region\.svs$", text, re.M)
    assert want and hashlib.sha256(CMU1.read_bytes()).hexdigest() == want.group(1)
    assert "CC0" in text


def test_info_and_mosaic_commands(tmp_path: Path, capsys) -> None:
    code, out, _ = run(capsys, "slide", "info", "sample:cmu-1")
    assert code == 0 and "aperio, 2220 x 2967 px at level 0, 0.499 um/px, objective 20x" in out
    code, out, _ = run(capsys, "slide", "info", str(CMU1), "--json")
    assert json.loads(out)["levels"][0]["dimensions"] == [2220, 2967]
    code, out, _ = run(capsys, "slide", "mosaic", "--out", str(tmp_path / "x.tif"), "--layout", "3x5", "--tumour", "1,:", "--seed", "4")
    assert code == 0 and "not a real whole-slide image" in out
    truth = json.loads((tmp_path / "x.truth.json").read_text())
    assert truth["counts"]["TUM"] == 3 and truth["counts"]["glass"] == 12  # the border wins over the tumour row
    assert (tmp_path / "x.truth.csv").read_text().startswith("row,col,x,y,w,h,label,tissue,tile")


@pytest.mark.parametrize("spec, message", [("2:9,1:2", "must lie within"), ("a:b,1", "expected a:b"), ("1:2", "ROWS,COLS")])
def test_bad_layouts_are_refused(spec: str, message: str) -> None:
    with pytest.raises(MosaicError, match=message):
        parse_layout("4x4", tumour=[spec])


# --------------------------------------------------------------------------- errors: one line, exit 2


def _no_mpp(tmp_path: Path) -> Path:
    path = tmp_path / "nompp.tif"
    a = np.full((512, 512, 3), 200, np.uint8)
    a[30:482, 30:482] = (180, 60, 140)
    tifffile.imwrite(path, a, tile=(256, 256), photometric="rgb", compression="zlib")
    return path


def _corrupt(mosaic: Path, tmp_path: Path) -> Path:
    data = bytearray(mosaic.read_bytes())
    data[2000:len(data) // 3] = bytes(len(data) // 3 - 2000)  # level-0 tile data zeroed: it opens, then a read fails
    path = tmp_path / "corrupt.tif"
    path.write_bytes(bytes(data))
    return path


ERRORS = {
    "corrupt": (lambda m, t: _corrupt(m, t), [], "corrupt or truncated slide: cannot read"),
    "truncated": (lambda m, t: (t / "cut.tif").write_bytes(m.read_bytes()[:3000]) and t / "cut.tif", [], "corrupt or truncated"),
    "unsupported": (lambda m, t: next(p.tile.path for p in sources() if p.tile.path.suffix == ".png"), [], "unsupported format"),
    "no tissue": (lambda m, t: write_mosaic(t / "glass.tif", parse_layout("3x3", glass=[":,:"])) and t / "glass.tif", [], "no tissue"),
    "outside": (lambda m, t: m, ["--roi", "500,0,896,896"], "is outside the slide"),
    "no mpp": (lambda m, t: _no_mpp(t), [], "does not say its microns per pixel"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_every_refusal_is_one_line_exit_2(case: str, mosaic: Path, tmp_path: Path, capsys, tiny_config: Path) -> None:
    make, extra, message = ERRORS[case]
    slide = make(mosaic, tmp_path)
    code, out, err = run(capsys, "slide", "predict", str(slide), "--out", str(tmp_path / "o"), "--model",
                         f"{USER_MODEL / 'model.py'}:build", "--config", str(tiny_config), *extra)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()  # a progress line ("N of M tiles hold tissue") may come first
    assert lines[-1].startswith("medfool: error: ") and message in lines[-1], err
    assert sum(line.startswith("medfool:") for line in lines) == 1 and "Traceback" not in err


def test_a_missing_mpp_is_given_with_mpp_and_a_bad_region_is_refused_by_the_reader(tmp_path: Path, capsys, tiny_config) -> None:
    path = _no_mpp(tmp_path)
    code, _, err = run(capsys, "slide", "predict", str(path), "--mpp", "0.5", "--out", str(tmp_path / "o"), "--model",
                         f"{USER_MODEL / 'model.py'}:build", "--config", str(tiny_config))
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "report.json").read_text())["attention"].startswith("attention MIL needs")
    from medfool_ref.inputs.items import Item

    with pytest.raises(SlideError, match="outside the slide"):
        read_regions([Item("x", str(path), "x", None, (400, 400, 224, 224, 0, 224))])


# --------------------------------------------------------------------------- memory


PEAK = """
import sys, threading, time
from medfool_ref.cli import main
def cur():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20
main(['slide', 'info', sys.argv[3]])
import matplotlib.pyplot, torch
base, peak, stop = cur(), [0.0], [False]
def sample():
    while not stop[0]:
        peak[0] = max(peak[0], cur())
        time.sleep(0.002)
t = threading.Thread(target=sample, daemon=True)
t.start()
code = main(sys.argv[1:])
stop[0] = True
t.join()
print('GROWTH', peak[0] - base, code)
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc")
def test_memory_stays_flat_in_the_slides_size(tmp_path: Path, tiny_config: Path) -> None:
    """The same tissue tiles (a 6x6 block) on a 12x12 and on a 24x24 mosaic (4x the pixels, the rest glass): predicting the larger
    must not hold its pixels. Growth is measured in a fresh process from just before predict; glibc is held to one heap
    arena so that per-thread arenas (noise that grows with run time, not with the slide) do not blur it."""
    growth, tiles = {}, {}
    for n, lo, hi in ((12, 3, 9), (24, 9, 15)):
        path = tmp_path / f"m{n}.tif"
        glass = [f"0:{lo},:", f"{hi}:{n},:", f"{lo}:{hi},0:{lo}", f"{lo}:{hi},{hi}:{n}"]
        write_mosaic(path, parse_layout(f"{n}x{n}", tumour=[f"{lo + 2}:{lo + 4},{lo + 2}:{lo + 4}"], glass=glass))
        cmd = [sys.executable, "-c", PEAK, "slide", "predict", str(path), "--out", str(tmp_path / f"o{n}"), "--batch-size", "16",
               "--model", f"{USER_MODEL / 'model.py'}:build", "--config", str(tiny_config)]
        res = subprocess.run(cmd, check=False, capture_output=True, text=True, env={**os.environ, "MALLOC_ARENA_MAX": "1"}, timeout=300)
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("GROWTH")]
        assert line and line[0].endswith(" 0"), res.stdout + res.stderr
        growth[n] = float(line[0].split()[1])
        tiles[n] = json.loads((tmp_path / f"o{n}" / "report.json").read_text())["tissue"]["tiles_with_tissue"]
    assert tiles[12] == tiles[24] > 20  # the same tissue tiles (ADI and pale mucus fall under Otsu's threshold)
    pixels_mb = (24 * 224) ** 2 * 3 / 2**20 - (12 * 224) ** 2 * 3 / 2**20  # 65 MB more decoded RGB at level 0
    assert growth[24] - growth[12] < 0.5 * pixels_mb, growth
