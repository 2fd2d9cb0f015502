"""Shared test setup: the project root on ``sys.path``, whatever directory pytest starts in."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def project_root() -> Path:
    """The repository root (where _toc.yml and ddm/ live)."""
    return ROOT
