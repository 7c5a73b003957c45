"""The device the tests on real tiles run on: the CPU unless ``MEDFOOL_TEST_DEVICE`` names another.

CI has no GPU; on a GPU machine ``MEDFOOL_TEST_DEVICE=cuda python -m pytest tests/test_attacks*.py``
runs the reference attacks there.
"""

from __future__ import annotations

import os

import torch

DEVICE = torch.device(os.environ.get("MEDFOOL_TEST_DEVICE", "cpu"))
