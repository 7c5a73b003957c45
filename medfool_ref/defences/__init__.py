"""medfool's reference defences: input restoration, randomisation and detection, as torch code.

``specs`` (torch-free) names every defence with its kind, parameters and the catalog entry it implements;
one small module per defence holds the transformation; :mod:`.system` wraps (model, defences) into the
defended system, with an adaptive mode (BPDA through non-differentiable steps, EOT over random ones).
Depends on torch, numpy and Pillow only (never on the catalog).
The hardening side (``registry_hardening``): adversarial training, randomised-smoothing certificates,
training-data sanitisation and model-integrity pins, and the stateful query-attack detector
(``querydetect``) that ``medfool serve --detector`` puts in front of a served model; STRIP (``strip``) flags
backdoor-triggered inputs at inference.
"""
