"""Reference attack implementations (torch only). See :mod:`medfool_ref.registry` for their names."""

from ._core import AttackResult, CountingModel
from .deepfool import deepfool
from .gradient import fgsm, pgd

__all__ = ["AttackResult", "CountingModel", "deepfool", "fgsm", "pgd"]
