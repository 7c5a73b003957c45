"""Every template in medfool_ref/site/templates renders hostile text as inert text.

Each template has a case below that renders it (through the real page functions, on a catalog
whose every free-text field is hostile, or directly for the macros) with hostile values in its
string slots; a template without a case fails ``test_every_template_has_a_case``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2
import pytest
from pydantic import BaseModel, StringConstraints

from medfool_ref.catalog import load_catalog
from medfool_ref.site import pages, render
from medfool_ref.site.audit import audit_page
from medfool_ref.site.benchmarks import benchmarks_page
from medfool_ref.site.html import Link
from medfool_ref.site.results import results_html
from medfool_ref.site.defences import defences_page
from medfool_ref.site.slides import slides_page
from medfool_ref.site.svg import routes_svg

HOSTILE = "javascript:alert(1) {{ 7*7 }} <script>alert(1)</script> \" onerror=\"x ' onload='y & [md](javascript:z)"
TEMPLATE_NAMES = sorted(p.name for p in render.TEMPLATES.iterdir() if p.is_file())


# --------------------------------------------------------------------------- a hostile catalog


def _constraints(annotation: Any, metadata: list[Any]) -> list[StringConstraints]:
    found = [m for m in metadata if isinstance(m, StringConstraints)]
    for arg in typing.get_args(annotation):
        found += _constraints(arg, [arg] if isinstance(arg, StringConstraints) else [])
    return found


def _hostile(model: BaseModel) -> BaseModel:
    """A copy of ``model`` with every free-text field (a string without a pattern, not an id) hostile."""
    update: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        constraints = _constraints(info.annotation, list(info.metadata))
        if isinstance(value, BaseModel):
            update[name] = _hostile(value)
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            update[name] = [_hostile(v) for v in value]
        elif constraints and all(c.pattern is None for c in constraints):
            update[name] = [HOSTILE] if isinstance(value, list) else HOSTILE
    return model.model_copy(update=update)


@pytest.fixture(scope="module")
def hostile_catalog():
    c = load_catalog()
    tables = {f"{kind}s": {k: _hostile(v) for k, v in table.items()} for kind, table in c.tables().items()}
    return dataclasses.replace(c, meta=_hostile(c.meta), risk_model=_hostile(c.risk_model), **tables)


@pytest.fixture
def hostile_bib(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hostile text also where the paper page reads the bibliography: the reference and the links."""
    monkeypatch.setattr(pages, "format_text", lambda key, entry: HOSTILE)
    monkeypatch.setattr(pages, "paper_links", lambda c, pid: ["javascript:alert(1)", HOSTILE, "https://example.org/?q=" + HOSTILE])


# --------------------------------------------------------------------------- one case per template


def _results_dir(tmp: Path) -> Path:
    folder = tmp / "results" / "fgsm"
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({
        "summary": {"images": HOSTILE, "device": HOSTILE, "params": {HOSTILE: HOSTILE}, "confidence": [HOSTILE], HOSTILE: 1},
        "provenance": {HOSTILE: HOSTILE, "command": HOSTILE, "stale": True}}))
    (folder / "comparison.png").write_bytes(b"")
    return tmp / "results"


def _benchmarks_dir(tmp: Path) -> Path:
    folder = tmp / "benchmarks"
    folder.mkdir()
    row = {"attack": HOSTILE, "implementation": HOSTILE, "seconds": HOSTILE, "note": HOSTILE, "success_rate": None}
    (folder / "peers-x.json").write_text(json.dumps({
        "date": HOSTILE, "machine": {"machine": HOSTILE, "device": HOSTILE, "cpu_count": HOSTILE, "torch_threads": HOSTILE},
        "versions": {HOSTILE: HOSTILE}, "tiles": {"count": HOSTILE, "size_px": HOSTILE}, "rows": [row]}))
    (folder / "catalog-scale.json").write_text(json.dumps({"date": HOSTILE, "machine": HOSTILE, "rows": [{"entries_added": HOSTILE}]}))
    (folder / "defended-x.json").write_text(json.dumps({
        "date": HOSTILE, "machine": {"platform": HOSTILE, "cpu_count": HOSTILE, "device": HOSTILE},
        "archs": [{"arch": HOSTILE, "tiles": {"count": HOSTILE, "size_px": HOSTILE}, "steps": HOSTILE,
                   "rows": [{"system": HOSTILE, "mode": HOSTILE, "seconds_per_step": HOSTILE, "ratio": HOSTILE, "success": HOSTILE}]}]}))
    (folder / "endpoint-client-x.json").write_text(json.dumps({
        "date": HOSTILE, "machine": HOSTILE, "server": HOSTILE,
        "rows": [{"tile_px": HOSTILE, "batch": HOSTILE, "images_per_s": {"medfool": HOSTILE, "httpx": HOSTILE},
                  "ratio_medfool_over_httpx": HOSTILE}]}))
    return folder


LINK = Link('../x.html?" onerror="x', HOSTILE, HOSTILE)
MACRO_CALLS: dict[str, list[tuple[Any, ...]]] = {
    "link": [(LINK,), (LINK, HOSTILE)],
    "links": [([LINK, LINK], HOSTILE), ([], HOSTILE)],
    "external": [("javascript:alert(1)", HOSTILE), (HOSTILE, HOSTILE), ("https://example.org/" + HOSTILE, HOSTILE)],
    "fact": [(HOSTILE, HOSTILE)],
    "ul": [([HOSTILE], HOSTILE), ([], HOSTILE)],
    "chip": [(HOSTILE, HOSTILE)],
    "filter_box": [(HOSTILE,)],
}


def _audit_dir(tmp: Path) -> Path:
    """A recorded audit whose every string is hostile."""
    folder = tmp / "audit"
    (folder / "figures").mkdir(parents=True)
    (folder / "figures" / "robustness.png").write_bytes(b"png")
    flip = {"count": 1, "of": 2, "rate": 0.5}
    budget = {"eps": 0.03, "eps_255": 8.0, "tiles_attacked": 2, "clean_accuracy": 1.0, "robust_accuracy": 0.5, "success_rate": 0.5,
              "success_rate_8bit": 0.5, "flips": {"missed_tumour": flip, "overcall": flip}, "median_l2": 1.0, "seconds": 1.0}
    report = {"data": {"clean_accuracy": 0.9, "decision_accuracy": 0.9, "tiles": 2},
              "worst_case": [{"eps_255": 8.0, "robust_accuracy": 0.1, "missed_tumour_rate": 0.5, "overcall_rate": 0.5}],
              "attacks": [{"id": HOSTILE, "summary": HOSTILE, "catalog_id": HOSTILE, "stable_id": HOSTILE, "view": "decision",
                           "cascade": True, "budgets": [budget]}],
              "rule": [HOSTILE], "provenance": {HOSTILE: HOSTILE},
              "threat_model": [{"scenario": HOSTILE, "attack": HOSTILE, "severity": 1, "likelihood_catalog": 1,
                                "likelihood_measured": 1, "risk_catalog": 1, "risk_measured": 1, "band_catalog": HOSTILE,
                                "band_measured": HOSTILE, "evidence": HOSTILE}]}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def _slides_dir(tmp: Path) -> Path:
    """A recorded slide run whose every string is hostile (figure names too: they must not become paths)."""
    folder = tmp / "slides"
    folder.mkdir(parents=True)
    (folder / "ok.png").write_bytes(b"png")
    call = {"score": 0.5, "threshold": 0.4, "call": True}
    flip = {"k": 2, "of": 5, "stays_flipped": False, "clean_call": True}
    mosaic = {"title": HOSTILE, "layout": HOSTILE, "contains_tumour": True, "tiles": HOSTILE, "goal": HOSTILE, "goal_text": HOSTILE,
              "attack": HOSTILE, "params_text": HOSTILE, "select": HOSTILE, "view": HOSTILE, "eligible": HOSTILE, "attacked": HOSTILE,
              "tile_fooled": HOSTILE, "before": {"max": call}, "after": {"max": call, HOSTILE: HOSTILE},
              "search": {"max": flip, "mean": {"k": None, "of": HOSTILE}}, "figure": "ok.png"}
    summary = {"statement": HOSTILE, "catalog": [{"id": HOSTILE, "stable_id": HOSTILE}], "provenance": {HOSTILE: HOSTILE},
               "cmu1": {"slide": HOSTILE, "credit": HOSTILE, "dimensions": [HOSTILE, 2], "mpp": HOSTILE, "side": HOSTILE,
                        "target_mpp": HOSTILE, "tiles": HOSTILE, "grid_tiles": HOSTILE, "calls": {"max": call},
                        "figures": {HOSTILE: "ok.png", "x": HOSTILE}},
               "mosaics": [mosaic, {**mosaic, "figure": "../" + HOSTILE}]}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def _defences_dir(tmp: Path) -> Path:
    """Recorded hardening and certification runs whose every string is hostile (numbers too, where a number belongs)."""
    folder = tmp / "recorded"
    for run in ("hardening", "certify"):
        (folder / run).mkdir(parents=True)
    count = {"correct": HOSTILE, "tiles": 4, "wilson95": [HOSTILE, 1]}
    card = {"recipe": {"method": HOSTILE, "eps": HOSTILE, "attack_steps": HOSTILE, "init": HOSTILE, "train_config": {"steps": HOSTILE}},
            "train_data": {"tiles": HOSTILE}, "held_out": {"tiles": HOSTILE}, "weights_sha256": HOSTILE,
            "evaluation": {"robust_by": HOSTILE, "eps_255": HOSTILE, "apgd_steps": HOSTILE},
            "before": {"clean": count, "robust": {"correct": 1, "tiles": 4, "wilson95": [0.1, 0.5]}}, "after": {HOSTILE: HOSTILE},
            "provenance": {HOSTILE: HOSTILE, "code_sha256": HOSTILE}}
    (folder / "hardening" / "card.json").write_text(json.dumps(card))
    doc = {"params": {k: HOSTILE for k in ("sigma", "finetune_steps", "n0", "n", "alpha")}, "held_out_tiles": HOSTILE,
           "abstained": HOSTILE, "largest_certifiable_radius": HOSTILE, "certified_accuracy": [{"radius": HOSTILE, **count}]}
    (folder / "certify" / "certify.json").write_text(json.dumps(doc))
    (folder / "certify" / "PROVENANCE.md").write_text(f"# {HOSTILE}\n{HOSTILE}\n")
    budget = {"eps_255": HOSTILE, "undefended": HOSTILE, "undefended_ci95": [HOSTILE, 1], "adaptive": 0.5, "adaptive_ci95": [0.1, HOSTILE],
              "non_adaptive": 0.9, "non_adaptive_ci95": [0.5, 1], "overclaim": HOSTILE}
    audit = {"defence": {"chain": [HOSTILE], "randomised": True, "eot_draws": HOSTILE, "tiles": 4, "budgets": [budget],
                         "clean_accuracy_undefended": HOSTILE, "clean_accuracy_defended": 0.5,
                         "splits": [{"name": HOSTILE, "tiles": HOSTILE, "budgets": [budget]}]},
             "attacks": [{"id": HOSTILE, "attack": HOSTILE}], "validity": [{"title": HOSTILE, "passed": False, "measured": HOSTILE}],
             "unreliable": True, "residual_risk": [{"scenario": HOSTILE, "risk_inherent": 12, "risk_residual": 4, "band_inherent": HOSTILE,
                                                    "band_residual": HOSTILE, "evidence_residual": HOSTILE}],
             "provenance": {HOSTILE: HOSTILE, "code_sha256": HOSTILE}}
    (folder / "defended" / "jpeg").mkdir(parents=True)
    (folder / "defended" / "jpeg" / "report.json").write_text(json.dumps(audit))
    return folder


def _macros() -> dict[str, jinja2.runtime.Macro]:
    module = render.env.get_template("macros.html").module
    return {n: getattr(module, n) for n in dir(module) if isinstance(getattr(module, n), jinja2.runtime.Macro)}


def _call_macros(c: Any, tmp: Path) -> str:
    out = []
    for name, macro in _macros().items():
        for args in MACRO_CALLS[name]:
            out.append(str(macro(*args, caller=lambda *_: HOSTILE) if macro.caller else macro(*args)))
    return "\n".join(out)


CASES: dict[str, Callable[[Any, Path], str]] = {
    "macros.html": _call_macros,
    "home.html": lambda c, tmp: pages.home(c).body,
    "table1.html": lambda c, tmp: pages.table1_page(c).body,
    "routes.html": lambda c, tmp: pages.routes_page(c).body,
    "routes.svg": lambda c, tmp: routes_svg(c, "routes.md"),
    "risk.html": lambda c, tmp: pages.risk_page(c).body,
    "cite.html": lambda c, tmp: pages.cite_page(c).body,
    "section-index.html": lambda c, tmp: "".join(pages.index_page(c, kind).body for kind in c.tables()),
    "attack.html": lambda c, tmp: "".join(pages.attack_page(c, a, _results_dir(tmp / a)).body for a in c.attacks),
    "paper.html": lambda c, tmp: "".join(pages.paper_page(c, p).body for p in c.papers),
    "domain.html": lambda c, tmp: "".join(pages.domain_page(c, d).body for d in c.domains),
    "defence.html": lambda c, tmp: "".join(pages.defence_page(c, d).body for d in c.defences),
    "dataset.html": lambda c, tmp: "".join(pages.dataset_page(c, d).body for d in c.datasets),
    "results.html": lambda c, tmp: results_html("fgsm", _results_dir(tmp), "attacks/fgsm.md"),
    "benchmarks.html": lambda c, tmp: benchmarks_page(_benchmarks_dir(tmp)).body,
    "audit.html": lambda c, tmp: audit_page(_audit_dir(tmp), stale=True).body,
    "slides.html": lambda c, tmp: slides_page(_slides_dir(tmp), stale=True).body,
    "defences.html": lambda c, tmp: defences_page(c, _defences_dir(tmp)).body,
}


NO_TEXT_SLOTS = {"cite.html"}  # shows only the catalog version and links named by ids, which are validated patterns

# --------------------------------------------------------------------------- checks


class _Tags(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.attrs: list[tuple[str, str, str]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attrs += [(tag, k, v or "") for k, v in attrs]


def assert_inert(html: str) -> None:
    assert "<script" not in html.lower()
    assert 'href="javascript:' not in html.lower()
    assert not re.search(r"""\son(error|load)\s*=\s*["']""", html), "an attribute was injected"
    for tag, name, value in _Tags(html).attrs:
        assert not name.startswith("on"), (tag, name, value)
        assert not (name in ("href", "src") and value.strip().lower().startswith("javascript:")), (tag, name, value)
    if "alert(1)" in html:
        assert "{{ 7*7 }}" in html, "template syntax in a value was evaluated"


def test_every_template_has_a_case() -> None:
    assert sorted(CASES) == TEMPLATE_NAMES
    assert sorted(MACRO_CALLS) == sorted(_macros())


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_hostile_values_render_as_text(name: str, hostile_catalog, hostile_bib, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[str] = []
    get_template = render.env.get_template

    def spy(template: str, *args: Any, **kwargs: Any) -> jinja2.Template:
        loaded.append(template)
        return get_template(template, *args, **kwargs)

    monkeypatch.setattr(render.env, "get_template", spy)
    html = CASES[name](hostile_catalog, tmp_path)
    assert name in loaded, f"the case for {name} does not render it"
    assert ("alert(1)" in html) is (name not in NO_TEXT_SLOTS), "the hostile values did not reach the template"
    assert_inert(html)


def test_the_checks_catch_an_unescaped_value() -> None:
    with pytest.raises(AssertionError):
        assert_inert(jinja2.Template("{{ v }}", autoescape=False).render(v=HOSTILE))
    assert_inert(render.env.from_string("{{ v }}").render(v=HOSTILE))


def test_autoescape_is_on_for_html_and_svg() -> None:
    assert all(render.env.autoescape(name) for name in TEMPLATE_NAMES + ["new.html", "new.svg"])
    probe = render.env.overlay(loader=jinja2.DictLoader({"t.html": "{{ v }}", "t.svg": "<text>{{ v }}</text>"}))
    assert probe.get_template("t.html").render(v="<b>") == "&lt;b&gt;"
    assert probe.get_template("t.svg").render(v="<b>") == "<text>&lt;b&gt;</text>"
    assert render.env.undefined is jinja2.StrictUndefined


def test_no_template_marks_a_value_safe() -> None:
    for path in render.TEMPLATES.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\|\s*safe\b|autoescape\s+false", text), path.name
