"""Pydantic models of the catalog: one model per kind of YAML file.

Every model forbids unknown fields; closed vocabularies are enums. Fields that can be
derived from others (an attack's route, Table 1, likelihood and risk) are not stored here:
they are computed in :mod:`medfool_ref.catalog.derive` and :mod:`medfool_ref.catalog.risk`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$", max_length=80)]
BibKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_:\-]*$", max_length=80)]
AttackStableId = Annotated[str, StringConstraints(pattern=r"^MFA-[0-9]{4}$")]
DefenceStableId = Annotated[str, StringConstraints(pattern=r"^MFD-[0-9]{4}$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4000, strip_whitespace=True)]
Prose = Annotated[str, StringConstraints(min_length=40, max_length=4000, strip_whitespace=True)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Version = Annotated[str, StringConstraints(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")]
AtlasTechniqueId = Annotated[str, StringConstraints(pattern=r"^AML\.T[0-9]{4}(\.[0-9]{3})?$")]
AtlasMitigationId = Annotated[str, StringConstraints(pattern=r"^AML\.M[0-9]{4}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


# --------------------------------------------------------------------------- vocabularies


class Family(StrEnum):
    """The survey's Table 1 rows."""

    ADVERSARIAL_IMAGE = "adversarial-image"
    ADVERSARIAL_PATCH = "adversarial-patch"
    ONE_PIXEL = "one-pixel"
    TRAINING_TAMPERING = "training-tampering"


FAMILY_LABELS: dict[Family, str] = {
    Family.ADVERSARIAL_IMAGE: "Adversarial images",
    Family.ADVERSARIAL_PATCH: "Adversarial patches",
    Family.ONE_PIXEL: "One-pixel attack",
    Family.TRAINING_TAMPERING: "Training process tampering",
}


class Route(StrEnum):
    """The survey's Figure 2: the two parts of the AI process an attacker can target."""

    INPUT_ALTERATION = "input-alteration"
    TRAINING_TAMPERING = "training-tampering"


ROUTE_LABELS: dict[Route, str] = {
    Route.INPUT_ALTERATION: "Input alteration (inference time)",
    Route.TRAINING_TAMPERING: "Training-process tampering",
}


class LifecycleStage(StrEnum):
    """NIST AI 100-2: when the attack is mounted (supply chain as a third value)."""

    TRAINING = "training"
    DEPLOYMENT = "deployment"
    SUPPLY_CHAIN = "supply-chain"


class Objective(StrEnum):
    """NIST AI 100-2 attacker objectives."""

    AVAILABILITY = "availability-breakdown"
    INTEGRITY = "integrity-violation"
    PRIVACY = "privacy-compromise"
    MISUSE = "misuse-enablement"


class Capability(StrEnum):
    """NIST AI 100-2 attacker capabilities."""

    TRAINING_DATA_CONTROL = "training-data-control"
    MODEL_CONTROL = "model-control"
    TESTING_DATA_CONTROL = "testing-data-control"
    LABEL_LIMIT = "label-limit"
    SOURCE_CODE_CONTROL = "source-code-control"
    QUERY_ACCESS = "query-access"


class Knowledge(StrEnum):
    WHITE_BOX = "white-box"
    GREY_BOX = "grey-box"
    BLACK_BOX = "black-box"


class Targeting(StrEnum):
    TARGETED = "targeted"
    UNTARGETED = "untargeted"
    BOTH = "both"


class Norm(StrEnum):
    L0 = "l0"
    L2 = "l2"
    LINF = "linf"
    UNBOUNDED = "unbounded"
    SEMANTIC = "semantic"


class Locality(StrEnum):
    GLOBAL = "global"
    PATCH = "patch"
    K_PIXELS = "k-pixels"
    TRIGGER = "trigger"
    SYNTHETIC = "synthetic"
    TRAINING_SET = "training-set"
    TILE_SUBSET = "tile-subset"  # a few of the tiles (instances) a slide-level model aggregates, each perturbed


class Confidence(StrEnum):
    VERIFIED = "verified"
    LIKELY = "likely"
    UNKNOWN = "unknown"


class PaperRole(StrEnum):
    """What a paper is to the catalog, beyond the attack relations computed from its fields."""

    SEED_SURVEY = "seed-survey"
    SURVEY = "survey"
    BACKGROUND = "background"
    MEDICAL_APPLICATION = "medical-application"
    BENIGN_GENERATIVE = "benign-generative"
    DEFENCE = "defence"
    DATASET = "dataset"
    ATTACK = "attack"
    BENCHMARK = "benchmark"  # a robustness benchmark, stress test or evaluation protocol for models or defences


class Column(StrEnum):
    """Table 1 columns."""

    GENERAL = "general"
    MEDICAL = "medical"


class Modality(StrEnum):
    HISTOPATHOLOGY = "histopathology"
    RADIOGRAPHY = "radiography"
    FUNDUS_PHOTOGRAPHY = "fundus-photography"
    DERMOSCOPY = "dermoscopy"
    CT = "computed-tomography"
    MRI = "magnetic-resonance"
    ELECTROCARDIOGRAPHY = "electrocardiography"
    ELECTROENCEPHALOGRAPHY = "electroencephalography"


class Granularity(StrEnum):
    TILE = "tile"
    SLIDE = "slide"
    IMAGE = "image"
    VOLUME = "volume"
    SIGNAL = "signal"


class AdaptiveEvaluation(StrEnum):
    """Has the defence been tested against an attacker who knows it?"""

    EVALUATED_HOLDS = "evaluated-holds"
    EVALUATED_BROKEN = "evaluated-broken"
    NOT_EVALUATED = "not-evaluated"


class Licence(StrEnum):
    CC_BY_4_0 = "CC-BY-4.0"
    CC0_1_0 = "CC0-1.0"


# --------------------------------------------------------------------------- attack


class Nist(Strict):
    lifecycle_stage: LifecycleStage
    objectives: list[Objective] = Field(min_length=1)
    capabilities: list[Capability] = Field(min_length=1)
    knowledge: list[Knowledge] = Field(min_length=1)


class AtlasTechnique(Strict):
    """A MITRE ATLAS technique or sub-technique; the loader checks id and name against the shipped snapshot."""

    id: AtlasTechniqueId
    name: Text


class AtlasMitigation(Strict):
    """A MITRE ATLAS mitigation; the loader checks id and name against the shipped snapshot."""

    id: AtlasMitigationId
    name: Text


class Perturbation(Strict):
    norm: Norm
    budget: Text | None = None
    locality: Locality
    pixels: int | None = Field(default=None, ge=1, le=1_000_000)
    physically_realisable: bool


class PaperFigure(Strict):
    """A headline number a paper reports, to set beside medfool's own measurements."""

    paper: Slug | BibKey
    figure: Text
    checked: bool  # True: checked against the paper's text; False: recalled, not yet checked


class Attack(Strict):
    id: Slug
    stable_id: AttackStableId
    name: Text
    aliases: list[Text] = []
    family: Family
    nist: Nist
    atlas: list[AtlasTechnique] = Field(min_length=1)
    targeted: Targeting
    perturbation: Perturbation
    summary: Prose
    implementation: Slug | None = None
    paper_figures: list[PaperFigure] = []
    notes: Text | None = None


# --------------------------------------------------------------------------- paper


class Demonstration(Strict):
    """A paper shows an attack working on a medical imaging domain."""

    attack: Slug
    domains: list[Slug] = Field(min_length=1)
    note: Text | None = None


class Table1Placement(Strict):
    """Where the survey's own Table 1 lists this paper (a fact about the survey)."""

    row: Family
    column: Column
    position: int = Field(ge=1, le=20)


class SurveyCitation(Strict):
    """How the seed survey cites the paper."""

    ref: int | None = Field(default=None, ge=1, le=37)
    context: Text
    table1: list[Table1Placement] = []
    note: Text | None = None


class Paper(Strict):
    id: Slug | BibKey
    bibkey: BibKey
    confidence: Confidence
    checked_in: list[Text] = Field(min_length=1)
    confidence_note: Text | None = None
    roles: list[PaperRole] = Field(min_length=1)
    summary: Prose
    proposes: list[Slug] = []
    analyses: list[Slug] = []
    demonstrates: list[Demonstration] = []
    domains: list[Slug] = []
    survey: SurveyCitation | None = None


# --------------------------------------------------------------------------- domain


class Domain(Strict):
    id: Slug
    name: Text
    modality: Modality
    granularity: list[Granularity] = Field(min_length=1)
    typical_tasks: list[Text] = Field(min_length=1)
    pipeline_stages: list[Text] = Field(min_length=1)
    summary: Prose
    order: int = Field(ge=1, le=1000)


# --------------------------------------------------------------------------- defence


class Defence(Strict):
    id: Slug
    stable_id: DefenceStableId
    name: Text
    aliases: list[Text] = []
    counters: list[Slug] = Field(min_length=1)
    atlas: list[AtlasMitigation] = Field(min_length=1)
    adaptive_evaluation: AdaptiveEvaluation
    adaptive_note: Text
    papers: list[Slug | BibKey] = []
    summary: Prose
    limitations: Text
    implementation: str | None = None  # a name in the defences registry (loader-checked); null: say why in notes
    notes: Text | None = None


# --------------------------------------------------------------------------- dataset


class DataFile(Strict):
    path: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_./\-]+$", max_length=200)]
    sha256: Sha256
    label: Text | None = None


class Dataset(Strict):
    id: Slug
    name: Text
    domain: Slug
    source: Text
    source_doi: Text | None = None
    licence: Licence
    attribution: Prose
    changes: Text | None = None
    papers: list[Slug | BibKey] = []
    location: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_./\-]+$", max_length=200)]
    classes: list[Text] = Field(min_length=1)
    files: list[DataFile] = Field(min_length=1)
    summary: Prose


# --------------------------------------------------------------------------- risk model


class Stage(Strict):
    id: Slug
    name: Text
    description: Text


class Motive(Strict):
    id: Slug
    name: Text
    description: Text
    papers: list[Slug | BibKey] = []


class Role(Strict):
    id: Slug
    name: Text
    description: Text
    stages: list[Slug] = Field(min_length=1)
    capabilities: list[Capability] = Field(min_length=1)
    motives: list[Slug] = Field(min_length=1)


class SeverityLevel(Strict):
    level: int = Field(ge=1, le=5)
    name: Text
    clinical_consequence: Text
    example: Text


class Scenario(Strict):
    id: Slug
    attack: Slug
    role: Slug
    motive: Slug
    entry_stage: Slug
    domain: Slug
    severity: int = Field(ge=1, le=5)
    narrative: Prose
    consequence: Text


class RiskModel(Strict):
    id: Slug
    name: Text
    summary: Prose
    papers: list[Slug | BibKey] = []
    stages: list[Stage] = Field(min_length=1)
    motives: list[Motive] = Field(min_length=1)
    roles: list[Role] = Field(min_length=1)
    severity_scale: list[SeverityLevel] = Field(min_length=5, max_length=5)
    scenarios: list[Scenario] = Field(min_length=1)


# --------------------------------------------------------------------------- catalog-wide


class CatalogMeta(Strict):
    """catalog/catalog.yaml: the catalog's own identity."""

    title: Text
    version: Version
    atlas_version: Version | None = None  # the MITRE ATLAS release the catalog's ATLAS ids were checked against
    retired_attack_ids: list[AttackStableId] = []
    retired_defence_ids: list[DefenceStableId] = []


KIND_MODELS: dict[str, type[Strict]] = {
    "attack": Attack,
    "paper": Paper,
    "domain": Domain,
    "defence": Defence,
    "dataset": Dataset,
    "risk-model": RiskModel,
}
