"""The ``medfool`` command line: one module per verb group.

Exit codes: 0 success, 1 the catalog is invalid (or a run failed), 2 a usage error (unknown id,
bad option, missing folder, a refused tile or parameter). User mistakes never end in a traceback.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Sequence

from .. import __version__
from ..catalog import CatalogError, Severity
from . import attack, audit, catalog, certify, defend, harden, model, poison, results, serve, site, slide, tiles
from .params import RunFailed, UsageError

GROUPS = (catalog, site, attack, audit, poison, results, tiles, model, slide, certify, harden, defend, serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medfool", description="Catalog of ways to fool medical imaging networks.")
    parser.add_argument("--version", action="version", version=f"medfool {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ..campaign.plan import PlanError
    from ..campaign.store import StoreError

    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = "medfool " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    try:
        return int(args.func(args))
    except (UsageError, PlanError, StoreError) as exc:
        print(f"medfool: error: {exc}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"medfool: {exc}", file=sys.stderr)
        return 1
    except CatalogError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        errors = sum(p.severity is Severity.ERROR for p in exc.problems)
        print(f"medfool: the catalog is invalid ({errors} error(s)); run 'medfool validate' for details", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except OSError as exc:  # an output path the user gave cannot be written, a disk is full...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"medfool: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
