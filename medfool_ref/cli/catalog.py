"""The catalog commands: validate, list, show, table, cite and export."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from ..catalog import Catalog, Severity, check_catalog, load_catalog
from ..catalog.cite import FORMATS as CITE_FORMATS
from ..catalog.formats import TABLE_FORMATS
from .params import UsageError

KINDS = ("attack", "paper", "domain", "defence", "dataset", "risk-model")


def _root(value: str | None) -> Path | None:
    if value is None:
        return None
    root = Path(value)
    if not root.is_dir():
        raise UsageError(f"{value}: no such folder")
    return root


def _load(args: argparse.Namespace) -> Catalog:
    return load_catalog(_root(getattr(args, "root", None)))


def _entry(catalog: Catalog, entry_id: str) -> str:
    if catalog.get(entry_id) is not None:
        return entry_id
    wanted = entry_id.lower()
    for table in catalog.tables().values():
        for obj in table.values():
            names = [getattr(obj, "name", ""), getattr(obj, "stable_id", ""), *getattr(obj, "aliases", [])]
            if any(n and n.lower() == wanted for n in names):
                return obj.id  # type: ignore[attr-defined]
    ids = [i for t in catalog.tables().values() for i in t]
    close = difflib.get_close_matches(entry_id, ids, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see 'medfool list'"
    raise UsageError(f"no catalog entry {entry_id!r}{hint}")


# --------------------------------------------------------------------------- commands


def cmd_validate(args: argparse.Namespace) -> int:
    catalog, problems = check_catalog(_root(args.root))
    errors = [p for p in problems if p.severity is Severity.ERROR]
    warnings = [p for p in problems if p.severity is Severity.WARNING]
    for p in problems:
        print(p)
    if errors:
        print(f"invalid: {len(errors)} error(s), {len(warnings)} warning(s)", file=sys.stderr)
        return 1
    assert catalog is not None
    counts = ", ".join(f"{len(t)} {k}s" for k, t in catalog.tables().items())
    print(f"valid: {counts}, 1 risk model; {len(warnings)} warning(s)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    catalog = _load(args)
    for kind, table in catalog.tables().items():
        if args.kind and args.kind != kind:
            continue
        for obj in table.values():
            label = getattr(obj, "name", None) or getattr(obj, "bibkey", "")
            stable = getattr(obj, "stable_id", "")
            print(f"{kind:8} {obj.id:34} {stable:9} {label}")  # type: ignore[attr-defined]
    if catalog.risk_model and args.kind in (None, "risk-model"):
        print(f"{'risk-model':8} {catalog.risk_model.id:34} {'':9} {catalog.risk_model.name}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from ..catalog.show import show

    catalog = _load(args)
    print(show(catalog, _entry(catalog, args.id)))
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from ..catalog.derive import table1
    from ..catalog.formats import render_table

    catalog = _load(args)
    sys.stdout.write(render_table(catalog, table1(catalog, args.scope), args.format))
    return 0


def cmd_cite(args: argparse.Namespace) -> int:
    from ..catalog.cite import cite

    catalog = _load(args)
    print(cite(catalog, _entry(catalog, args.id), args.format))
    return 0


def _read_audit(path: str) -> dict:
    import json

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{path}: no such file (give the report.json that medfool audit wrote)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path}: not a JSON audit report ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not an audit report (the top level is not an object)")
    return data


def cmd_export(args: argparse.Namespace) -> int:
    import json

    from ..catalog.export import export_json, json_schema

    if args.audit and args.format != "atlas-layer":
        raise UsageError("--audit goes with --format atlas-layer")
    if args.format == "jsonschema":
        text = json.dumps(json_schema(), indent=2)
    elif args.format == "stix":
        from ..catalog.stix import export_stix

        text = export_stix(_load(args))
    elif args.format == "atlas-layer":
        from ..catalog.navigator import AuditFormatError, layer

        report = _read_audit(args.audit) if args.audit else None
        try:
            text = json.dumps(layer(_load(args), report, Path(args.audit).name if args.audit else ""), indent=2, ensure_ascii=False)
        except AuditFormatError as exc:
            raise UsageError(f"{args.audit}: {exc}") from None
    else:
        text = export_json(_load(args))
    if args.output:
        out = Path(args.output)
        if not out.parent.is_dir():
            raise UsageError(f"{args.output}: folder {out.parent} does not exist")
        out.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    else:
        print(text)
    return 0


# --------------------------------------------------------------------------- parser


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    def with_root(p: argparse.ArgumentParser) -> None:
        p.add_argument("--root", help="project folder holding catalog/ and bib/ (default: this checkout)")

    p = sub.add_parser("validate", help="check the catalog and the bibliography; report every problem")
    p.add_argument("root", nargs="?", help="folder holding catalog/ and bib/ (default: this checkout)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("list", help="list entries")
    p.add_argument("--kind", choices=KINDS)
    with_root(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="show one entry with its relations and links")
    p.add_argument("id", help="entry id, stable id (MFA-0002), name or alias")
    with_root(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("table", help="the survey's Table 1 (seed) or its extension over the catalog (all)")
    p.add_argument("--scope", choices=("seed", "all"), default="seed")
    p.add_argument("--format", choices=TABLE_FORMATS, default="markdown")
    with_root(p)
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("cite", help="cite a paper, or a catalog entry with its key papers")
    p.add_argument("id")
    p.add_argument("--format", choices=CITE_FORMATS, default="bibtex")
    with_root(p)
    p.set_defaults(func=cmd_cite)

    p = sub.add_parser("export", help="the whole catalog as one JSON document, its JSON Schema, a STIX 2.1 bundle "
                                      "or a MITRE ATLAS Navigator layer")
    p.add_argument("--format", choices=("json", "jsonschema", "stix", "atlas-layer"), default="json",
                   help="json: the flat export; stix: STIX 2.1 bundle (attack-patterns, courses of action, mitigates); "
                        "atlas-layer: ATLAS Navigator layer scored by a-priori risk, or by --audit evidence")
    p.add_argument("--audit", metavar="REPORT_JSON", help="with --format atlas-layer: score techniques by this audit's "
                                                          "measured success rates (report.json of medfool audit)")
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    with_root(p)
    p.set_defaults(func=cmd_export)
