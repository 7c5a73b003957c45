"""The Benchmarks page is rendered from committed result files; their text is data and is escaped."""

from __future__ import annotations

import json
from pathlib import Path

from medfool_ref.site.benchmarks import benchmarks_page, charts

ROOT = Path(__file__).resolve().parents[1]


def test_no_results_no_page(tmp_path: Path) -> None:
    assert benchmarks_page(None) is None
    assert benchmarks_page(tmp_path) is None


def test_rows_are_rendered_and_escaped(tmp_path: Path) -> None:
    data = {"date": "2026-11-26", "machine": {"machine": "x86_64", "device": "cpu", "cpu_count": 2, "torch_threads": 2},
            "versions": {"medfool": "0.1.0", "torchattacks": "<script>alert(1)</script>"},
            "tiles": {"count": 4, "size_px": 224},
            "rows": [{"attack": "PGD", "implementation": "<img src=x onerror=alert(1)>", "seconds": 1.5, "ratio_to_medfool": 2.0,
                      "success_rate": 0.95, "median_l2": 3.2, "median_linf": 0.031, "forward_images": 10,
                      "backward_images": 40, "note": "n"}]}
    (tmp_path / "peers-cpu.json").write_text(json.dumps(data))
    (tmp_path / "catalog-scale.json").write_text(json.dumps({"date": "d", "machine": "m", "rows": [
        {"entries_added": 100, "validate_s": 0.07, "export_s": 0.002, "export_mb": 0.2, "peak_rss_mb": 36}]}))
    page = benchmarks_page(tmp_path)
    assert page is not None and page.uri == "benchmarks.md"
    assert "<script>" not in page.body and "<img src=x" not in page.body and "onerror=alert(1)>" not in page.body
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.body
    assert "95%" in page.body and "The catalog at scale" in page.body
    # the charts: one per peers file and the growth curve, as SVG whose text is escaped by matplotlib
    svgs = charts(tmp_path)
    assert set(svgs) == {"benchmarks/peers-cpu.svg", "benchmarks/catalog-scale.svg"}
    assert all(v.startswith(b"<?xml") for v in svgs.values())
    assert b"<img src=x" not in svgs["benchmarks/peers-cpu.svg"] and b"&lt;img src=x" in svgs["benchmarks/peers-cpu.svg"]
    assert 'src="benchmarks/peers-cpu.svg"' in page.body and 'src="benchmarks/catalog-scale.svg"' in page.body


def test_committed_results_render() -> None:
    folder = ROOT / "benchmarks" / "results"
    page = benchmarks_page(folder)
    assert page is not None
    for path in folder.glob("peers-*.json"):
        rows = json.loads(path.read_text())["rows"]
        impls = {r["implementation"] for r in rows}
        assert {"medfool", "torchattacks", "foolbox", "art"} <= impls, path
        assert all(r["seconds"] > 0 for r in rows)


def test_precision_compile_and_slide_sections_are_rendered_and_escaped(tmp_path: Path) -> None:
    evil = "<img src=x onerror=alert(1)>"
    (tmp_path / "precision-cpu.json").write_text(json.dumps({"date": "d", "device": "cpu", "machine": evil, "archs": [
        {"arch": evil, "apgd_steps": 20, "modes": [
            {"mode": "float32", "tiles": 16, "seconds": 50.0, "tiles_per_second": 0.32, "pooled_success": 0.87, "pooled_pairs": 192,
             "worst_case_robust_accuracy": {"1.0": 0.5}, "speed_vs_float32": 1.0, "pooled_success_points_vs_float32": 0.0},
            {"mode": "bf16", "tiles": 16, "seconds": 38.0, "tiles_per_second": 0.42, "pooled_success": 0.86, "pooled_pairs": 192,
             "worst_case_robust_accuracy": {"1.0": 0.5}, "speed_vs_float32": 1.316, "pooled_success_points_vs_float32": -0.52}]}]}))
    (tmp_path / "compile-cpu.json").write_text(json.dumps({"date": "d", "device": "cpu", "machine": "m", "trials": [
        {"arch": "resnet50", "tiles": 8, "size_px": 224, "pgd": [{"early_stop": False, "eager_median_s": 2.0, "compiled_first_s": 90.0,
                                                                 "compiled_median_s": 1.9, "speedup_after_warmup": 1.05,
                                                                 "max_abs_adv_diff": 0.0, "success_agreement": "8/8"}]}]}))
    (tmp_path / "slide-scale-archs-cpu.json").write_text(json.dumps({"date": "d", "machine": {"machine": "x", "cpu_count": 2}, "rows": [
        {"arch": "vit_s16", "slide": evil, "tiles": 40, "seconds": 2.0, "tiles_per_second": 20.0, "peak_rss_mb": 900}]}))
    page = benchmarks_page(tmp_path)
    assert page is not None
    assert "<img src=x" not in page.body and page.body.count("&lt;img src=x onerror=alert(1)&gt;") == 4  # machine, two rows, slide
    assert "bf16" in page.body and "1.32" in page.body and "-0.52" in page.body and "86.0%" in page.body
    assert "torch.compile" in page.body and "8/8" in page.body and "slide pipeline per architecture" in page.body
    svgs = charts(tmp_path)
    assert set(svgs) == {"benchmarks/precision-cpu.svg"} and b"&lt;img src=x" in svgs["benchmarks/precision-cpu.svg"]
    assert 'src="benchmarks/precision-cpu.svg"' in page.body


def test_the_defended_and_client_benchmarks_render_from_their_committed_files() -> None:
    """benchmarks/results/defended-cpu.json and endpoint-client-cpu.json appear on the page, every system and size."""
    folder = ROOT / "benchmarks" / "results"
    body = benchmarks_page(folder).body
    defended = json.loads((folder / "defended-cpu.json").read_text())
    assert 'id="defended-audit"' in body
    for arch in defended["archs"]:
        systems = [r["system"] for r in arch["rows"]]
        assert systems[0] == "undefended" and len(systems) == 11 and arch["rows"][0]["ratio"] == 1.0
        assert all(r["seconds_per_step"] > 0 for r in arch["rows"])
    client = json.loads((folder / "endpoint-client-cpu.json").read_text())
    assert 'id="endpoint-client"' in body and client["rows"]
    for r in client["rows"]:
        import statistics  # the ratio is the raw timings' (the images per second shown are rounded)

        raw = statistics.median(r["seconds"]["httpx"]) / statistics.median(r["seconds"]["medfool"])
        assert abs(r["ratio_medfool_over_httpx"] - raw) < 0.002
        assert f"<td>{r['ratio_medfool_over_httpx']:.3g}</td>" in body
