"""Shared by every test folder: this folder on ``sys.path`` for the helper modules whose names start with ``_``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
