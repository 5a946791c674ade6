"""`kernels/` ships as `robustft.kernels` — in editable and regular installs — and never as a
top-level `kernels` module (that name belongs to Hugging Face's kernel-hub package)."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMPORT = "import robustft, robustft.kernels, importlib.util; print(robustft.kernels.__name__, importlib.util.find_spec('kernels') is None)"


@pytest.mark.parametrize("cwd", [ROOT / "notebooks", Path("/")])
def test_imports_from_the_installed_environment(cwd):
    out = subprocess.run([sys.executable, "-c", IMPORT], cwd=cwd, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["robustft.kernels", "True"]


def test_repo_root_folder_does_not_pass_for_the_kernel_hub_package():
    # Run from the repo root, `kernels/` is on sys.path as a folder; transformers must still see
    # no kernel-hub package (it reads `kernels.__version__`, which our folder does not define).
    code = IMPORT + "; from transformers.utils.import_utils import is_kernels_available; print(is_kernels_available())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["robustft.kernels", "False", "False"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
                   check=True, capture_output=True)
    (whl,) = dist.glob("robustft-*.whl")
    return whl


def test_wheel_maps_kernels_under_robustft(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "robustft/kernels/__init__.py" in names
    assert "robustft/offline/__init__.py" in names
    # The shipped toy models travel as package data (load_toy_model checks them by hash).
    assert {"robustft/offline/toy-models/manifest.json", "robustft/offline/toy-models/seed-0/model.safetensors",
            "robustft/offline/toy-models/seed-0/tokenizer.json"} <= set(names)
    assert not any(n.startswith("kernels/") for n in names), [n for n in names if n.startswith("kernels/")]
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"robustft"}


def test_regular_install_imports(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    # Only the regular install on the path (-S drops the editable finder of site-packages),
    # plus the environment's dependencies.
    deps = [p for p in sys.path if p.endswith("site-packages")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *deps])}
    code = IMPORT + "; print(robustft.__file__)"
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    name, no_top_level, where = out.stdout.split()
    assert (name, no_top_level) == ("robustft.kernels", "True") and where.startswith(str(target))
