"""Provenance of a recorded defence run (``medfool harden``, ``medfool certify``): the code it depends on, hashed,
and the machine it ran on, down to the thread count (CPU reductions are split by thread, so the figures of a
trained model are reproducible bit for bit only with the same torch build, instruction set and thread count)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
from pathlib import Path
from typing import Any

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


def provenance(run: str, command: str, device: str) -> dict[str, Any]:
    import torch

    from .. import __version__

    return {"medfool": __version__, "code_sha256": code_sha256(run),
            "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(), "device": device,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": command}
