"""Registry of medfool's reference attack implementations, each with its spec.

The catalog names an implementation by a short name; only names listed here resolve, so a
catalog file can never make medfool import arbitrary code. Each entry says where the code is
(a module inside ``medfool_ref.attacks`` and a function, imported only when the attack runs, so
reading the catalog never needs torch) and what the campaign core needs to know to run it:
which inputs it takes, whether it is targeted, its budget parameter and the budgets an audit
sweeps, the knowledge it assumes, the catalog entry it implements and the configuration of its
showcase run on the sample tiles (``medfool results``). The command line, the results run and
the benchmarks read these specs; adding an attack means adding an entry here.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from importlib import import_module
from types import MappingProxyType
from typing import Any, Callable, Literal, Mapping

Inputs = Literal["tiles", "tiles+training", "none", "training", "slide"]  # slide: run by `medfool slide attack`
Targeting = Literal["never", "optional", "required"]
Knowledge = Literal["white-box", "black-box"]

# keyword-only parameters the campaign core supplies itself; they are never set from the command line
SUPPLIED = frozenset({"target", "progress", "labels", "transforms", "classes", "config", "device", "deploy", "retrain"})


@dataclass(frozen=True)
class Budget:
    """The parameter that bounds an attack's strength, its default, and the values an audit sweeps."""

    param: str
    default: float
    sweep: tuple[float, ...]
    unit: str  # how to read a value: "/255" (shown times 255), "fraction of the tile", "pixels", ...

    def label(self, value: float) -> str:
        if self.unit == "/255":
            return f"{value * 255:g}/255"
        if self.unit == "fraction of the tile":
            return f"{value:.0%}"
        return f"{value:g} {self.unit}"


@dataclass(frozen=True)
class Extra:
    """A parameter the attack function does not take directly (the executor maps it, e.g. to a TrainConfig)."""

    name: str
    kind: type
    default: Any
    help: str = ""
    minimum: float | None = None


@dataclass(frozen=True)
class Showcase:
    """How ``medfool results`` runs the attack on the sample tiles the reference model gets right.

    ``runs`` are parameter sets, one campaign entry each (e.g. one per patch area or trigger);
    ``limit`` caps the tiles per size group and ``groups`` picks the size groups ("all" or
    "first"); ``control`` names another attack run on the same tiles and draws for comparison;
    ``same_as`` reports another attack's units instead of running its own.
    """

    runs: tuple[Mapping[str, Any], ...] = (MappingProxyType({}),)
    target: str | None = None
    limit: int | None = None
    groups: Literal["all", "first"] = "all"
    transform_draws: int = 0  # > 0: also score each adversarial under that many held-out transformation draws
    control: tuple[str, Mapping[str, Any]] | None = None
    same_as: str | None = None
    support: int = 16  # training tiles for a universal attack
    recorded: bool = False  # too long for the main command: run by `make results`, committed with its provenance


@dataclass(frozen=True)
class AttackSpec:
    name: str
    module: str
    function: str
    implements: str  # the catalog attack entry
    inputs: Inputs
    targeted: Targeting
    knowledge: Knowledge
    summary: str
    budget: Budget | None = None
    minimal_norm: str | None = None  # a minimal-perturbation attack reports the norm it minimises instead of a budget
    extras: tuple[Extra, ...] = ()
    showcase: Showcase = field(default_factory=Showcase)
    verb: str | None = None  # the name under `medfool poison` for training-time attacks
    default_target: str | None = None  # the target class when none is given

    @property
    def command(self) -> str:
        return "poison" if self.inputs == "training" else "attack"

    @property
    def module_path(self) -> str:
        """The module's full name: under medfool_ref.attacks, or (a dotted name) under medfool_ref."""
        return f"medfool_ref.{self.module}" if "." in self.module else f"medfool_ref.attacks.{self.module}"

    def function_object(self) -> Callable[..., Any]:
        return getattr(import_module(self.module_path), self.function)

    def parameters(self) -> dict[str, Extra]:
        """Every parameter a user can set, with its type and default (from the function's signature and the extras)."""
        out: dict[str, Extra] = {}
        for name, p in inspect.signature(self.function_object()).parameters.items():
            if p.kind is not inspect.Parameter.KEYWORD_ONLY or name in SUPPLIED:
                continue
            out[name] = Extra(name, _kind_of(p), p.default)
        for e in self.extras:
            out[e.name] = e
        return out


def _kind_of(p: inspect.Parameter) -> type:
    ann, default = str(p.annotation), p.default
    if isinstance(default, bool) or ann == "bool":
        return bool
    if ann.startswith("tuple"):
        return tuple
    if (isinstance(default, int) and not isinstance(default, bool)) or ann.startswith("int"):
        return int
    if isinstance(default, float) or ann.startswith("float"):
        return float
    return str


LINF_SWEEP = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
_TRAIN_EXTRAS = (
    Extra("steps", int, 400, "training steps of each model", 1),
    Extra("crop", int, 64, "training crop size (px)", 16),
    Extra("batch_size", int, 32, "crops per training step", 2),
    Extra("lr", float, 3e-3, "peak learning rate", 0),
    Extra("width", int, 24, "network width", 1),
    Extra("seed", int, 0, "training seed", 0),
)


def _p(**kw: Any) -> Mapping[str, Any]:
    return MappingProxyType(kw)


SPECS: dict[str, AttackSpec] = {s.name: s for s in (
    AttackSpec("fgsm", "gradient", "fgsm", "fgsm", "tiles", "optional", "white-box",
               "one signed-gradient step", budget=Budget("eps", 8 / 255, LINF_SWEEP, "/255"),
               showcase=Showcase()),
    AttackSpec("pgd", "gradient", "pgd", "pgd", "tiles", "optional", "white-box",
               "projected gradient descent with random start", budget=Budget("eps", 8 / 255, LINF_SWEEP, "/255"),
               showcase=Showcase()),
    AttackSpec("apgd", "apgd", "apgd", "apgd", "tiles", "optional", "white-box",
               "step-size-free PGD with momentum and checkpoints (APGD-CE; APGD-T with targets > 0)",
               budget=Budget("eps", 8 / 255, LINF_SWEEP, "/255"), showcase=Showcase(recorded=True)),
    AttackSpec("deepfool", "deepfool", "deepfool", "deepfool", "tiles", "never", "white-box",
               "minimal L2 perturbation to the nearest linearised boundary", minimal_norm="l2",
               showcase=Showcase()),
    AttackSpec("eot", "eot", "eot", "eot", "tiles", "optional", "white-box",
               "PGD on the loss expected over stain, geometry, blur and noise transformations",
               budget=Budget("eps", 8 / 255, LINF_SWEEP, "/255"),
               showcase=Showcase(limit=12, groups="first", transform_draws=32, control=("pgd", _p()))),
    AttackSpec("patch", "patch", "adversarial_patch", "adversarial-patch", "tiles+training", "required", "white-box",
               "a universal patch trained over tiles and random placements",
               budget=Budget("area", 0.1, (0.05, 0.1, 0.2), "fraction of the tile"),
               extras=(Extra("patch_file", str, None, "apply this patch image instead of training one"),),
               showcase=Showcase(runs=(_p(area=0.05), _p(area=0.1), _p(area=0.2)), target="NORM", recorded=True)),
    AttackSpec("one-pixel", "onepixel", "one_pixel", "one-pixel", "tiles", "optional", "black-box",
               "differential evolution over a few pixels, from output probabilities only",
               budget=Budget("pixels", 1, (1, 3, 10), "pixels"),
               showcase=Showcase(runs=(_p(pixels=1, population=100, generations=10),), limit=2, recorded=True)),
    AttackSpec("fooling-images", "fooling", "fooling_images", "fooling-images", "none", "required", "black-box",
               "CPPN images evolved from class scores alone", showcase=Showcase(recorded=True)),
    AttackSpec("badnets", "backdoor", "badnets", "badnets", "training", "required", "white-box",
               "a trigger planted by whoever trains the model", verb="badnets", extras=_TRAIN_EXTRAS, default_target="NORM",
               showcase=Showcase(runs=(_p(), _p(trigger="pixel-pattern", trigger_size=8)), target="NORM", recorded=True)),
    AttackSpec("generative-poisoning", "poisoning", "generative_poisoning", "generative-poisoning", "training", "never",
               "white-box", "poison tiles made by an autoencoder trained against the deployed model", verb="generative",
               extras=(Extra("deploy_steps", int, 300, "training steps of the deployed model", 1),
                       Extra("retrain_steps", int, 150, "steps of each retraining", 1)),
               showcase=Showcase(runs=(_p(repeats=3),), recorded=True)),
    AttackSpec("direct-gradient-poisoning", "poisoning", "direct_gradient_poison", "direct-gradient-poisoning", "training",
               "never", "white-box", "the per-tile gradient baseline the generator is timed against",
               showcase=Showcase(same_as="generative-poisoning", recorded=True)),
    # --- universal ---
    AttackSpec("uap", "universal", "uap", "universal-adversarial-perturbation", "tiles+training", "optional", "white-box",
               "one L-inf pattern computed on support tiles and added unchanged to other tiles (SGD-UAP)",
               budget=Budget("eps", 8 / 255, LINF_SWEEP, "/255"), showcase=Showcase(support=18, recorded=True)),
    AttackSpec("common-noise", "universal", "common_noise", "common-adversarial-noise", "tiles+training", "never", "white-box",
               "one L-inf pattern per class, each computed on that class's support tiles",
               budget=Budget("eps", 8 / 255, LINF_SWEEP, "/255"), showcase=Showcase(support=18, recorded=True)),
    AttackSpec("utap", "universal", "utap", "utap", "tiles+training", "never", "white-box",
               "one L-inf pattern that scrambles the penultimate features, computed without labels",
               budget=Budget("eps", 8 / 255, LINF_SWEEP, "/255"), showcase=Showcase(support=18, recorded=True)),
    AttackSpec("moea-apga", "moea", "moea_apga", "moea-apga", "tiles", "required", "black-box",
               "NSGA-II over low-resolution perturbations: margin and L2 norm as two objectives, probabilities only",
               budget=Budget("eps_max", 16 / 255, (8 / 255, 16 / 255), "/255"), default_target="NORM",
               showcase=Showcase(target="NORM", limit=6, recorded=True)),
    # --- end universal ---
    # --- natural ---
    AttackSpec("adversarial-stain-perturbation", "stain", "stain_perturbation", "adversarial-stain-perturbation", "tiles",
               "never", "white-box", "the worst H&E stain vectors and concentrations within a stated range, by gradient",
               budget=Budget("max_angle_deg", 8.0, (4.0, 8.0, 12.0), "degrees"), showcase=Showcase(limit=4, groups="first")),
    AttackSpec("white-balance-shift", "whitebalance", "white_balance", "white-balance-shift", "tiles", "never", "black-box",
               "the worst camera colour temperature and tint within a stated range, from a query budget",
               showcase=Showcase(limit=4, groups="first")),
    AttackSpec("physical-artefacts", "artefacts", "physical_artefacts", "physical-artefacts", "tiles", "never", "black-box",
               "the worst placement of generated ink, bubble, fold or blur artefacts from a query budget",
               showcase=Showcase(runs=(_p(kind="ink"), _p(kind="bubble"), _p(kind="fold"), _p(kind="blur")), limit=4,
                                 groups="first")),
    AttackSpec("gradient-shielding", "shielding", "gradient_shielding", "gradient-shielding", "tiles", "never", "white-box",
               "PGD restricted to the most gradient-sensitive pixels, beside a random mask and plain PGD",
               budget=Budget("eps", 8 / 255, LINF_SWEEP, "/255"), showcase=Showcase(limit=4, groups="first")),
    AttackSpec("mil-slide-perturbation", "campaign.slide", "attack_slide", "mil-slide-perturbation", "slide", "never", "white-box",
               "a registered tile attack on the few tiles that carry a slide's call, re-aggregated (medfool slide attack)"),
    # --- end natural ---
    # --- blackbox ---
    AttackSpec("square", "square", "square", "square-attack", "tiles", "optional", "black-box",
               "score-based random search with square updates (query-only), at most 1,000 queries a tile",
               budget=Budget("eps", 4 / 255, LINF_SWEEP, "/255"),
               showcase=Showcase(runs=(_p(max_queries=200),), limit=4, groups="first")),
    AttackSpec("hop-skip-jump", "hopskipjump", "hop_skip_jump", "hop-skip-jump", "tiles", "optional", "black-box",
               "label-only boundary walk: the smallest L2 (or L-inf) reached within the query budget", minimal_norm="l2",
               showcase=Showcase(runs=(_p(max_queries=200),), limit=4, groups="first")),
    # --- end blackbox ---
)}

# name -> (module under medfool_ref.attacks, or a dotted name under medfool_ref, function name); what the catalog may name
IMPLEMENTATIONS: dict[str, tuple[str, str]] = {name: (s.module, s.function) for name, s in SPECS.items()}


def spec(name: str) -> AttackSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"no reference implementation named {name!r} (known: {', '.join(sorted(SPECS))})") from None


def resolve(name: str) -> Callable[..., Any]:
    """Return the attack function registered under ``name``."""
    return spec(name).function_object()


PACKAGE = Path(__file__).resolve().parent
_LOCAL_IMPORT = re.compile(r"^from (\.+)([\w.]*) import ([\w, ()]+)", re.M)


def source_files(name: str) -> list[Path]:
    """The files a showcase result of ``name`` depends on: its attack module and what it imports from the
    package (transitively), the executor, and the reference model's weights."""
    s = spec(name)
    todo, seen = [PACKAGE.joinpath(*s.module_path.split(".")[1:]).with_suffix(".py"), PACKAGE / "campaign" / "execute.py"], set()
    while todo:
        f = todo.pop()
        if f in seen or not f.is_file():
            continue
        seen.add(f)
        for dots, mod, names in _LOCAL_IMPORT.findall(f.read_text(encoding="utf-8")):
            base = f.parent
            for _ in range(len(dots) - 1):
                base = base.parent
            if not base.is_relative_to(PACKAGE):
                continue
            parts = [x for x in mod.split(".") if x]
            stem = base.joinpath(*parts) if parts else base
            if stem.with_suffix(".py").is_file():
                todo.append(stem.with_suffix(".py"))
            else:  # `from . import x` or a package: the named submodules
                todo += [stem / f"{n.strip(' ()')}.py" for n in names.split(",")]
    seen.discard(PACKAGE / "registry.py")  # the spec's own showcase parameters are hashed instead
    return sorted(seen) + [PACKAGE / "data" / "reference-model" / "tilenet.safetensors"]


def source_fingerprint(name: str) -> str:
    """sha256 over the showcase's parameters and :func:`source_files`: a recorded result whose
    fingerprint differs from the current one was made by other code (it is stale)."""
    h = hashlib.sha256(json.dumps([dict(r) for r in spec(name).showcase.runs], sort_keys=True, default=str).encode())
    for f in source_files(name):
        h.update(f.relative_to(PACKAGE).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


DEFENDED_AUDIT_FILES = ("campaign/defended.py", "campaign/validity.py", "targets/defended.py", "reports/defence.py",
                        "defences/system.py", "defences/specs.py")


def audit_fingerprint(names: list[str], defences: list[str] | tuple[str, ...] = ()) -> str:
    """sha256 over the audit's own code and the source files of the attacks it ran (a recorded audit's staleness);
    for a defended audit (``defences``: registry names), also the defended system's code and each defence's module."""
    h = hashlib.sha256()
    files = {PACKAGE / "campaign" / "audit.py", PACKAGE / "reports" / "audit.py"} | {f for n in names for f in source_files(n)}
    if defences:
        from .defences.specs import SPECS as DEFENCE_SPECS

        files |= {PACKAGE / f for f in DEFENDED_AUDIT_FILES} | {PACKAGE / "defences" / f"{DEFENCE_SPECS[d].module}.py" for d in defences}
    for f in sorted(files):
        h.update(f.relative_to(PACKAGE).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()
