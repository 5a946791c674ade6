"""Shared test fixtures."""
from pathlib import Path

import pytest

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "robustft-official"


@pytest.fixture
def official():
    """The paper's own data files (../shared/robustft-official), never committed here."""
    if not OFFICIAL.is_dir():
        pytest.skip(f"the official RobustFT data is not at {OFFICIAL} (it lives beside the repo, in shared/)")
    return OFFICIAL
