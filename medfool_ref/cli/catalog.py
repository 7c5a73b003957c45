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


def cmd_export(args: argparse.Namespace) -> int:
    import json

    from ..catalog.export import export_json, json_schema

    text = json.dumps(json_schema(), indent=2) if args.format == "jsonschema" else export_json(_load(args))
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

    p = sub.add_parser("export", help="the whole catalog as one JSON document, or its JSON Schema")
    p.add_argument("--format", choices=("json", "jsonschema"), default="json")
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    with_root(p)
    p.set_defaults(func=cmd_export)
