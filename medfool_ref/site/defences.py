"""The Defences measured page: every registered defence (what it is, the catalog entry it implements, how medfool
attacks it), then the recorded runs on the reference model (``medfool audit --defence`` per input defence, ``medfool harden`` and
``medfool certify``, committed with their provenance under ``docs/results/defended/<defence>``,
``docs/results/hardening`` and ``docs/results/certify``). The files are data, not
markup: ``defences.html`` escapes every value."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..reports.recorded_code import code_sha256
from .html import Link, Page, block, href, page_uri
from .render import render

URI = "defences-measured.md"
# how medfool attacks each kind of defence (the adaptive evaluation), in one line
JUDGED = {
    "hardening": "the audit's worst case (FGSM, PGD, APGD-CE, APGD-T, DeepFool) on the hardened weights",
    "certification": "a certificate, not an attack: no perturbation inside the certified L2 radius changes the smoothed "
                     "call (each certificate holds with probability at least 1 - alpha)",
    "data-sanitisation": "detection and false-positive rates on a BadNets training set, then the backdoor's success after "
                         "retraining on what it keeps",
    "integrity": "refuses weights or factory code whose sha256 differs from the pin, before anything runs",
}


def _judged(kind: str, differentiable: bool, randomised: bool, name: str) -> str:
    if kind == "input-restoration":
        how = "white-box through the transformation" if differentiable else "BPDA: the backward pass goes around it"
        return how + ("; EOT over its random draws" if randomised else "")
    if kind == "detection":
        if name == "stateful-query-detector":
            return "Square and HopSkipJump against a served model behind it (medfool serve --detector)"
        if name == "strip":
            return "triggered against clean crops of a BadNets-trained model"
        return "a detector-aware attack: fool the model and stay under the detector's threshold"
    return JUDGED.get(kind, "")


def registered() -> list[dict[str, Any]]:
    """One row per registered defence: name, kind, catalog entry id (or None), how it is judged, how to run it."""
    from ..defences.registry_hardening import HARDENING_DEFENCES
    from ..defences.specs import SPECS

    rows = []
    for s in SPECS.values():
        run = f"medfool defend detect --defence {s.name}" if s.kind == "detection" else f"medfool audit --defence {s.name}"
        rows.append({"name": s.name, "kind": s.kind, "catalog": s.implements, "summary": s.summary, "citation": s.citation,
                     "judged": _judged(s.kind, s.differentiable, s.randomised, s.name), "run": run})
    for r in HARDENING_DEFENCES:
        code = str(r["code"])
        found = re.search(r"\((.*)\)$", code)
        rows.append({"name": r["name"], "kind": r["kind"], "catalog": r["catalog"], "summary": code.split(" (")[0],
                     "citation": r["citation"], "judged": _judged(str(r["kind"]), True, False, str(r["name"])),
                     "run": found.group(1) if found else ""})
    return rows


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def _count(r: Any) -> str:
    """``k/n (p%; 95% lo-hi%)`` from a card's ``{correct|certified, tiles, wilson95}``."""
    if not isinstance(r, dict):
        return "n/a"
    k = r.get("correct", r.get("certified"))
    n, ci = r.get("tiles"), r.get("wilson95")
    if not (isinstance(k, int) and isinstance(n, int) and n > 0):
        return "n/a"
    text = f"{k}/{n} ({k / n:.0%}"
    if isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        text += f"; 95% CI {ci[0]:.0%}-{ci[1]:.0%}"
    return text + ")"


def _provenance(doc: dict[str, Any], folder: Path) -> list[tuple[str, str]]:
    prov = doc.get("provenance")
    if isinstance(prov, dict):
        return sorted((str(k), str(v)) for k, v in prov.items())
    note = folder / "PROVENANCE.md"
    return [("note", " ".join(line.strip() for line in note.read_text(encoding="utf-8").splitlines()[1:] if line.strip()))] if note.is_file() else []


def _stale(doc: dict[str, Any], run: str) -> bool:
    recorded = (doc.get("provenance") or {}).get("code_sha256") if isinstance(doc.get("provenance"), dict) else None
    return isinstance(recorded, str) and recorded != code_sha256(run)


def _n(v: Any, fmt: str = "{:g}") -> str:
    """A number as text, or "?" for anything that is not one (the files are data)."""
    return fmt.format(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else "?"


def hardening_part(folder: Path) -> dict[str, Any] | None:
    card = _read(folder / "card.json")
    if card is None:
        return None
    recipe = card.get("recipe") if isinstance(card.get("recipe"), dict) else {}
    tc = recipe.get("train_config") if isinstance(recipe.get("train_config"), dict) else {}
    ev = card.get("evaluation") if isinstance(card.get("evaluation"), dict) else {}
    eps = recipe.get("eps")
    facts = {"method": str(recipe.get("method", "?")), "eps": _n(eps * 255 if isinstance(eps, (int, float)) else None, "{:.3g}"),
             "attack_steps": _n(recipe.get("attack_steps")), "steps": _n(tc.get("steps")), "init": str(recipe.get("init", "?")),
             "train_tiles": _n((card.get("train_data") or {}).get("tiles")), "held_tiles": _n((card.get("held_out") or {}).get("tiles")),
             "robust_by": str(ev.get("robust_by", "?")), "eval_eps": _n(ev.get("eps_255")), "apgd_steps": _n(ev.get("apgd_steps")),
             "weights_sha256": str(card.get("weights_sha256", "?"))}
    rows = [(when, _count((card.get(when) or {}).get("clean")), _count((card.get(when) or {}).get("robust"))) for when in ("before", "after")]
    cis = [((card.get(when) or {}).get("robust") or {}).get("wilson95") for when in ("before", "after")]
    overlap = all(isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci) for ci in cis) and (
        cis[0][0] <= cis[1][1] and cis[1][0] <= cis[0][1])
    return {"facts": facts, "rows": rows, "overlap": overlap, "stale": _stale(card, "hardening"), "provenance": _provenance(card, folder)}


def certify_part(folder: Path) -> dict[str, Any] | None:
    doc = _read(folder / "certify.json")
    if doc is None:
        return None
    params = doc.get("params") if isinstance(doc.get("params"), dict) else {}
    facts = {"sigma": _n(params.get("sigma")), "finetune_steps": _n(params.get("finetune_steps")), "n0": _n(params.get("n0")),
             "n": _n(params.get("n"), "{:,}"), "alpha": _n(params.get("alpha")), "tiles": _n(doc.get("held_out_tiles")),
             "abstained": _n(doc.get("abstained")), "max_radius": _n(doc.get("largest_certifiable_radius"), "{:.3f}")}
    rows = [(_n(t.get("radius")), _count(t)) for t in doc.get("certified_accuracy") or [] if isinstance(t, dict)]
    figure = "defences/certified-accuracy.png" if (folder / "certified-accuracy.png").is_file() else None
    return {"facts": facts, "rows": rows, "figure": figure, "stale": _stale(doc, "certify"), "provenance": _provenance(doc, folder)}


def _rate(p: Any, n: Any, ci: Any) -> str:
    """``k/n (p%; 95% CI lo-hi%)`` from a rate over n tiles and its interval."""
    if not (isinstance(p, (int, float)) and isinstance(n, int) and n > 0) or isinstance(p, bool):
        return "n/a"
    text = f"{round(p * n)}/{n} ({p:.0%}"
    if isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        text += f"; 95% CI {ci[0]:.0%}-{ci[1]:.0%}"
    return text + ")"


def _budget_rows(part: dict[str, Any]) -> list[dict[str, Any]]:
    n = part.get("tiles")
    return [{"eps": _n(b.get("eps_255")), **{k: _rate(b.get(k), n, b.get(f"{k}_ci95")) for k in ("undefended", "adaptive", "non_adaptive")},
             "overclaim": isinstance(b.get("overclaim"), (int, float)) and b["overclaim"] > 0.05}
            for b in part.get("budgets") or [] if isinstance(b, dict)]


def _moved_most(doc: dict[str, Any]) -> dict[str, str] | None:
    """The residual-risk scenario whose risk the defence moved most (ties: the first in the report)."""
    rows = [r for r in doc.get("residual_risk") or [] if isinstance(r, dict)
            and isinstance(r.get("risk_inherent"), int) and isinstance(r.get("risk_residual"), int)]
    if not rows:
        return None
    r = max(rows, key=lambda r: abs(r["risk_inherent"] - r["risk_residual"]))
    return {"scenario": str(r.get("scenario")), "inherent": f"{r['risk_inherent']} ({r.get('band_inherent')})",
            "residual": f"{r['risk_residual']} ({r.get('band_residual')})", "evidence": str(r.get("evidence_residual", "")),
            "moved": r["risk_inherent"] != r["risk_residual"], "scenarios": len(rows)}


def _audit_stale(recorded: Any, ran: list[str], defence: str, fingerprint: Any) -> bool:
    """Whether a recorded audit's code hash differs from today's code (an attack medfool no longer has: stale)."""
    if not isinstance(recorded, str):
        return False
    try:
        return bool(recorded != fingerprint(ran, [defence]))
    except KeyError:
        return True


def defended_part(folder: Path) -> list[dict[str, Any]]:
    """One entry per recorded defended audit (``docs/results/defended/<defence>/report.json``), in registry order."""
    from ..defences.specs import SPECS
    from ..registry import audit_fingerprint

    out = []
    for name in SPECS:
        doc = _read(folder / name / "report.json")
        d = doc.get("defence") if doc else None
        if not isinstance(d, dict):
            continue
        parts = [p for p in d.get("splits") or [] if isinstance(p, dict)]
        parts.append({"name": "all", "tiles": d.get("tiles"), "budgets": d.get("budgets"),
                      "clean_accuracy_undefended": d.get("clean_accuracy_undefended"), "clean_accuracy_defended": d.get("clean_accuracy_defended")})
        checks = [c for c in doc.get("validity") or [] if isinstance(c, dict)]
        prov = doc.get("provenance") if isinstance(doc.get("provenance"), dict) else {}
        ran = sorted({str(a.get("attack")) for a in doc.get("attacks") or [] if isinstance(a, dict)})
        out.append({
            "name": name, "chain": " -> ".join(str(c) for c in d.get("chain") or []), "folder": name,
            "eot": _n(d.get("eot_draws")) if d.get("randomised") else None,
            "attacks": ", ".join(str(a.get("id")) for a in doc.get("attacks") or [] if isinstance(a, dict)),
            "parts": [{"name": str(p.get("name")), "tiles": _n(p.get("tiles")),
                       "clean": (_rate(p.get("clean_accuracy_undefended"), p.get("tiles"), None) + " -> "
                                 + _rate(p.get("clean_accuracy_defended"), p.get("tiles"), None)),
                       "budgets": _budget_rows(p)} for p in parts],
            "checks": [(str(c.get("title")), "passed" if c.get("passed") is True else "FAILED" if c.get("passed") is False else "not run",
                        str(c.get("measured", ""))) for c in checks],
            "unreliable": bool(doc.get("unreliable")), "moved": _moved_most(doc),
            "stale": _audit_stale(prov.get("code_sha256"), ran, name, audit_fingerprint),
            "provenance": sorted((str(k), str(v)) for k, v in prov.items())})
    return out


def figure_files(recorded: Path | None) -> list[tuple[str, Path]]:
    if recorded is None:
        return []
    png = recorded / "certify" / "certified-accuracy.png"
    return [("defences/certified-accuracy.png", png)] if png.is_file() and (recorded / "certify" / "certify.json").is_file() else []


def defences_page(catalog: Any, recorded: Path | None) -> Page:
    """The page; ``recorded`` is the folder of committed long runs (docs/results), or None."""
    rows = registered()
    for r in rows:
        cid = r["catalog"]
        r["entry"] = (Link(href(URI, page_uri("defence", cid)), catalog.defences[cid].name)
                      if cid and cid in catalog.defences else None)
    hardening = hardening_part(recorded / "hardening") if recorded else None
    certify = certify_part(recorded / "certify") if recorded else None
    defended = defended_part(recorded / "defended") if recorded else []
    body = render("defences.html", rows=rows, hardening=hardening, certify=certify, defended=defended,
                  index=href(URI, "defences/index.md"), audit=href(URI, "audit.md"))
    return Page(URI, "Defences measured", block(body))
