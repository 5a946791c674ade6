"""Copy pre-trained toy models into the package as the shipped benchmark models (maintainers).

    python -m robustft.offline.ship 0=/path/to/toy-<key> 1=... 2=...

Each argument is a seed and a folder written by `load_toy_model` (weights, tokenizer,
``toy_config.json``). The folder's config must be `ToyConfig.for_seed(seed)` on every field it
records (fields added to the config since it was written take their current defaults, which
reproduce the same text: see `world.DocumentRates`). The files go to
``robustft/offline/toy-models/seed-<seed>/``; ``toy_config.json`` is rewritten with the current
config, key and the pre-training's provenance, and ``toy-models/manifest.json`` lists every file's
sha256, which `load_toy_model` checks on every load.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from .toy_model import MANIFEST, WEIGHTS_DIR, ToyConfig, sha256
from ..files import write_json

FILES = ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
         "tokenizer_config.json", "special_tokens_map.json")


def _check(recorded: dict, current: dict, where: str) -> list[str]:
    """Fields of `current` that `recorded` lacks; raises on any recorded field that differs."""
    missing = []
    for k, v in current.items():
        if k not in recorded:
            missing.append(k)
        elif isinstance(v, dict) and isinstance(recorded[k], dict):
            missing += [f"{k}.{m}" for m in _check(recorded[k], v, f"{where}.{k}")]
        elif json.loads(json.dumps(v)) != recorded[k]:
            raise ValueError(f"{where}.{k}: recorded {recorded[k]!r}, the benchmark config has {v!r}")
    return missing


def ship(models: dict[int, Path], provenance: dict | None = None) -> dict:
    entries = []
    for seed, src in sorted(models.items()):
        cfg = ToyConfig.for_seed(seed)
        meta = json.loads((src / "toy_config.json").read_text())
        missing = _check(meta["config"], cfg.as_dict(), f"{src / 'toy_config.json'}: config")
        dst = WEIGHTS_DIR / f"seed-{seed}"
        dst.mkdir(parents=True, exist_ok=True)
        names = [n for n in FILES if (src / n).exists()]
        for name in names:
            shutil.copyfile(src / name, dst / name)
        meta = {"config": cfg.as_dict(), "key": cfg.key(), "pretrain_seconds": meta.get("pretrain_seconds"),
                "pretrained_with": provenance or {}, "config_fields_added_since": missing}
        write_json(dst / "toy_config.json", meta, indent=2)
        names.append("toy_config.json")
        entries.append({"folder": dst.name, "seed": seed, "key": cfg.key(),
                        "files": {n: sha256(dst / n) for n in names}})
        print(f"seed {seed}: {src} -> {dst} (key {cfg.key()}, model.safetensors "
              f"{entries[-1]['files']['model.safetensors']})")
    doc = {"about": "The toy models the book, the demo and the tests use; load_toy_model checks "
                    "every file against its sha256.", "models": entries}
    write_json(MANIFEST, doc, indent=2)
    return doc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="SEED=FOLDER")
    ap.add_argument("--torch-threads", type=int, default=None, help="recorded as provenance")
    args = ap.parse_args(argv)
    import platform

    import torch

    models = {int(s): Path(f) for s, f in (m.split("=", 1) for m in args.models)}
    ship(models, {"torch": torch.__version__, "threads": args.torch_threads,
                  "machine": platform.machine(), "python": platform.python_version()})


if __name__ == "__main__":
    main()
