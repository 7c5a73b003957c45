"""MITRE ATLAS ids and names, as the catalog's crosswalk is checked against them.

The shipped snapshot (``medfool_ref/data/atlas/atlas-ids.yaml``) holds facts only: the ids and names of
ATLAS techniques, sub-techniques and mitigations, which techniques each mitigation addresses, the ATLAS
version and where the file came from. It is made from mitre-atlas/atlas-data's ``dist/ATLAS.yaml`` by
``python -m medfool_ref.catalog.atlas ATLAS.yaml --commit SHA --release TAG --date YYYY-MM-DD``.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

SNAPSHOT = Path(__file__).resolve().parents[1] / "data" / "atlas" / "atlas-ids.yaml"
SITE = "https://atlas.mitre.org"
TECHNIQUE_ID = re.compile(r"^AML\.T[0-9]{4}(\.[0-9]{3})?$")
MITIGATION_ID = re.compile(r"^AML\.M[0-9]{4}$")


@dataclass(frozen=True)
class Atlas:
    version: str
    source: dict[str, str]
    techniques: dict[str, str]  # id -> name (a sub-technique's own name)
    mitigations: dict[str, str]  # id -> name
    addresses: dict[str, tuple[str, ...]]  # mitigation id -> technique ids ATLAS links it to

    def label(self, atlas_id: str) -> str:
        """``Parent: Sub-technique`` for a sub-technique, the plain name otherwise."""
        name = self.techniques.get(atlas_id) or self.mitigations.get(atlas_id) or atlas_id
        parent = parent_of(atlas_id)
        return f"{self.techniques[parent]}: {name}" if parent in self.techniques else name


def parent_of(technique_id: str) -> str | None:
    return technique_id.rsplit(".", 1)[0] if technique_id.count(".") == 2 else None


def url(atlas_id: str) -> str:
    """The entry's page on the ATLAS site (a link only; nothing is fetched)."""
    return f"{SITE}/{'mitigations' if MITIGATION_ID.match(atlas_id) else 'techniques'}/{atlas_id}"


@lru_cache(maxsize=4)
def load_atlas(path: Path = SNAPSHOT) -> Atlas:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    mitigations = data["mitigations"]
    return Atlas(
        version=str(data["version"]),
        source={k: str(v) for k, v in data["source"].items()},
        techniques=dict(data["techniques"]),
        mitigations={k: v["name"] for k, v in mitigations.items()},
        addresses={k: tuple(v.get("techniques", [])) for k, v in mitigations.items()},
    )


def snapshot(atlas_yaml: dict[str, Any], source: dict[str, str]) -> dict[str, Any]:
    """The facts medfool keeps from a parsed ``dist/ATLAS.yaml`` (format 5.x: one matrix)."""
    techniques: dict[str, str] = {}
    mitigations: dict[str, dict[str, Any]] = {}
    for matrix in atlas_yaml["matrices"]:
        for t in matrix.get("techniques", []):
            techniques[t["id"]] = t["name"]
        for m in matrix.get("mitigations", []):
            linked = [x if isinstance(x, str) else x["id"] for x in m.get("techniques", [])]
            mitigations[m["id"]] = {"name": m["name"], "techniques": sorted(set(linked))}
    return {
        "version": str(atlas_yaml["version"]),
        "source": source,
        "techniques": dict(sorted(techniques.items())),
        "mitigations": dict(sorted(mitigations.items())),
    }


HEADER = """\
# MITRE ATLAS ids and names (facts only), for checking the catalog's ATLAS crosswalk.
# Made by `python -m medfool_ref.catalog.atlas` from the file named under source; do not edit by hand.
# MITRE ATLAS data: Copyright 2021-2025 MITRE, Apache License 2.0 (atlas-data's LICENSE); https://atlas.mitre.org
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m medfool_ref.catalog.atlas", description=__doc__.splitlines()[0])
    ap.add_argument("atlas_yaml", help="mitre-atlas/atlas-data's dist/ATLAS.yaml")
    ap.add_argument("--commit", required=True)
    ap.add_argument("--release", required=True)
    ap.add_argument("--date", required=True)
    ap.add_argument("-o", "--output", default=str(SNAPSHOT))
    args = ap.parse_args(argv)
    data = yaml.safe_load(Path(args.atlas_yaml).read_text(encoding="utf-8"))
    source = {"repository": "https://github.com/mitre-atlas/atlas-data", "file": "dist/ATLAS.yaml",
              "commit": args.commit, "release": args.release, "date": args.date}
    snap = snapshot(data, source)
    text = HEADER + yaml.safe_dump(snap, sort_keys=False, allow_unicode=True, width=120)
    Path(args.output).write_text(text, encoding="utf-8")
    print(f"wrote {args.output}: ATLAS {snap['version']}, {len(snap['techniques'])} techniques, "
          f"{len(snap['mitigations'])} mitigations", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
