"""The code each recorded defence run (``medfool harden``, ``medfool certify``) depends on, and its hash: a run
whose hash differs from today's is stale. Torch-free, so the site can tell (``provenance`` adds the machine)."""

from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
CODE = {
    "hardening": ("cli/harden.py", "cli/robust_common.py", "training/robust.py", "training/loop.py", "training/reference.py",
                  "campaign/hardening.py", "campaign/certify.py", "data/reference-model/tilenet.safetensors"),
    "certify": ("cli/certify.py", "cli/robust_common.py", "defences/smoothing.py", "campaign/certify.py", "training/loop.py",
                "training/reference.py", "data/reference-model/tilenet.safetensors"),
}


def code_sha256(run: str) -> str:
    """sha256 over the files the recorded ``run`` (a key of ``CODE``) depends on; a run whose hash differs is stale."""
    h = hashlib.sha256()
    for rel in sorted(CODE[run]):
        f = PACKAGE / rel
        h.update(rel.encode())
        h.update(f.read_bytes() if f.is_file() else b"")
    return h.hexdigest()
