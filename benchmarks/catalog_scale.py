"""How validation and export grow with catalog size: synthetic but valid catalogs of N entries.

    python -m benchmarks.catalog_scale 100 1000 10000

Each size is a copy of the shipped catalog plus N synthetic entries (half attacks, half papers
with BibTeX entries that cite them), measured in a fresh process: wall time of
``check_catalog`` and of the JSON export, and peak resident memory.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
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
    for part in ("catalog", "bib", "medfool_ref/data"):
        shutil.copytree(ROOT / part, dest / part)
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


def main(sizes: list[int]) -> None:
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            make_catalog(Path(tmp), n)
            r = measure(Path(tmp))
        r["entries_added"] = n
        rows.append(r)
        print(json.dumps(r), flush=True)
    base = rows[0]
    for r in rows[1:]:
        print(f"{r['entries_added']} vs {base['entries_added']}: validate x{r['validate_s'] / base['validate_s']:.1f} "
              f"for x{r['entries_added'] / base['entries_added']:.0f} entries")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100, 1000, 10000])
