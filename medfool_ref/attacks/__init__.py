"""Reference attack implementations (torch only). See :mod:`medfool_ref.registry` for their names."""

from ._core import AttackResult, CountingModel
from .deepfool import deepfool
from .eot import eot, expected_success
from .fooling import FoolingResult, fooling_images
from .gradient import fgsm, pgd
from .onepixel import one_pixel
from .patch import adversarial_patch, apply_patch, place, placement_success, train_patch

__all__ = ["AttackResult", "CountingModel", "FoolingResult", "adversarial_patch", "apply_patch", "deepfool", "eot",
           "expected_success", "fgsm", "fooling_images", "one_pixel", "pgd", "place", "placement_success", "train_patch"]
