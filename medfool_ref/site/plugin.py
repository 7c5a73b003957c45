"""The ``medfool`` MkDocs plugin: validates the catalog and writes every page from it at build time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mkdocs.config import config_options
from mkdocs.config.base import Config
from mkdocs.exceptions import PluginError
from mkdocs.plugins import BasePlugin
from mkdocs.structure.files import File, Files, InclusionLevel

from ..catalog import CatalogError, Severity, load_catalog
from ..catalog.cite import full_bibtex, full_csl
from ..catalog.export import export_json, json_schema
from ..catalog.navigator import AuditFormatError
from ..catalog.navigator import layer as atlas_layer
from ..catalog.stix import export_stix
from ..reports.audit_schema import schema as audit_schema
from .audit import audit_page, figure_files, read_audit
from .benchmarks import benchmarks_page, charts
from .defences import defences_page
from .defences import figure_files as defence_figures
from .html import esc
from .pages import AUDIT_LAYER, all_pages, nav
from .results import result_files
from .slides import figure_files as slide_figures
from .slides import slides_page

ASSETS = Path(__file__).parent / "assets"


class MedfoolConfig(Config):
    root = config_options.Optional(config_options.Type(str))  # folder with catalog/ and bib/; default: mkdocs.yml's folder
    results = config_options.Optional(config_options.Type(str))  # folder of the main command's fresh reference runs
    recorded = config_options.Optional(config_options.Type(str))  # folder of committed long runs (with provenance)
    benchmarks = config_options.Optional(config_options.Type(str))  # folder of committed benchmark results
    audit = config_options.Optional(config_options.Type(str))  # folder of the reference model's recorded audit
    slides = config_options.Optional(config_options.Type(str))  # folder of the recorded whole-slide run (medfool slide demo)


class MedfoolPlugin(BasePlugin[MedfoolConfig]):
    def on_config(self, config: Any) -> Any:
        base = Path(config.config_file_path).resolve().parent
        root = Path(self.config.root) if self.config.root else base
        if not root.is_absolute():
            root = base / root
        try:
            self.catalog = load_catalog(root)
        except CatalogError as exc:
            errors = [str(p) for p in exc.problems if p.severity is Severity.ERROR]
            raise PluginError("medfool: the catalog is invalid:\n" + "\n".join(errors)) from None
        self.results_dirs = [base / d for d in (self.config.results, self.config.recorded) if d] or None
        self.audit_dir = base / self.config.audit if self.config.audit else None
        audit = audit_page(self.audit_dir, audit_stale(read_audit(self.audit_dir)))
        self.slides_dir = base / self.config.slides if self.config.slides else None
        slides = slides_page(self.slides_dir)
        runs = [(pg.uri, pg.title) for pg in (audit, slides) if pg is not None]
        self.pages = all_pages(self.catalog, self.results_dirs, read_audit(self.audit_dir), runs=runs)
        items = nav(self.catalog)
        if audit is not None:
            self.pages.append(audit)
            items.insert(len(items) - 3, {"Audit": audit.uri})
        if slides is not None:
            self.pages.append(slides)
            items.insert(len(items) - 3, {"Whole slides": slides.uri})
        bench = benchmarks_page(base / self.config.benchmarks) if self.config.benchmarks else None
        if bench is not None:
            self.pages.append(bench)
            items.insert(len(items) - 2, {"Benchmarks": bench.uri})
        recorded = base / self.config.recorded if self.config.recorded else None
        self.recorded_dir = recorded
        measured = defences_page(self.catalog, recorded)
        self.pages.append(measured)
        at = next((i for i, item in enumerate(items) if isinstance(item, dict) and "Defences" in item), len(items) - 3)
        items.insert(at + 1, {"Defences measured": measured.uri})
        self.in_nav = set(_nav_uris(items))
        config.nav = _escape_nav(items)
        for css in ("assets/medfool.css",):
            if css not in config.extra_css:
                config.extra_css.append(css)
        if "assets/medfool.js" not in [str(j) for j in config.extra_javascript]:
            config.extra_javascript.append("assets/medfool.js")
        return config

    def on_files(self, files: Files, *, config: Any) -> Files:
        for page in self.pages:
            # entries of a section too large to list in the nav are reached from its index page
            inclusion = InclusionLevel.UNDEFINED if page.uri in self.in_nav else InclusionLevel.NOT_IN_NAV
            _add(files, File.generated(config, page.uri, content=page.markdown(), inclusion=inclusion))
        c = self.catalog
        downloads = {
            "downloads/medfool.bib": full_bibtex(c),
            "downloads/medfool.csl.json": json.dumps(full_csl(c), indent=2, ensure_ascii=False),
            "downloads/catalog.json": export_json(c),
            "downloads/catalog.schema.json": json.dumps(json_schema(), indent=2),
            "downloads/audit-report.schema.json": json.dumps(audit_schema(), indent=2),
            "downloads/medfool.stix.json": export_stix(c),
            "downloads/medfool.atlas-layer.json": json.dumps(atlas_layer(c), indent=2, ensure_ascii=False),
        }
        report = read_audit(self.audit_dir)
        if report is not None:  # the recorded audit of the reference model, as ATLAS Navigator evidence
            try:
                layer = atlas_layer(c, report, f"{self.config.audit}/report.json")
            except AuditFormatError as exc:
                raise PluginError(f"medfool: {self.config.audit}/report.json: {exc}") from None
            downloads[AUDIT_LAYER] = json.dumps(layer, indent=2, ensure_ascii=False)
        card = Path(__file__).resolve().parents[1] / "data" / "reference-model" / "MODEL_CARD.md"
        if card.is_file():  # our own text, written by `medfool model train`
            _add(files, File.generated(config, "reference-model.md", content=card.read_text(encoding="utf-8")))
        for uri, content in downloads.items():
            _add(files, File.generated(config, uri, content=content))
        if self.config.benchmarks:
            base = Path(config.config_file_path).resolve().parent
            for uri, svg in charts(base / self.config.benchmarks).items():
                _add(files, File.generated(config, uri, content=svg))
        for uri, path in figure_files(self.audit_dir):
            _add(files, File.generated(config, uri, abs_src_path=str(path)))
        for uri, path in defence_figures(self.recorded_dir):
            _add(files, File.generated(config, uri, abs_src_path=str(path)))
        for uri, path in slide_figures(self.slides_dir):
            _add(files, File.generated(config, uri, abs_src_path=str(path)))
        for uri, path in result_files(self.results_dirs):
            _add(files, File.generated(config, uri, abs_src_path=str(path)))
        for asset in sorted(ASSETS.iterdir()):
            _add(files, File.generated(config, f"assets/{asset.name}", abs_src_path=str(asset)))
        return files


def _add(files: Files, file: File) -> None:
    existing = files.get_file_from_path(file.src_uri)
    if existing is not None:
        files.remove(existing)
    files.append(file)


def _nav_uris(items: list[Any]) -> list[str]:
    out: list[str] = []
    for item in items:
        values = item.values() if isinstance(item, dict) else [item]
        for v in values:
            out += _nav_uris(v) if isinstance(v, list) else [v]
    return out


def _escape_nav(items: list[Any]) -> list[Any]:
    """Nav titles come from catalog names; MkDocs renders them unescaped, so escape them here."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, dict):
            out.append({esc(k): (_escape_nav(v) if isinstance(v, list) else v) for k, v in item.items()})
        else:
            out.append(item)
    return out


def audit_stale(report: dict[str, Any] | None) -> bool:
    """A recorded audit is stale when its code hash differs from today's for the attacks it ran."""
    if not report:
        return False
    from ..registry import SPECS, audit_fingerprint

    recorded = (report.get("provenance") or {}).get("code_sha256")
    names = sorted({a.get("attack") for a in report.get("attacks", []) if a.get("attack") in SPECS})
    return isinstance(recorded, str) and recorded != audit_fingerprint(names)
