"""``medfool export --format atlas-layer``: a MITRE ATLAS Navigator layer of the catalog's attacks.

Each ATLAS technique an attack maps to is scored, either by the catalog's a-priori risk (the highest
likelihood x severity among the risk scenarios of its attacks, 1-25; :mod:`.risk`) or, given an audit's
``report.json``, by what the attacks measurably did to the audited model: the highest lower 95% Wilson bound of
their runs' success rates, in percent (so that 3 of 3 tiles counts for less than 57 of 60), with every run's k/n,
rate and interval in the technique's comment.
The layer follows the Navigator layer format 4.3 that ATLAS's own layers use (domain ``atlas-atlas``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from importlib.metadata import version as _dist_version
from .atlas import load_atlas, parent_of, url
from .risk import likelihood, scores

if TYPE_CHECKING:
    from .tables import Catalog

DOMAIN = "atlas-atlas"
VERSIONS = {"layer": "4.3", "navigator": "4.5.5"}
WHITE, RED = "#ffffff", "#e53935"
FEW = 20  # a rate resting on fewer tiles is flagged


class AuditFormatError(ValueError):
    """The file given with --audit is not an audit report this command can read."""


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of k successes in n trials (Wilson 1927)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _techniques_of(c: Catalog) -> dict[str, list[str]]:
    """ATLAS technique id -> catalog attack ids mapped to it (sub-techniques as listed)."""
    out: dict[str, list[str]] = defaultdict(list)
    for a in c.attacks.values():
        for t in a.atlas:
            out[t.id].append(a.id)
    return out


def _prior(c: Catalog) -> dict[str, tuple[int | None, str]]:
    """attack id -> (highest scenario risk or None, a line saying why)."""
    best: dict[str, Any] = {}
    for s in scores(c):
        if s.attack not in best or s.risk > best[s.attack].risk:
            best[s.attack] = s
    out = {}
    for a in c.attacks.values():
        s = best.get(a.id)
        if s is None:
            out[a.id] = (None, f"{a.name}: likelihood {likelihood(a)[0]}/5, no risk scenario in the catalog")
        else:
            out[a.id] = (s.risk, f"{a.name}: risk {s.risk}/25 ({s.band}; scenario {s.scenario}: likelihood "
                                 f"{s.likelihood} x severity {s.severity})")
    return out


def _rate(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or not 0 <= value <= 1:
        raise AuditFormatError(f"{where}: success_rate {value!r} is not a rate between 0 and 1")
    return float(value)


def _evidence(c: Catalog, report: dict[str, Any]) -> dict[str, tuple[float | None, list[str]]]:
    """attack id -> (highest lower 95% bound of its success rates or None, comment lines), from an audit's report.json."""
    runs = report.get("attacks") if isinstance(report, dict) else None
    if not isinstance(runs, list):
        raise AuditFormatError("no 'attacks' list: is this the report.json that medfool audit writes?")
    out: dict[str, tuple[float | None, list[str]]] = {}
    for i, run in enumerate(runs):
        if not isinstance(run, dict) or not isinstance(run.get("budgets"), list) or not isinstance(run.get("catalog_id"), str):
            raise AuditFormatError(f"attacks[{i}]: needs 'catalog_id' and a 'budgets' list")
        aid = run["catalog_id"]
        if aid not in c.attacks:
            continue  # an attack this catalog does not know; it maps to no ATLAS technique here
        best, lines = out.get(aid, (None, []))
        for j, b in enumerate(run["budgets"]):
            rate = _rate(b.get("success_rate"), f"attacks[{i}].budgets[{j}]") if isinstance(b, dict) else None
            n = b.get("tiles_attacked") if isinstance(b, dict) else None
            if rate is None or not isinstance(n, int) or isinstance(n, bool) or n <= 0:
                continue
            k = round(rate * n)
            lo, hi = wilson(k, n)
            budget = f" at {b['eps_255']:g}/255" if isinstance(b.get("eps_255"), (int, float)) else (
                f" at L2 {b['eps']:g}" if b.get("norm") == "l2" and isinstance(b.get("eps"), (int, float)) else "")
            few = f"; n < {FEW}: little evidence" if n < FEW else ""
            lines.append(f"{run.get('id', aid)}{budget}: {k}/{n} fooled ({100 * rate:.0f}%, 95% CI {100 * lo:.0f}-{100 * hi:.0f}%{few})")
            best = lo if best is None else max(best, lo)
        out[aid] = (best, lines)
    return out


def layer(c: Catalog, report: dict[str, Any] | None = None, report_name: str = "report.json") -> dict[str, Any]:
    """The layer as a JSON-ready dict; ``report`` is a parsed audit report.json, or None for the a-priori risk."""
    atlas = load_atlas()
    mapped = _techniques_of(c)
    prior = _prior(c)
    evidence = _evidence(c, report) if report is not None else None
    entries: dict[str, dict[str, Any]] = {}
    for tid in sorted(mapped):
        attacks = sorted(mapped[tid])
        if evidence is None:
            values = [prior[a][0] for a in attacks if prior[a][0] is not None]
            score: float | None = max(values) if values else None
            comment = [prior[a][1] for a in attacks]
        else:
            rates = [evidence[a][0] for a in attacks if a in evidence and evidence[a][0] is not None]
            score = round(100 * max(rates), 1) if rates else None
            comment = []
            for a in attacks:
                if a in evidence and evidence[a][1]:
                    comment += [f"{c.attacks[a].name}:"] + [f"  {line}" for line in evidence[a][1]]
                else:
                    comment.append(f"{c.attacks[a].name}: not run in this audit")
        entry: dict[str, Any] = {"techniqueID": tid, "enabled": True, "comment": "\n".join(comment),
                                 "links": [{"label": f"{tid} on atlas.mitre.org", "url": url(tid)}],
                                 "metadata": [{"name": "medfool attacks", "value": ", ".join(c.attacks[a].stable_id for a in attacks)}]}
        if score is not None:
            entry["score"] = score
        entries[tid] = entry
    for tid in list(entries):  # a parent shows its sub-techniques, scored by the highest of them
        parent = parent_of(tid)
        if parent is None:
            continue
        subs = [e for k, e in entries.items() if parent_of(k) == parent]
        held = entries.setdefault(parent, {"techniqueID": parent, "enabled": True,
                                           "comment": "highest score of its sub-techniques mapped in the catalog",
                                           "links": [{"label": f"{parent} on atlas.mitre.org", "url": url(parent)}]})
        held["showSubtechniques"] = True
        sub_scores = [e["score"] for e in subs if "score" in e]
        if sub_scores and "score" not in held:
            held["score"] = max(sub_scores)
    if evidence is None:
        name, top = "medfool: a-priori risk of the catalog's attacks", 25
        description = ("Each ATLAS technique that a medfool attack maps to, scored by the highest a-priori risk "
                       "(likelihood x clinical severity, 1-25) among the catalog's risk scenarios for those attacks.")
        legend = [{"label": "risk 1 (low)", "color": WHITE}, {"label": "risk 25 (critical)", "color": RED}]
    else:
        model = (report or {}).get("model") or {}
        name, top = f"medfool audit evidence: {model.get('name', 'model')}", 100
        description = (f"Each ATLAS technique that a medfool attack maps to, scored by the highest lower 95% Wilson bound of the "
                       f"success rates (% of the initially correct tiles fooled) that its attacks reached in the audit "
                       f"{report_name}; comments give every run's k/n, rate and interval. No score: not run in this audit.")
        legend = [{"label": "0% fooled (lower 95% bound)", "color": WHITE}, {"label": "100% fooled (lower 95% bound)", "color": RED}]
    metadata = [{"name": "generated_by", "value": f"medfool {_dist_version('medfool')}"},
                {"name": "catalog_version", "value": c.version},
                {"name": "atlas_data_version", "value": atlas.version}]
    if report is not None:
        prov = report.get("provenance") or {}
        metadata += [{"name": "audit", "value": report_name},
                     {"name": "audit_date", "value": str(report.get("date", prov.get("date", "unknown")))},
                     {"name": "audit_model_sha256", "value": str((report.get("model") or {}).get("sha256", "unknown"))}]
    return {
        "name": name,
        "versions": dict(VERSIONS),
        "domain": DOMAIN,
        "description": description,
        "techniques": [entries[k] for k in sorted(entries)],
        "gradient": {"colors": [WHITE, RED], "minValue": 0, "maxValue": top},
        "legendItems": legend,
        "hideDisabled": False,
        "selectSubtechniquesWithParent": False,
        "metadata": metadata,
    }
