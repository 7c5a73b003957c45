"""Load ``catalog/`` and ``bib/`` into a validated, cross-linked :class:`Catalog`.

Every problem is collected (never only the first) as a :class:`Diagnostic` naming the file,
the line and the field. :func:`load_catalog` raises :class:`CatalogError` carrying all of
them when any is an error; :func:`check_catalog` returns them for the CLI.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .bibliography import load_bibliography
from .derive import derived_placements
from .diagnostics import CatalogError, Diagnostic, Severity
from .models import KIND_MODELS, CatalogMeta, Paper, Strict
from .tables import Catalog, Source
from .yamlread import Path as FieldPath
from .yamlread import YamlProblem, dotted, read_yaml

KIND_DIRS = tuple(KIND_MODELS)  # folder names under catalog/


def default_root() -> Path:
    """The project root holding ``catalog/`` and ``bib/`` (the source checkout)."""
    return Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- reading files


def _pydantic_problems(exc: ValidationError, source: Source) -> list[Diagnostic]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        # pydantic appends the union member's type name to the loc for unions; drop non-path parts
        loc = tuple(p for p in loc if isinstance(p, int) or not str(p).startswith(("str-constrained", "constrained-str", "function-")))
        kind = err["type"]
        if kind == "missing":
            message = "required field is missing"
        elif kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "enum":
            expected = err.get("ctx", {}).get("expected", "")
            message = f"{err['input']!r} is not one of {expected}"
        elif kind == "string_pattern_mismatch":
            message = f"{err['input']!r} does not match the pattern {err['ctx']['pattern']}"
        else:
            message = err["msg"]
        out.append(Diagnostic(source.path, source.line(loc), dotted(loc), message))
    return out


def _read_entry(path: Path, rel: str, model: type[Strict], problems: list[Diagnostic]) -> tuple[Strict, Source] | None:
    try:
        doc = read_yaml(path.read_bytes())
    except YamlProblem as exc:
        problems.append(Diagnostic(rel, exc.line, exc.field, exc.message))
        return None
    source = Source(rel, doc)
    if not isinstance(doc.data, dict):
        problems.append(Diagnostic(rel, 1, "", f"top level must be a mapping, not {type(doc.data).__name__}"))
        return None
    try:
        obj = model.model_validate(doc.data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, source))
        return None
    return obj, source


def _read_all(root: Path, problems: list[Diagnostic]) -> Catalog | None:
    cat_dir = root / "catalog"
    if not cat_dir.is_dir():
        problems.append(Diagnostic(str(cat_dir), None, "", "no catalog/ folder here"))
        return None
    meta_path = cat_dir / "catalog.yaml"
    meta_read = None
    if meta_path.is_file():
        meta_read = _read_entry(meta_path, "catalog/catalog.yaml", CatalogMeta, problems)
    else:
        problems.append(Diagnostic("catalog/catalog.yaml", None, "", "missing: it gives the catalog's title and version"))
    meta = meta_read[0] if meta_read else CatalogMeta(title="(unreadable)", version="0.0.0")
    catalog = Catalog(root=root, meta=meta)  # type: ignore[arg-type]
    catalog.meta_source = meta_read[1] if meta_read else None

    for child in sorted(cat_dir.iterdir()):
        if child.name == "catalog.yaml" or child.name.startswith("."):
            continue
        if child.is_dir() and child.name in KIND_DIRS:
            continue
        problems.append(Diagnostic(child.relative_to(root).as_posix(), None, "",
                                   f"unexpected {'folder' if child.is_dir() else 'file'}: entries go in catalog/<kind>/ where kind is one of {', '.join(KIND_DIRS)}"))

    first_seen: dict[str, str] = {}
    for kind, model in KIND_MODELS.items():
        kind_dir = cat_dir / kind
        if not kind_dir.is_dir():
            continue
        for path in sorted(kind_dir.iterdir()):
            rel = path.relative_to(root).as_posix()
            if path.name.startswith("."):
                continue
            if path.is_dir() or path.suffix != ".yaml":
                problems.append(Diagnostic(rel, None, "", "not a .yaml file: every entry is one .yaml file"))
                continue
            got = _read_entry(path, rel, model, problems)
            if got is None:
                catalog.broken.add(path.stem)
                continue
            obj, source = got
            entry_id = obj.id  # type: ignore[attr-defined]
            if path.stem != entry_id:
                problems.append(Diagnostic(rel, source.line(("id",)), "id", f"id {entry_id!r} must equal the file name ({path.stem!r}.yaml)"))
            if entry_id in first_seen:
                problems.append(Diagnostic(rel, source.line(("id",)), "id", f"id {entry_id!r} is already used by {first_seen[entry_id]}"))
                continue
            first_seen[entry_id] = rel
            catalog.sources[entry_id] = source
            if kind == "risk-model":
                if catalog.risk_model is not None:
                    problems.append(Diagnostic(rel, 1, "", "only one risk model is allowed"))
                    continue
                catalog.risk_model = obj  # type: ignore[assignment]
            else:
                catalog.tables()[kind][entry_id] = obj
    return catalog


# --------------------------------------------------------------------------- cross-checks


class _Checker:
    def __init__(self, catalog: Catalog, problems: list[Diagnostic]) -> None:
        self.c = catalog
        self.problems = problems

    def report(self, entry_id: str, loc: FieldPath, message: str, severity: Severity = Severity.ERROR) -> None:
        src = self.c.sources[entry_id]
        self.problems.append(Diagnostic(src.path, src.line(loc), dotted(loc), message, severity))

    def ref(self, entry_id: str, loc: FieldPath, target: str, table: dict[str, Any], kind: str) -> None:
        if target not in table:
            if target in self.c.broken:
                return  # its own file's errors are reported; do not repeat them here
            known = self.c.kind_of(target)
            extra = f" (it is a {known})" if known else ""
            self.report(entry_id, loc, f"unknown {kind} {target!r}{extra}")

    def unique(self, entry_id: str, loc: FieldPath, values: list[str], what: str) -> None:
        seen: set[str] = set()
        for i, v in enumerate(values):
            if v in seen:
                self.report(entry_id, loc + (i,), f"{what} {v!r} listed twice")
            seen.add(v)

    def run(self) -> None:
        c = self.c
        self.attacks()
        self.papers()
        for d in c.defences.values():
            for i, a in enumerate(d.counters):
                self.ref(d.id, ("counters", i), a, c.attacks, "attack")
            for i, p in enumerate(d.papers):
                self.ref(d.id, ("papers", i), p, c.papers, "paper")
            self.defence_implementation(d)
        self.stable_ids()
        self.atlas()
        self.datasets()
        self.risk()
        self.bib()

    def defence_implementation(self, d: Any) -> None:
        """A defence's ``implementation`` must name a registered defence (input-side specs or the hardening table)."""
        from ..defences.registry_hardening import NAMES
        from ..defences.specs import SPECS

        names = set(NAMES) | set(SPECS)
        if d.implementation is not None and d.implementation not in names:
            self.report(d.id, ("implementation",), f"{d.implementation!r} is not in the defences registry ({', '.join(sorted(names))})")

    def attacks(self) -> None:
        from ..registry import IMPLEMENTATIONS

        for a in self.c.attacks.values():
            self.unique(a.id, ("aliases",), a.aliases, "alias")
            for i, fig in enumerate(a.paper_figures):
                self.ref(a.id, ("paper_figures", i, "paper"), fig.paper, self.c.papers, "paper")
            if a.implementation is not None and a.implementation not in IMPLEMENTATIONS:
                self.report(a.id, ("implementation",), f"{a.implementation!r} is not in the registry of reference implementations ({', '.join(sorted(IMPLEMENTATIONS)) or 'empty'})")
            training = a.family == "training-tampering"
            if training and a.nist.lifecycle_stage == "deployment":
                self.report(a.id, ("nist", "lifecycle_stage"), "a training-tampering attack cannot be mounted at deployment")
            if not training and a.nist.lifecycle_stage != "deployment":
                self.report(a.id, ("nist", "lifecycle_stage"), "an input-alteration attack is mounted at deployment")
            if (a.perturbation.locality == "k-pixels") != (a.perturbation.pixels is not None):
                self.report(a.id, ("perturbation", "pixels"), "pixels is given exactly when locality is k-pixels")

    def papers(self) -> None:
        c = self.c
        for p in c.papers.values():
            for field_name in ("proposes", "analyses"):
                values = getattr(p, field_name)
                self.unique(p.id, (field_name,), values, "attack")
                for i, a in enumerate(values):
                    self.ref(p.id, (field_name, i), a, c.attacks, "attack")
            for i, d in enumerate(p.demonstrates):
                self.ref(p.id, ("demonstrates", i, "attack"), d.attack, c.attacks, "attack")
                for j, dom in enumerate(d.domains):
                    self.ref(p.id, ("demonstrates", i, "domains", j), dom, c.domains, "domain")
            for i, dom in enumerate(p.domains):
                self.ref(p.id, ("domains", i), dom, c.domains, "domain")
            if p.bibkey not in c.bib:
                self.report(p.id, ("bibkey",), f"BibTeX key {p.bibkey!r} is not in bib/*.bib")
            else:
                declared = c.bib.entry(p.bibkey).fields.get("x-confidence")
                if declared is not None and declared.strip() != p.confidence:
                    self.report(p.id, ("confidence",), f"confidence {p.confidence.value!r} differs from x-confidence {declared.strip()!r} in {c.bib.files[p.bibkey]}")
            if p.survey is not None:
                self.placements(p)
        # a seed reference number is held by one paper only
        refs: dict[int, str] = {}
        for p in c.papers.values():
            if p.survey is not None and p.survey.ref is not None:
                if p.survey.ref in refs:
                    self.report(p.id, ("survey", "ref"), f"survey reference {p.survey.ref} is already {refs[p.survey.ref]!r}")
                refs[p.survey.ref] = p.id
        bibkeys: dict[str, str] = {}
        for p in c.papers.values():
            if p.bibkey in bibkeys:
                self.report(p.id, ("bibkey",), f"BibTeX key {p.bibkey!r} is already used by paper {bibkeys[p.bibkey]!r}")
            bibkeys[p.bibkey] = p.id

    def placements(self, p: Paper) -> None:
        """The survey's Table 1 placement must agree with our relations, or carry a note."""
        assert p.survey is not None
        seen: set[tuple[str, str]] = set()
        for i, t in enumerate(p.survey.table1):
            if (t.row, t.column) in seen:
                self.report(p.id, ("survey", "table1", i), "the same Table 1 cell is listed twice")
            seen.add((t.row, t.column))
        if any(a in self.c.broken for a in [*p.proposes, *p.analyses, *(d.attack for d in p.demonstrates)]):
            return
        derived = derived_placements(self.c, p)
        if seen != derived and not p.survey.note:
            want = ", ".join(sorted(f"{r}/{col}" for r, col in derived)) or "none"
            have = ", ".join(sorted(f"{r}/{col}" for r, col in seen)) or "none"
            self.report(p.id, ("survey", "table1"),
                        f"the survey places this paper in {have} but its relations give {want}: add survey.note explaining the difference")

    def stable_ids(self) -> None:
        c = self.c
        for table, retired, what in ((c.attacks, c.meta.retired_attack_ids, "attack"), (c.defences, c.meta.retired_defence_ids, "defence")):
            seen: dict[str, str] = {}
            for obj in table.values():
                sid = obj.stable_id  # type: ignore[attr-defined]
                if sid in seen:
                    self.report(obj.id, ("stable_id",), f"stable id {sid} is already used by {what} {seen[sid]!r}")  # type: ignore[attr-defined]
                if sid in retired:
                    self.report(obj.id, ("stable_id",), f"stable id {sid} was retired and can never be reused")  # type: ignore[attr-defined]
                seen[sid] = obj.id  # type: ignore[attr-defined]

    def atlas(self) -> None:
        """ATLAS ids and names against the shipped snapshot; the catalog's pinned ATLAS version must be its version."""
        from .atlas import load_atlas

        c, atlas = self.c, load_atlas()
        meta_src = c.meta_source
        if c.meta.atlas_version != atlas.version and meta_src is not None:
            have = c.meta.atlas_version or "none"
            self.problems.append(Diagnostic(meta_src.path, meta_src.line(("atlas_version",)), "atlas_version",
                                            f"the ATLAS ids are checked against ATLAS {atlas.version} (the shipped snapshot), "
                                            f"but the catalog records {have}: check the ids against that release and set atlas_version: {atlas.version}"))
        for entry, known, what in ([(a, atlas.techniques, "technique") for a in c.attacks.values()]
                                   + [(d, atlas.mitigations, "mitigation") for d in c.defences.values()]):
            refs = entry.atlas  # type: ignore[attr-defined]
            self.unique(entry.id, ("atlas",), [r.id for r in refs], f"ATLAS {what}")  # type: ignore[attr-defined]
            for i, ref in enumerate(refs):
                if ref.id not in known:
                    self.report(entry.id, ("atlas", i, "id"), f"{ref.id} is not a {what} in ATLAS {atlas.version}")  # type: ignore[attr-defined]
                elif ref.name != known[ref.id]:
                    self.report(entry.id, ("atlas", i, "name"),  # type: ignore[attr-defined]
                                f"{ref.name!r} is not the name of {ref.id} in ATLAS {atlas.version} ({known[ref.id]!r})")
        for d in c.defences.values():
            addressed = {t for m in d.atlas for t in atlas.addresses.get(m.id, ())}
            for i, aid in enumerate(d.counters):
                a = c.attacks.get(aid)
                if a is None:
                    continue
                techniques = {t.id for t in a.atlas}
                if not techniques & addressed:
                    self.report(d.id, ("counters", i), f"ATLAS {atlas.version} links none of this defence's mitigations to the "
                                f"techniques of attack {aid!r} ({', '.join(sorted(techniques))})", Severity.WARNING)

    def datasets(self) -> None:
        c = self.c
        for ds in c.datasets.values():
            self.ref(ds.id, ("domain",), ds.domain, c.domains, "domain")
            for i, p in enumerate(ds.papers):
                self.ref(ds.id, ("papers", i), p, c.papers, "paper")
            base = (c.root / ds.location).resolve()
            if not base.is_relative_to(c.root.resolve()):
                self.report(ds.id, ("location",), "location must stay inside the project")
                continue
            if not base.is_dir():
                self.report(ds.id, ("location",), f"folder {ds.location!r} does not exist")
                continue
            paths = [f.path for f in ds.files]
            self.unique(ds.id, ("files",), paths, "file")
            for i, f in enumerate(ds.files):
                target = (base / f.path).resolve()
                if not target.is_relative_to(base) or not target.is_file():
                    self.report(ds.id, ("files", i, "path"), f"file {ds.location}/{f.path} does not exist")
                    continue
                digest = hashlib.sha256(target.read_bytes()).hexdigest()
                if digest != f.sha256:
                    self.report(ds.id, ("files", i, "sha256"), f"sha256 of {ds.location}/{f.path} is {digest}, not the recorded value")
                if f.label is not None and f.label not in ds.classes:
                    self.report(ds.id, ("files", i, "label"), f"label {f.label!r} is not one of the dataset's classes")

    def risk(self) -> None:
        rm = self.c.risk_model
        if rm is None:
            if any((self.c.root / "catalog" / "risk-model").glob("*.yaml")):
                return  # the file exists but has errors, reported already
            self.problems.append(Diagnostic("catalog/risk-model", None, "", "no risk model: exactly one file is expected"))
            return
        c = self.c
        stage_ids = {s.id: s for s in rm.stages}
        motive_ids = {m.id: m for m in rm.motives}
        role_ids = {r.id: r for r in rm.roles}
        for name, items in (("stages", rm.stages), ("motives", rm.motives), ("roles", rm.roles), ("scenarios", rm.scenarios)):
            self.unique(rm.id, (name,), [x.id for x in items], name[:-1])
        levels = [s.level for s in rm.severity_scale]
        if sorted(levels) != [1, 2, 3, 4, 5]:
            self.report(rm.id, ("severity_scale",), "severity levels must be 1 to 5, each once")
        for i, m in enumerate(rm.motives):
            for j, p in enumerate(m.papers):
                self.ref(rm.id, ("motives", i, "papers", j), p, c.papers, "paper")
        for i, p in enumerate(rm.papers):
            self.ref(rm.id, ("papers", i), p, c.papers, "paper")
        for i, r in enumerate(rm.roles):
            for j, s in enumerate(r.stages):
                self.ref(rm.id, ("roles", i, "stages", j), s, stage_ids, "stage")
            for j, m in enumerate(r.motives):
                self.ref(rm.id, ("roles", i, "motives", j), m, motive_ids, "motive")
        for i, s in enumerate(rm.scenarios):
            loc = ("scenarios", i)
            self.ref(rm.id, loc + ("attack",), s.attack, c.attacks, "attack")
            self.ref(rm.id, loc + ("role",), s.role, role_ids, "role")
            self.ref(rm.id, loc + ("motive",), s.motive, motive_ids, "motive")
            self.ref(rm.id, loc + ("entry_stage",), s.entry_stage, stage_ids, "stage")
            self.ref(rm.id, loc + ("domain",), s.domain, c.domains, "domain")
            role = role_ids.get(s.role)
            attack = c.attacks.get(s.attack)
            if role is None or attack is None:
                continue
            if s.entry_stage in stage_ids and s.entry_stage not in role.stages:
                self.report(rm.id, loc + ("entry_stage",), f"role {role.id!r} has no access to stage {s.entry_stage!r}")
            if s.motive in motive_ids and s.motive not in role.motives:
                self.report(rm.id, loc + ("motive",), f"role {role.id!r} is not given motive {s.motive!r}")
            missing = [cap.value for cap in attack.nist.capabilities if cap not in role.capabilities and cap != "label-limit"]
            if missing:
                self.report(rm.id, loc + ("role",), f"role {role.id!r} lacks the capabilities attack {attack.id!r} needs: {', '.join(missing)}")

    def bib(self) -> None:
        used = {p.bibkey for p in self.c.papers.values()}
        for key in self.c.bib.data.entries:
            if key not in used:
                self.problems.append(Diagnostic(self.c.bib.files[key], self.c.bib.lines[key], key,
                                                "BibTeX entry is not used by any paper", Severity.WARNING))


# --------------------------------------------------------------------------- entry points


def check_catalog(root: Path | None = None) -> tuple[Catalog | None, list[Diagnostic]]:
    """Read and validate; return the catalog (None if unreadable) and every problem."""
    root = (root or default_root()).resolve()
    problems: list[Diagnostic] = []
    catalog = _read_all(root, problems)
    if catalog is None:
        return None, problems
    catalog.bib = load_bibliography(root, problems)
    _Checker(catalog, problems).run()
    problems.sort(key=lambda d: (d.path, d.line or 0, d.field, d.message))
    return catalog, problems


def load_catalog(root: Path | None = None) -> Catalog:
    """Read, validate and return the catalog; raise :class:`CatalogError` on any error."""
    catalog, problems = check_catalog(root)
    if catalog is None or any(p.severity is Severity.ERROR for p in problems):
        raise CatalogError(problems)
    return catalog
