"""``medfool export --format stix``: the catalog as a STIX 2.1 bundle, built and checked by the ``stix2`` library.

One ``attack-pattern`` per attack, one ``course-of-action`` per defence, a ``mitigates`` relationship for every
attack a defence counters; external references name the entry's medfool stable id, its MITRE ATLAS ids (as the
ATLAS STIX export does: source ``mitre-atlas``) and its papers (DOI, arXiv or URL). Ids are ``uuid5`` of the
stable ids and timestamps are fixed, so the same catalog always gives the same bytes.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .atlas import load_atlas, url
from .cite import latex_to_text
from .derive import papers_by_relation, route_of
from .show import paper_links

if TYPE_CHECKING:
    from .tables import Catalog

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/medfool/medfool/catalog")
# when this mapping of the catalog onto STIX was last revised; SOURCE_DATE_EPOCH (reproducible builds) overrides it
REVISED = datetime(2026, 12, 2, tzinfo=timezone.utc)
KILL_CHAIN = "medfool-route"  # the survey's Figure 2: input alteration or training-process tampering


def stix_id(kind: str, key: str) -> str:
    return f"{kind}--{uuid.uuid5(NAMESPACE, f'{kind}:{key}')}"


def _timestamp() -> datetime:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return datetime.fromtimestamp(int(epoch), tz=timezone.utc) if epoch and epoch.isdigit() else REVISED


def _paper_refs(c: Catalog, pids: list[str]) -> list[dict[str, str]]:
    refs = []
    for pid in dict.fromkeys(pids):
        p = c.papers[pid]
        entry = c.bib.entry(p.bibkey)
        fields = {k.lower(): v for k, v in entry.fields.items()}
        title = latex_to_text(fields.get("title", pid))
        ref = {"source_name": p.bibkey, "description": f"{title} ({fields['year']})" if "year" in fields else title}
        links = paper_links(c, pid) or [v for k, v in entry.fields.items() if k.lower() == "url"]
        if links:
            ref["url"] = links[0]
        refs.append(ref)
    return refs


def _atlas_refs(ids: list[str]) -> list[dict[str, str]]:
    atlas = load_atlas()
    return [{"source_name": "mitre-atlas", "external_id": i, "url": url(i),
             "description": f"{atlas.label(i)} (ATLAS {atlas.version})"} for i in ids]


def bundle(c: Catalog) -> Any:
    """The STIX 2.1 bundle (a ``stix2.Bundle``); every object is validated by stix2 as it is made."""
    import stix2

    when = _timestamp()
    common = {"created": when, "modified": when, "allow_custom": False}
    author = stix2.Identity(id=stix_id("identity", "medfool"), name="medfool catalog", identity_class="organization",
                            description=f"{c.meta.title}, version {c.version}", **common)
    common["created_by_ref"] = author.id
    objects: list[Any] = [author]
    patterns: dict[str, str] = {}
    for a in sorted(c.attacks.values(), key=lambda x: x.stable_id):
        rel = papers_by_relation(c, a.id)
        refs = [{"source_name": "medfool", "external_id": a.stable_id, "description": f"catalog entry {a.id}, version {c.version}"}]
        refs += _atlas_refs([t.id for t in a.atlas]) + _paper_refs(c, rel["proposes"] + rel["analyses"] + rel["demonstrates"])
        ap = stix2.AttackPattern(id=stix_id("attack-pattern", a.stable_id), name=a.name, description=a.summary,
                                 aliases=list(a.aliases) or None, external_references=refs,
                                 kill_chain_phases=[{"kill_chain_name": KILL_CHAIN, "phase_name": route_of(a).value}], **common)
        patterns[a.id] = ap.id
        objects.append(ap)
    for d in sorted(c.defences.values(), key=lambda x: x.stable_id):
        refs = [{"source_name": "medfool", "external_id": d.stable_id, "description": f"catalog entry {d.id}, version {c.version}"}]
        refs += _atlas_refs([m.id for m in d.atlas]) + _paper_refs(c, list(d.papers))
        coa = stix2.CourseOfAction(id=stix_id("course-of-action", d.stable_id), name=d.name,
                                   description=f"{d.summary}\n\nLimitations: {d.limitations}\n\nAdaptive-attack evaluation "
                                               f"({d.adaptive_evaluation.value}): {d.adaptive_note}",
                                   external_references=refs, **common)
        objects.append(coa)
        for aid in d.counters:
            objects.append(stix2.Relationship(id=stix_id("relationship", f"{d.stable_id} mitigates {c.attacks[aid].stable_id}"),
                                              relationship_type="mitigates", source_ref=coa.id, target_ref=patterns[aid],
                                              description=f"{d.name} counters {c.attacks[aid].name} (medfool catalog)", **common))
    return stix2.Bundle(objects=objects, id=stix_id("bundle", f"catalog {c.version}"), allow_custom=False)


def export_stix(c: Catalog) -> str:
    # stix2's own pretty printer is slow; its compact form, re-indented, keeps the property order
    return json.dumps(json.loads(bundle(c).serialize()), indent=2, ensure_ascii=False)
