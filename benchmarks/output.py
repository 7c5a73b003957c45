"""What every benchmark writes: the machine it ran on, in one line, and the result file (JSON, with Markdown beside it)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch


def machine_line(device: torch.device) -> str:
    line = (f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    return line + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")


def write_result(out: str | Path, result: dict[str, Any], markdown: str | None = None) -> Path:
    """``result`` as indented JSON at ``out`` (and ``markdown`` beside it as .md); printed too."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if markdown is not None:
        out.with_suffix(".md").write_text(markdown, encoding="utf-8")
    print(markdown if markdown is not None else json.dumps(result, indent=2))
    return out
