"""Fixtures for the importer tests: where the real Autzen data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# the Autzen survey ships with the project (data/00_external/autzen, BSD licence)
REAL_DATA = Path(os.environ.get("EARTHCRAFTER_REAL_DATA", REPO / "data" / "00_external" / "autzen"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not (REAL_DATA / "autzen_trim.las").is_file():
        pytest.skip(f"real test data not found under {REAL_DATA} (set EARTHCRAFTER_REAL_DATA)")
    return REAL_DATA
