"""``medfool site``: build the documentation site, or build and serve it."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from ..catalog import default_root


def cmd_site(args: argparse.Namespace) -> int:
    root = default_root()
    cmd = [sys.executable, "-m", "mkdocs"]
    if args.serve:
        cmd += ["serve", "--strict", "--dev-addr", args.addr]
    else:
        cmd += ["build", "--strict", "--site-dir", str(Path(args.out).resolve())]
    return subprocess.call(cmd, cwd=root)


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("site", help="build the documentation site from the catalog (or build and serve it)")
    p.add_argument("--serve", action="store_true", help="serve it at --addr and rebuild on changes")
    p.add_argument("--addr", default="127.0.0.1:8000", help="address to serve on (default 127.0.0.1:8000)")
    p.add_argument("--out", default="site", help="output folder for a build (default site/)")
    p.set_defaults(func=cmd_site)
