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


def _triton_runs_in_this_process() -> bool:
    import importlib.util
    import os

    if importlib.util.find_spec("triton") is None:
        return False
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return True
    import torch

    return torch.cuda.is_available()


def pytest_configure(config):
    config.addinivalue_line("markers", "triton_kernel: runs a Triton kernel (needs CUDA or TRITON_INTERPRET=1)")


def pytest_collection_modifyitems(config, items):
    # On a CPU machine the Triton cases cannot run in this process (the interpreter must be
    # switched on before triton is imported); test_kernels.py re-runs them all in a
    # subprocess under TRITON_INTERPRET=1, so here they are deselected, not skipped.
    if _triton_runs_in_this_process():
        return
    keep = [i for i in items if i.get_closest_marker("triton_kernel") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.get_closest_marker("triton_kernel")])
        items[:] = keep
