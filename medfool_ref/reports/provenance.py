"""Provenance of a recorded defence run (``medfool harden``, ``medfool certify``): the code it depends on, hashed,
and the machine it ran on, down to the thread count (CPU reductions are split by thread, so the figures of a
trained model are reproducible bit for bit only with the same torch build, instruction set and thread count)."""

from __future__ import annotations

import datetime as dt
import os
import platform
from typing import Any

from .recorded_code import CODE, code_sha256  # noqa: F401  (re-exported)


def provenance(run: str, command: str, device: str) -> dict[str, Any]:
    import torch

    from .. import __version__

    return {"medfool": __version__, "code_sha256": code_sha256(run),
            "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(), "device": device,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": command}
