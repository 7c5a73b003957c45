"""``medfool results``: the showcase campaign (every registered attack on the sample tiles) and its reports."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..registry import SPECS
from .params import UsageError


def run_results(args: argparse.Namespace) -> int:
    from ..reports.intervals import fmt_ci
    from ..campaign.showcase import run_showcase
    from ..campaign.store import ResultsStore
    from ..reports.results import write_reports
    from ..targets.target import reference_target

    unknown = sorted(set(args.only or []) - set(SPECS))
    if unknown:
        raise UsageError(f"--only {', '.join(unknown)}: unknown attack; known: {', '.join(sorted(SPECS))}")
    if args.only:
        names = [n for n in SPECS if n in args.only]
    elif args.all:
        names = list(SPECS)
    else:  # the fast ones by default; the long ones are recorded (make results) and committed with their provenance
        names = [n for n in SPECS if SPECS[n].showcase.recorded == args.recorded]
    needed = sorted(set(names) | {SPECS[n].showcase.same_as for n in names if SPECS[n].showcase.same_as})
    out = Path(args.out)
    target = reference_target()
    store = ResultsStore(out)
    entries, run = run_showcase(needed, target, store, resume=args.resume)
    for f in run.failures:
        print(f"medfool: {f.attack} ({f.label}) failed: {f.error.splitlines()[0]}")
    summary = write_reports(store, entries, sorted(names), target.classes, out, str(target.device), args.command_line)
    for name, s in summary.items():
        if s.get("ci", {}).get("success_rate"):
            print(f"{name}: success rate {fmt_ci(s['ci']['success_rate'])}")
        elif s.get("success_rate") is not None:
            print(f"{name}: success rate {s['success_rate']:.0%}")
        elif "accuracy_drop_vs_noise" in s:
            print(f"{name}: accuracy drop at 20% poison {s['accuracy_drop_vs_noise']:+.1%} vs the noise control "
                  f"({s['accuracy_drop_vs_label_flip']:+.1%} vs label flip)")
        else:
            print(f"{name}: done (see {out}/{name}/report.json)")
    print(f"{run.ran} unit(s) run, {run.skipped} reused; store {store.path}")
    return 1 if run.failures else 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    fast = ", ".join(n for n, s in SPECS.items() if not s.showcase.recorded)
    p = sub.add_parser("results", help="run the registered attacks on the sample tiles and write results for the site")
    p.add_argument("--out", default="build/results", help="output folder (default build/results)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--only", action="append", help="run only this attack (repeatable)")
    which.add_argument("--recorded", action="store_true", help="run the long experiments only (make results writes them to docs/results)")
    which.add_argument("--all", action="store_true", help=f"run every attack (default: the fast ones, {fast})")
    p.add_argument("--resume", action="store_true", help="reuse finished units from the output folder's results store")
    p.set_defaults(func=run_results)
