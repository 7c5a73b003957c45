"""How validation and export grow with catalog size: synthetic but valid catalogs of N entries.

    python -m benchmarks.catalog_scale 100 1000 10000 [--site-max 1000] [--out benchmarks/results/catalog-scale.json]

Each size is a copy of the shipped catalog plus N synthetic entries (half attacks, half papers
with BibTeX entries that cite them), measured in a fresh process: wall time of
``check_catalog`` and of the JSON export, and peak resident memory; and, up to ``--site-max``
entries, a full ``mkdocs build`` of the site (one page per entry) in another fresh process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ATTACK = """id: syn-attack-{i}
stable_id: MFA-{sid:04d}
name: Synthetic attack {i}
aliases: [synthetic {i}]
family: adversarial-image
nist:
  lifecycle_stage: deployment
  objectives: [integrity-violation]
  capabilities: [testing-data-control]
  knowledge: [white-box]
atlas: [{{id: AML.T0043.000, name: White-Box Optimization}}]
targeted: both
perturbation:
  norm: linf
  budget: 8/255
  locality: global
  physically_realisable: false
summary: A synthetic attack entry generated to measure how the validator scales with catalog size.
implementation: null
"""

PAPER = """id: syn{i}paper
bibkey: syn{i}paper
confidence: verified
checked_in: [synthetic]
roles: [attack]
summary: A synthetic paper entry generated to measure how the validator scales with catalog size.
proposes: [syn-attack-{i}]
demonstrates:
  - attack: syn-attack-{i}
    domains: [histopathology]
"""

BIB = "@misc{{syn{i}paper,\n  author = {{Synthetic, Author}},\n  title = {{Synthetic {i}}},\n  year = {{2020}},\n  x-confidence = {{verified}}\n}}\n\n"


def make_catalog(dest: Path, n: int) -> None:
    for part in ("catalog", "bib", "medfool_ref/data", "docs"):
        shutil.copytree(ROOT / part, dest / part)
    shutil.copy(ROOT / "mkdocs.yml", dest / "mkdocs.yml")
    half = n // 2
    for i in range(half):
        (dest / "catalog/attack" / f"syn-attack-{i}.yaml").write_text(ATTACK.format(i=i, sid=1000 + i))
        (dest / "catalog/paper" / f"syn{i}paper.yaml").write_text(PAPER.format(i=i))
    (dest / "bib/synthetic.bib").write_text("".join(BIB.format(i=i) for i in range(half)))


def measure(root: Path) -> dict[str, float]:
    code = (
        "import json, resource, sys, time\n"
        "from pathlib import Path\n"
        "t0 = time.perf_counter()\n"
        "from medfool_ref.catalog import check_catalog\n"
        "from medfool_ref.catalog.export import export_json\n"
        "t1 = time.perf_counter()\n"
        f"cat, problems = check_catalog(Path({str(root)!r}))\n"
        "t2 = time.perf_counter()\n"
        "assert not [p for p in problems if p.severity == 'error'], problems[:5]\n"
        "text = export_json(cat)\n"
        "t3 = time.perf_counter()\n"
        "print(json.dumps({'validate_s': t2 - t1, 'export_s': t3 - t2, 'export_mb': len(text) / 1e6,\n"
        "                  'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def measure_site(root: Path) -> dict[str, float]:
    """A full MkDocs build of the synthetic catalog's site (without attack results), in a fresh process."""
    code = (
        "import json, resource, time\n"
        "from mkdocs.commands.build import build\n"
        "from mkdocs.config import load_config\n"
        "t0 = time.perf_counter()\n"
        f"cfg = load_config({str(root / 'mkdocs.yml')!r}, site_dir={str(root / 'site')!r})\n"
        "cfg.plugins['medfool'].config.results = None\n"
        "build(cfg)\n"
        "t1 = time.perf_counter()\n"
        "print(json.dumps({'site_s': t1 - t0, 'site_peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["site_pages"] = sum(1 for _ in (root / "site").rglob("*.html"))
    return r


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.catalog_scale")
    ap.add_argument("sizes", nargs="*", type=int, default=[100, 1000, 10000])
    ap.add_argument("--site-max", type=int, default=1000, help="build the site only up to this many added entries")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "catalog-scale.json"))
    args = ap.parse_args(argv)
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            make_catalog(Path(tmp), n)
            r = measure(Path(tmp))
            if n <= args.site_max:
                r.update(measure_site(Path(tmp)))
        r["entries_added"] = n
        rows.append(r)
        print(json.dumps(r), flush=True)
    base = rows[0]
    for r in rows[1:]:
        print(f"{r['entries_added']} vs {base['entries_added']}: validate x{r['validate_s'] / base['validate_s']:.1f} "
              f"for x{r['entries_added'] / base['entries_added']:.0f} entries")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
              "rows": rows}
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
