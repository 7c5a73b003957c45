"""Registry of medfool's reference attack implementations.

The catalog names an implementation by a short name; only names listed here resolve, so a
catalog file can never make medfool import arbitrary code. Each value is the module (inside
``medfool_ref.attacks``) and function that implement it; the module is imported only when the
attack is run, so reading the catalog never needs torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable

# name -> (module under medfool_ref.attacks, function name)
IMPLEMENTATIONS: dict[str, tuple[str, str]] = {
    "fgsm": ("gradient", "fgsm"),
    "pgd": ("gradient", "pgd"),
    "deepfool": ("deepfool", "deepfool"),
    "eot": ("eot", "eot"),
    "patch": ("patch", "adversarial_patch"),
    "one-pixel": ("onepixel", "one_pixel"),
    "fooling-images": ("fooling", "fooling_images"),
    "badnets": ("backdoor", "badnets"),
    "generative-poisoning": ("poisoning", "generative_poisoning"),
    "direct-gradient-poisoning": ("poisoning", "direct_gradient_poison"),
}


def resolve(name: str) -> Callable[..., Any]:
    """Return the attack function registered under ``name``."""
    try:
        module, func = IMPLEMENTATIONS[name]
    except KeyError:
        known = ", ".join(sorted(IMPLEMENTATIONS)) or "none yet"
        raise KeyError(f"no reference implementation named {name!r} (known: {known})") from None
    return getattr(import_module(f"medfool_ref.attacks.{module}"), func)
