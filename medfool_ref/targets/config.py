"""A model's config (``--config model.yaml``): what medfool must know to attack a user's tile classifier.

Read with the catalog's safe, line-aware YAML reader (duplicate keys and tags refused) and
validated by pydantic; every problem is reported at once as ``path:line: field: message``. This
module runs on the driver: what workers receive is the validated :class:`ModelConfig` as data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..catalog.diagnostics import Diagnostic
from ..catalog.yamlread import YamlProblem, dotted, read_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class InputSpec(_Strict):
    """How a tile reaches the model: its size, the resize/crop policy and the normalisation outside the model."""

    size: int | None = Field(None, ge=8, le=4096, description="side in pixels the model takes; null: any size")
    resize: Literal["none", "resize", "center-crop", "resize-then-crop"] = "none"
    mean: list[float] | None = Field(None, min_length=3, max_length=3, description="RGB mean on [0, 1]; null: inside the model")
    std: list[float] | None = Field(None, min_length=3, max_length=3)
    mpp: float | None = Field(None, gt=0, le=100, description="microns per pixel of the tiles the model expects")

    @field_validator("std")
    @classmethod
    def _positive(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(s <= 0 for s in v):
            raise ValueError("every std must be > 0")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither (normalisation inside the model)")
        if self.resize != "none" and self.size is None:
            raise ValueError(f"resize {self.resize!r} needs input.size")
        return self


class IntegritySpec(_Strict):
    """Pins checked before any command runs the model (AML.M0008-style validation of the model's files)."""

    weights_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the --weights file's bytes")
    factory_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the --model file.py's bytes")


class ModelConfig(_Strict):
    name: str = Field(min_length=1)
    classes: list[str] = Field(min_length=2, description="class names in logit order")
    positive: list[str] = Field(min_length=1, description="the classes that make the positive (tumour) decision")
    threshold: float | None = Field(None, gt=0, lt=1, description="positive when P(positive classes) >= threshold; null: argmax")
    input: InputSpec = Field(default_factory=InputSpec)
    output: Literal["logits", "probabilities"] = "logits"
    integrity: IntegritySpec | None = Field(None, description="sha256 pins of the weights and factory files; a mismatch is refused")

    @field_validator("classes")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dupes = sorted({c for c in v if v.count(c) > 1})
        if dupes:
            raise ValueError(f"classes are listed twice: {', '.join(dupes)}")
        return v



def _cross(data: dict) -> list[tuple[tuple[str, ...], str]]:
    """Checks between fields, run on the raw data so they are reported beside the field errors."""
    classes, positive = data.get("classes"), data.get("positive")
    if not (isinstance(classes, list) and isinstance(positive, list)):
        return []
    out = []
    unknown = [str(p) for p in positive if p not in classes]
    if unknown:
        out.append((("positive",), f"{', '.join(map(repr, unknown))} not in classes ({', '.join(map(str, classes))})"))
    elif positive and set(positive) >= set(classes):
        out.append((("positive",), "at least one class must be negative (not in positive)"))
    return out


class ConfigError(ValueError):
    """A config that does not validate; carries every problem found."""

    def __init__(self, problems: list[Diagnostic]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def load_config(path: str | Path) -> ModelConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([Diagnostic(str(path), None, "", "no such file")])
    try:
        doc = read_yaml(path.read_bytes())
    except YamlProblem as exc:
        raise ConfigError([Diagnostic(str(path), exc.line, exc.field, exc.message)]) from None
    if not isinstance(doc.data, dict):
        raise ConfigError([Diagnostic(str(path), 1, "", "a model config is a mapping of fields")])
    problems = [Diagnostic(str(path), doc.line_of(loc), dotted(loc), msg) for loc, msg in _cross(doc.data)]
    try:
        config = ModelConfig.model_validate(doc.data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = tuple(p for p in err["loc"] if isinstance(p, (int, str)))
            message = "unknown field" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            problems.append(Diagnostic(str(path), doc.line_of(loc), dotted(loc), message))
    if problems:
        raise ConfigError(sorted(problems, key=lambda d: (d.line or 0, d.field)))
    return config


REFERENCE_CONFIG = Path(__file__).resolve().parents[1] / "data" / "reference-model" / "config.yaml"
