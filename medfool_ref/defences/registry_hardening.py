"""The defences that change the model or its data, certify it, or watch its traffic, as a plain data table.

Each row: name, kind, the catalog defence entry it implements (None: no entry yet), where the code is, its
parameters with defaults, and the paper. Torch-free.
"""

from __future__ import annotations

HARDENING_DEFENCES: tuple[dict[str, object], ...] = (
    {"name": "pgd-adversarial-training", "kind": "hardening", "catalog": "adversarial-training",
     "code": "medfool_ref.training.robust:pgd_at_loss (medfool harden --method pgd-at)",
     "params": {"eps": 4 / 255, "steps": 3, "finetune_steps": 100}, "citation": "Madry et al., ICLR 2018"},
    {"name": "trades", "kind": "hardening", "catalog": "adversarial-training",
     "code": "medfool_ref.training.robust:trades_loss (medfool harden --method trades)",
     "params": {"eps": 4 / 255, "steps": 3, "beta": 6.0, "finetune_steps": 100}, "citation": "Zhang et al., ICML 2019"},
    {"name": "adversarial-stain-augmentation", "kind": "hardening", "catalog": "calibrated-adversarial-stain-augmentation",
     "code": "medfool_ref.training.robust:stain_loss (medfool harden --method stain)",
     "params": {"stain": 0.3, "steps": 3, "finetune_steps": 100},
     "citation": "in the spirit of hong2026physics (the box is fixed, not calibrated from several hospitals)"},
    {"name": "randomized-smoothing", "kind": "certification", "catalog": None,
     "code": "medfool_ref.defences.smoothing:certify (medfool certify)",
     "params": {"sigma": 0.25, "n0": 32, "n": 256, "alpha": 0.001, "finetune_steps": 100},
     "citation": "Cohen, Rosenfeld & Kolter, ICML 2019"},
    {"name": "weight-pin", "kind": "integrity", "catalog": "model-supply-chain-integrity",
     "code": "medfool_ref.targets.integrity:verify_pins (integrity: in the model config)",
     "params": {"weights_sha256": None, "factory_sha256": None}, "citation": "MITRE ATLAS AML.M0008 Validate AI Model"},
    {"name": "loss-threshold-filter", "kind": "data-sanitisation", "catalog": "training-loss-filter",
     "code": "medfool_ref.attacks.poisoning:loss_threshold (medfool poison generative)",
     "params": {"quantile": 0.95}, "citation": "the countermeasure evaluated by Yang et al. 2017"},
    {"name": "spectral-signatures", "kind": "data-sanitisation", "catalog": None,
     "code": "medfool_ref.defences.sanitise:spectral_signatures", "params": {"expected_fraction": 0.1, "multiplier": 1.5},
     "citation": "Tran, Li & Madry, NeurIPS 2018"},
    {"name": "activation-clustering", "kind": "data-sanitisation", "catalog": None,
     "code": "medfool_ref.defences.sanitise:activation_clustering", "params": {"dims": 10, "max_share": 0.35},
     "citation": "Chen et al., SafeAI@AAAI 2019"},
    {"name": "stateful-query-detector", "kind": "detection", "catalog": "stateful-query-detection",
     "code": "medfool_ref.defences.querydetect:QueryDetector (medfool serve --detector)",
     "params": {"fpr": 0.05, "k": 5, "size": 16, "levels": 32, "capacity": 1000},
     "citation": "Chen, Carlini & Wagner, SPAI 2020; Li et al. (Blacklight), USENIX Security 2022"},
    {"name": "strip", "kind": "detection", "catalog": None,
     "code": "medfool_ref.defences.strip:StripDetector.calibrated (trojaned inputs flagged at inference)",
     "params": {"fpr": 0.05, "blend": 0.3, "overlays": 9}, "citation": "Gao et al., ACSAC 2019"},
)
NAMES = tuple(str(row["name"]) for row in HARDENING_DEFENCES)
