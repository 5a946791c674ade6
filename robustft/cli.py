"""The `robustft` command: denoise, fine-tune, evaluate, and the offline demo.

    robustft denoise  --data noisy/noisy30.csv --model toy --out runs/arc30
    robustft denoise  --data noisy/noisy30.csv --server http://127.0.0.1:8000/v1 --model NAME --out runs/arc30
    robustft finetune --data runs/arc30/denoise30.csv --model toy --out runs/arc30-lora
    robustft evaluate --data test.csv --model toy --adapter runs/arc30-lora
    robustft demo     --out results/demo --seeds 0 1 2
    robustft compare  --out results/compare --seeds 0 1 2
    torchrun --nproc_per_node 2 -m robustft.cli denoise ...   # or --shard 0/2, --shard 1/2
    robustft merge    runs/arc30                             # fold the shards' stores into one

`--model` takes a Hugging Face id, a local folder, or `toy` / `toy:N` (the offline model of
seed N); with `--server` (an OpenAI-compatible server: vLLM, SGLang) it is the served model's
name, and the key comes from OPENAI_API_KEY. `--data` takes a file (official CSV, JSON, JSONL, Alpaca) or an official dataset
folder (with `--noise`). Bad input prints the data layer's message (file, row, field) and
exits with status 2, without a traceback. Nothing the user gave is overwritten: an existing
`--out` folder that is not a robustft run folder needs `--force`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path

EXIT_USAGE = 2
EXIT_STRICT = 3
EXIT_PENDING = 4  # a shard stored its share of a pass, which still needs the other shards' batches
RUN_MARKER = "run.json"
ATOMIC_TMP = re.compile(r".+\.\d+\.tmp")  # robustft.files.atomic_open's file being written (e.g. by another shard)
TOY_SPEC = re.compile(r"toy(?::(\d+))?")  # --model toy / toy:SEED


class UsageError(Exception):
    """A problem with what the user asked for: reported in one line, exit status 2."""


class StrictError(Exception):
    """A run that reported warnings under ``--strict``: one line, exit status 3."""


# ------------------------------------------------------------------------------ helpers
def _check_model(spec: str) -> None:
    """Cheap checks of --model before any work: a typo'd toy seed, or a local .gguf file or
    folder that is not there (anything else may be a Hugging Face id, which only loading can
    tell)."""
    if spec.startswith("toy") and not TOY_SPEC.fullmatch(spec):
        raise UsageError(f"--model {spec}: the offline model is 'toy' or 'toy:SEED' (a seed >= 0)")
    if spec.lower().endswith(".gguf"):
        if not Path(spec).expanduser().is_file():
            raise UsageError(f"--model {spec}: no such GGUF file")
    elif spec.startswith((".", "/", "~")) and not Path(spec).expanduser().is_dir():
        raise UsageError(f"--model {spec}: no such model folder")


def _load_lm(spec: str, quantize: str | None = None, adapter: str | None = None):
    import robustft

    _check_model(spec)
    m = TOY_SPEC.fullmatch(spec)
    if m:
        from robustft.offline import ToyConfig

        if quantize:
            print(f"--quantize {quantize} ignored: the toy model runs in full precision", file=sys.stderr)
        config = ToyConfig.for_seed(int(m.group(1) or 0))
        return robustft.load_model("toy", config=config, adapter=adapter)
    try:
        return robustft.load_model(spec, quantize=quantize, adapter=adapter)
    except (OSError, ValueError, ImportError, RuntimeError) as e:
        # One line, not 80: transformers' OSError for an unknown id / no network / no weights,
        # a GGUF file that does not convert (robustft.gguf raises its reader's errors as
        # ValueError), a missing package (the message names the pip command), no CUDA.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, OSError):
            raise UsageError(f"--model {spec}: cannot load it as a local folder or a Hugging Face id "
                             f"({first})") from None
        raise UsageError(f"--model {spec}: {first.removeprefix(f'{spec}: ')}") from None


def _connect(url: str, model: str, tokenizer: str | None, max_in_flight: int, quantize: str | None):
    """The `ServerBackend` of --server/--model (the key from OPENAI_API_KEY): one line and
    exit status 2 when the server cannot be reached, does not serve the model, or the
    openai client is missing."""
    from robustft.backends.server import ServerBackend, ServerError

    if quantize:
        raise UsageError("--quantize goes with an in-process model; a server quantizes on its own side")
    if max_in_flight < 1:
        raise UsageError(f"--max-in-flight {max_in_flight}: give a number >= 1")
    if tokenizer and tokenizer.startswith((".", "/", "~")) and not Path(tokenizer).expanduser().is_dir():
        raise UsageError(f"--tokenizer {tokenizer}: no such folder")
    try:
        return ServerBackend(url, model, tokenizer=tokenizer, max_in_flight=max_in_flight)
    except ServerError as e:
        raise UsageError(f"--server {url}: {e}") from None
    except (OSError, ValueError, ImportError) as e:
        raise UsageError(f"--server {url} --model {model}: {_first(e)}") from None


def _check_needs(lm, samples, config) -> None:
    """Stop before any work when the server lacks what this run's chain needs."""
    from robustft.backends import CapabilityError, require
    from robustft.denoise import denoise_needs

    try:
        require(lm, *denoise_needs(samples, config), stage="robustft denoise")
    except CapabilityError as e:
        raise UsageError(str(e)) from None


def _first(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _check_embedder(name: str, device=None) -> None:
    """Load a custom sentence-transformers embedder now, so a typo fails before the expert passes.
    Loaded for the model's device, it is the very (cached) instance the relabel stage then uses."""
    from robustft.relabel import resolve_embedder

    resolved = resolve_embedder(name)
    if resolved in ("llm", "tfidf", "minilm"):
        return
    if resolved.startswith((".", "/", "~")) and not Path(resolved).expanduser().is_dir():
        raise UsageError(f"--embedder {name}: no such model folder")
    from robustft.relabel import _sentence_embeddings

    try:
        _sentence_embeddings(resolved, ["probe"], 1, device)
    except (OSError, ValueError, ImportError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"--embedder {name}: cannot load it as a sentence-transformers model ({first})") from None


def _positive(**values) -> None:
    """UsageError naming the flag of the first value that is not a finite number > 0."""
    for flag, v in values.items():
        if v is None or not math.isfinite(v) or v <= 0:
            raise UsageError(f"--{flag.replace('_', '-')} {v}: give a finite number > 0")


def _load_data(path: str, noise: int | None, split: str = "train"):
    """Samples of a file or an official folder. A file `…/noisy/noisyNN.csv` inside an
    official folder gets the clean labels of its `labeled.csv` attached (for the report)."""
    import robustft

    p = Path(path)
    if p.is_dir() and split == "test":
        # Evaluation needs only the folder's test.csv, not its noisy training files.
        if not (p / "test.csv").exists():
            raise UsageError(f"{p}: no test.csv in this folder")
        return robustft.load_samples(p / "test.csv"), None
    if p.is_dir():
        data = robustft.load_official(p, noise=noise if noise is not None else 30)
        return (data.test if split == "test" else data.train), data.noise
    if not p.exists():
        raise UsageError(f"{p}: no such file or folder")
    m = re.fullmatch(r"noisy(\d+)\.csv", p.name)
    if m and noise is not None and noise != int(m.group(1)):
        raise UsageError(f"--noise {noise} contradicts the file name {p.name}; leave --noise out for a file")
    if m and p.parent.name == "noisy" and (p.parent.parent / "labeled.csv").exists():
        return robustft.load_official(p.parent.parent, noise=int(m.group(1))).train, int(m.group(1))
    return robustft.load_samples(p), (int(m.group(1)) if m else noise)


def _check_out(out: Path, force: bool, command: str, can_force: bool = True) -> None:
    """Raise unless `out` may become this command's folder: new or empty, a folder this same
    command wrote before (it resumes there), or anything with --force. Nothing is created."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder")
    if not out.exists() or force or all(ATOMIC_TMP.fullmatch(p.name) for p in out.iterdir()):
        return
    how = "choose another folder or pass --force" if can_force else "choose another folder"
    marker = out / RUN_MARKER
    if not marker.exists():
        raise UsageError(f"--out {out} already holds files that robustft did not write; {how}")
    try:
        owner = json.loads(marker.read_text())["robustft"]["command"]
    except (ValueError, KeyError, TypeError):
        owner = None
    if owner != command:
        raise UsageError(f"--out {out} is the folder of a `robustft {owner}` run; {how}")


def _claim_out(out: Path, force: bool, what: dict, can_force: bool = True) -> None:
    """Make `out` ours (see `_check_out`) and mark it as a robustft run folder."""
    from robustft.files import write_json

    _check_out(out, force, what["command"], can_force)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RUN_MARKER, {"robustft": what}, indent=2)


def _check_output_file(path: Path, force: bool, inputs=()) -> None:
    """An output file must not be an input, a folder, or (without --force) an existing file."""
    if any(path.resolve() == Path(i).resolve() for i in inputs if i):
        raise UsageError(f"{path} is an input of this command; give another output file")
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give a file name")
    if path.exists() and not force:
        raise UsageError(f"{path} exists; choose another file or pass --force to replace it")
    if not path.parent.exists():
        raise UsageError(f"{path.parent}: no such folder")


@contextlib.contextmanager
def _naming(data):
    """A ValueError of the model stage (e.g. an over-long sample, named by its id) also names
    the --data file it came from."""
    try:
        yield
    except ValueError as e:
        raise UsageError(f"{data}: {e}") from None


def _no_samples(samples, data) -> None:
    if not samples:
        raise UsageError(f"{data}: no samples")


def _print_report(report: dict) -> None:
    print("detection report (against the true labels):")
    for k in ("precision", "recall", "f1", "relabel_accuracy", "selection_accuracy", "label_accuracy"):
        print(f"  {k:20s} {report[k]:.3f}")
    print(f"  {report['n']} samples, {report['noisy']} truly noisy, {report['flagged']} flagged, "
          f"{report['selected']} relabels selected, {report['kept']} kept for training")


def _shard(args):
    """The shard this process runs (`robustft.shards`): --shard I/N, or the launcher's
    (torchrun, accelerate launch); None for a run in one process."""
    from robustft.shards import Shard

    try:
        launched = Shard.from_env()
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.shard is None:
        if args.wait:
            raise UsageError("--wait goes with --shard I/N (under a launcher the shards always wait)")
        return launched
    try:
        shard = Shard.parse(args.shard, wait=args.wait)
    except ValueError as e:  # its message starts "shard I/N: ..."
        raise UsageError(f"--{e}") from None
    if launched is not None and (launched.rank, launched.world) != (shard.rank, shard.world):
        raise UsageError(f"--shard {args.shard} under a launcher that makes this process shard {launched}; "
                         "leave --shard out under torchrun / accelerate launch")
    return shard if shard.world > 1 else None


# ------------------------------------------------------------------------------ commands
def cmd_denoise(args) -> None:
    from robustft.data import to_alpaca, to_messages, to_official_csv
    from robustft.denoise import DenoiseConfig, denoise
    from robustft.diagnose import DegenerateRunWarning
    from robustft.files import write_json, write_jsonl

    config = DenoiseConfig.from_args(args)
    shard = _shard(args)
    if shard is not None and args.force:
        raise UsageError(f"--force with shard {shard}: the shards would remove each other's stored batches; "
                         "run with --force in one process, or use a new --out folder")
    samples, noise = _load_data(args.data, args.noise)
    _no_samples(samples, args.data)
    out = Path(args.out)
    name = f"denoise{noise}" if noise is not None else "denoised"
    outputs = [out / f"{name}.csv", out / f"{name}.alpaca.json", out / f"{name}.messages.jsonl"]
    if any(o.resolve() == Path(args.data).resolve() for o in outputs):
        raise UsageError(f"--out {out} would overwrite the input {args.data}")
    _check_out(out, args.force, "denoise")
    if shard is not None and "LOCAL_RANK" in os.environ:
        import torch

        if torch.cuda.is_available():  # one GPU per process of the launcher: "cuda" is this one
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    if args.server:
        lm = _connect(args.server, args.model, args.tokenizer, args.max_in_flight, args.quantize)
        _check_needs(lm, samples, config)
    else:
        if args.tokenizer:
            raise UsageError("--tokenizer goes with --server (an in-process model brings its own)")
        lm = _load_lm(args.model, args.quantize)
    _check_embedder(config.embedder, getattr(lm, "device", None))
    _claim_out(out, args.force, {"command": "denoise", "data": str(args.data), "model": args.model,
                                 **({"server": args.server} if args.server else {})})
    print(f"denoising {len(samples)} samples of {args.data} with {args.model}"
          f"{' at ' + args.server if args.server else ''} "
          f"(k={config.k}, beta={config.beta}, checker={config.checker}) -> {out}"
          + (f" as shard {shard}" if shard else ""), file=sys.stderr)
    start = time.time()
    sent = dict(getattr(lm, "stats", None) or {})  # a server's requests so far (its probe)
    with _naming(args.data), warnings.catch_warnings():
        # Printed below as the command's own lines, not as Python warnings with a source line.
        warnings.simplefilter("ignore", DegenerateRunWarning)
        result = denoise(samples, lm, config, out=out, force=args.force, progress=not args.no_progress, shard=shard)
    seconds = time.time() - start
    if shard is not None and shard.rank != 0:
        # Every shard has every row now; one writes the outputs (the same as any other would).
        print(f"shard {shard}: every expert pass is complete ({result.stats['computed_batches']} batches computed "
              f"here); shard 0/{shard.world} writes the outputs to {out}")
        return
    by = args.answer_by or "letter"
    to_official_csv(result.samples, outputs[0])
    to_alpaca(result.samples, outputs[1], by=by)
    to_messages(result.samples, outputs[2], by=by)
    write_jsonl(out / "provenance.jsonl", result.provenance)
    found = result.stats.get("warnings", [])
    summary = {"samples": len(samples), "kept": len(result.samples), "seconds": round(seconds, 1),
               "expert_seconds": result.stats.get("seconds"), "parse_rate": result.stats.get("parse_rate"),
               "answer_step": result.stats.get("answer_step"), "warnings": found, "report": result.report}
    if args.server:  # how the server was used: requests sent and the seconds waited for them
        summary["server"] = {"url": args.server, "model": args.model, "scoring": lm.scoring,
                             "requests": lm.stats["requests"] - sent["requests"],
                             "request_seconds": round(lm.stats["seconds"] - sent["seconds"], 2)}
    write_json(out / "summary.json", summary)
    for w in found:
        print(f"robustft denoise: warning: {w['message']}", file=sys.stderr)
    skipped = sum(p["stage"] == "skipped" for p in result.provenance)
    print(f"kept {len(result.samples)} of {len(samples)} samples in {seconds:.1f} s"
          + (f" ({skipped} too long for the model, skipped)" if skipped else ""))
    flagged = sum(bool(p.get("noisy")) for p in result.provenance)
    for name_, secs in (result.stats.get("seconds") or {}).items():
        n = flagged if name_ in ("context", "review") else len(samples)
        speed = f"{n / secs:.1f} samples/s" if secs > 0 else "read back from the run folder"
        print(f"  {name_:9s} expert: {secs:6.1f} s ({speed})")
    if result.report:
        _print_report(result.report)
    print("wrote " + ", ".join(str(o) for o in outputs) + f", {out / 'provenance.jsonl'}")
    from robustft.shards import shard_files

    if shard_files(out):
        print(f"the expert batches are in {len(shard_files(out))} shard files; `robustft merge {out}` folds them "
              "into experts.jsonl once no shard runs (optional: every run reads them)", file=sys.stderr)
    if found and args.strict:
        raise StrictError(f"--strict: the run reported {len(found)} warning{'s' * (len(found) > 1)} "
                          f"({', '.join(dict.fromkeys(w['check'] for w in found))}); its outputs are in {out}")


def cmd_finetune(args) -> None:
    import robustft

    _positive(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, lora_r=args.lora_r,
              lora_alpha=args.lora_alpha)
    if args.epochs > 1000:
        raise UsageError(f"--epochs {args.epochs}: give at most 1000")
    samples, _ = _load_data(args.data, args.noise)
    _no_samples(samples, args.data)
    out = Path(args.out)
    if out.resolve() == Path(args.data).resolve():
        raise UsageError(f"--out {out} is the input file; give a folder for the adapter")
    # Under torchrun / accelerate launch every process runs this command; the first one
    # (RANK 0) owns the output folder and saves the adapter there.
    first = int(os.environ.get("RANK", "0")) == 0
    if first:
        _check_out(out, args.force, "finetune")
    lm = _load_lm(args.model, args.quantize)
    if first:
        _claim_out(out, args.force, {"command": "finetune", "data": str(args.data), "model": args.model})
    kw = dict(epochs=args.epochs, lr=args.lr, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
              batch_size=args.batch_size, seed=args.seed)
    if args.model.startswith("toy") and args.toy_settings:
        from robustft.offline import TOY_SFT as SFT

        kw = dict(SFT, seed=args.seed)
    with _naming(args.data):
        tuned = robustft.finetune(lm, samples, output_dir=out, progress=not args.no_progress, **kw)
    losses = tuned.info["train_loss"]
    if first:
        print(f"fine-tuned on {len(samples)} samples: loss {losses[0]:.3f} -> {losses[-1]:.3f}; "
              f"adapter in {out}")


def cmd_evaluate(args) -> None:
    import robustft

    samples, _ = _load_data(args.data, args.noise, split="test")
    _no_samples(samples, args.data)
    if args.json:
        _check_output_file(Path(args.json), args.force, inputs=(args.data, args.adapter))
    if args.adapter:
        # A local folder must hold an adapter; anything of the form owner/name may be a Hub id.
        adapter = Path(args.adapter)
        if adapter.exists() and not (adapter / "adapter_config.json").exists():
            raise UsageError(f"--adapter {args.adapter}: not a LoRA adapter folder (no adapter_config.json)")
        if not adapter.exists() and not re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", args.adapter):
            raise UsageError(f"--adapter {args.adapter}: no such folder")
    lm = _load_lm(args.model, args.quantize, adapter=args.adapter)
    with _naming(args.data):
        result = robustft.evaluate(lm, samples, progress=not args.no_progress)
    print(f"accuracy {result.accuracy:.4f} on {len(samples)} samples")
    for cat, acc in result.by_category.items():
        print(f"  {cat:24s} {acc:.4f}  ({result.counts[cat]})")
    if args.json:
        from robustft.files import write_json

        write_json(args.json, {"accuracy": result.accuracy, "by_category": result.by_category,
                               "counts": result.counts}, indent=2)


def cmd_merge(args) -> None:
    from robustft.shards import STORE_FILE, merge_shards, shard_files

    folder = Path(args.folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder")
    if not shard_files(folder):
        if not (folder / STORE_FILE).exists():
            raise UsageError(f"{folder}: no expert store here ({STORE_FILE} or experts.rank-I-of-N.jsonl); "
                             "give the --out folder of a `robustft denoise` run")
        print(f"{folder}: no shard files; nothing to merge")
        return
    counts = merge_shards(folder)
    print(f"merged {counts['merged']} batches of {counts['files']} shard files into {folder / STORE_FILE} "
          f"({counts['duplicates']} already stored); it holds {counts['batches']} batches")


def cmd_demo(args) -> None:
    from robustft import demo

    demo.check_arguments(args)
    _claim_out(Path(args.out), False, {"command": "demo"}, can_force=False)
    demo.main_args(args)


def cmd_bench(args) -> None:
    from robustft import bench
    from robustft.diagnose import DegenerateRunWarning

    bench.check_arguments(args)
    _check_out(Path(args.out), False, "bench", can_force=False)
    if args.report:  # reads the rows and rewrites only the bench's own two tables
        bench.report(args.out)
        return
    lm = _load_lm(args.model, args.quantize)
    _claim_out(Path(args.out), False, {"command": "bench", "model": args.model}, can_force=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateRunWarning)  # each row's log lists its warnings
        bench.main_args(args, lm)


def cmd_compare(args) -> None:
    from robustft import compare

    compare.check_arguments(args)
    _claim_out(Path(args.out), False, {"command": "compare"}, can_force=False)
    compare.main_args(args)


# ------------------------------------------------------------------------------ parser
def _common(p, model=True):
    if model:
        p.add_argument("--model", required=True, help="Hugging Face id, local folder, or toy / toy:SEED (with "
                                                      "--server: the served model's name)")
        p.add_argument("--quantize", choices=["4bit", "8bit"], default=None, help="bitsandbytes quantisation (CUDA)")
    p.add_argument("--noise", type=int, default=None, help="noise rate of an official folder's noisy file (30/50/70)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    from robustft.denoise import DenoiseConfig
    from robustft.finetune import SFT

    parser = argparse.ArgumentParser(prog="robustft", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("denoise", help="detect, relabel and select: write the denoised training set",
                       description="Run RobustFT's denoising chain and write the denoised set (official "
                                   "denoiseNN.csv, Alpaca JSON, chat JSONL) and per-sample provenance. "
                                   "Expert passes are stored per batch in --out: a re-run resumes.")
    p.add_argument("--data", required=True, help="noisy training data: a file or an official folder")
    p.add_argument("--out", required=True, help="run folder (resumed when it is one)")
    _common(p)
    DenoiseConfig.add_arguments(p)
    p.add_argument("--answer-by", choices=["letter", "text"], default=None,
                   help="answer form in the Alpaca/chat exports (default letter)")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 3 when the run reports a warning (a degenerate run: unreadable "
                        "answers, experts no better than the label prior, too few clean samples, collapsed "
                        "relabels); the outputs are written all the same")
    p.add_argument("--force", action="store_true", help="recompute every expert batch; allow a foreign --out")
    p.add_argument("--server", default=None, metavar="URL",
                   help="an OpenAI-compatible server's API root (vLLM, SGLang: http://HOST:8000/v1); --model is then "
                        "the served model's name, and the key comes from OPENAI_API_KEY")
    p.add_argument("--tokenizer", default=None,
                   help="with --server: a local tokenizer folder or Hub id for the chat template and token counts "
                        "(default: none, the prompt is sent as it is and the server counts tokens)")
    p.add_argument("--max-in-flight", type=int, default=8, help="with --server: most requests at a time (default: 8)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="compute only shard I of N of every expert pass (0 <= I < N), storing it in "
                        "--out/experts.rank-I-of-N.jsonl; run every shard on the same --out. Without --wait a "
                        "shard exits with status 4 at the first pass the others have not finished: run the "
                        "shards again (each run gets one pass further), or once without --shard. Under "
                        "torchrun / accelerate launch the shard comes from RANK and WORLD_SIZE. Shard 0 writes "
                        "the outputs; they equal a run in one process")
    p.add_argument("--wait", action="store_true",
                   help="with --shard: wait for the other shards at the end of each pass (run them together)")
    p.set_defaults(func=cmd_denoise)

    p = sub.add_parser("merge", help="fold a sharded run's expert stores into its experts.jsonl",
                       description="Fold the shard files of a run folder (experts.rank-I-of-N.jsonl, written by "
                                   "`robustft denoise --shard` or under torchrun) into its experts.jsonl, each "
                                   "batch once, and remove them. Optional: every run reads the shard files. Run "
                                   "it when no shard of the folder is running.")
    p.add_argument("folder", help="the --out folder of a sharded `robustft denoise` run")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("finetune", help="LoRA fine-tune on a data file; saves the adapter",
                       description="LoRA SFT (QLoRA with --quantize 4bit) on the given labels.")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="adapter folder")
    _common(p)
    p.add_argument("--epochs", type=float, default=SFT["epochs"], help="passes over the data (default: %(default)s)")
    p.add_argument("--lr", type=float, default=SFT["lr"], help="learning rate (default: %(default)s)")
    p.add_argument("--lora-r", type=int, default=SFT["lora_r"], help="LoRA rank (default: %(default)s)")
    p.add_argument("--lora-alpha", type=int, default=SFT["lora_alpha"], help="LoRA alpha (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=SFT["batch_size"],
                   help="examples per optimizer step (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--toy-settings", action="store_true", help="with a toy model: the benchmark's SFT settings")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="accuracy on a test file", description="Accuracy overall and per category.")
    p.add_argument("--data", required=True, help="test file, or an official folder (its test.csv)")
    _common(p)
    p.add_argument("--adapter", default=None, help="a LoRA adapter folder from `robustft finetune`")
    p.add_argument("--json", default=None, help="also write the result to this (new) file")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="the offline benchmark: Vanilla, SFT and RobustFT at 30/50/70 %% noise",
                       description="Vanilla, SFT on the noisy labels and RobustFT on the offline benchmark; "
                                   "writes results.json, results.csv and results.png. Resumes from --out.")
    from robustft.demo import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="RobustFT on a real model and the paper's data: does it do harm?",
                       description="Vanilla, SFT, RobustFT (our defaults and the paper's choices) and the "
                                   "noise-aware variant on the official ARC, FPB and PubMedQA files at 30/50/70 %% "
                                   "noise: test accuracy with standard errors, the flags, the training labels "
                                   "before and after, parse rates and warnings; writes bench.json and bench.md. "
                                   "Resumes from --out.")
    from robustft.bench import add_arguments as bench_arguments

    bench_arguments(p)
    p.add_argument("--quantize", choices=["4bit", "8bit"], default=None, help="bitsandbytes quantisation (CUDA)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("compare", help="every method, the ablations, sensitivity and stability (offline benchmark)",
                       description="RobustFT against Vanilla, SFT, SelfSelect, SelfRAG, NoiseAL, confident "
                                   "learning and our noise-aware variant, the ablations, sensitivity to beta "
                                   "and k, perplexity, categories and stability; writes compare.json and "
                                   "figures. Resumes from --out.")
    from robustft.compare import add_arguments as compare_arguments

    compare_arguments(p)
    p.set_defaults(func=cmd_compare)
    return parser


# What Ctrl-C leaves behind, by command (denoise, demo and compare write as they go).
INTERRUPTED = {"denoise": "finished batches are kept, run again to resume",
               "bench": "finished runs are kept, run again to resume",
               "demo": "finished runs are kept, run again to resume",
               "compare": "finished runs are kept, run again to resume",
               "finetune": "no adapter was saved",
               "merge": "run it again to finish",
               "evaluate": "nothing was written"}


def main(argv=None) -> int:
    command = "robustft"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        command = f"robustft {args.command}"
        from robustft.data import DataError
        from robustft.shards import ShardPending

        try:
            args.func(args)
        except StrictError as e:
            print(f"{command}: error: {e}", file=sys.stderr)
            return EXIT_STRICT
        except ShardPending as e:  # not an error: this shard's share is stored
            print(f"{command}: {e}", file=sys.stderr)
            return EXIT_PENDING
        except (UsageError, DataError, FileNotFoundError, ValueError) as e:
            # Expected problems with the input: one line, no traceback.
            print(f"{command}: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as e:  # an output that cannot be written (read-only, full disk, ...)
            print(f"{command}: error: {e}", file=sys.stderr)
            return EXIT_USAGE
    except KeyboardInterrupt:
        what = INTERRUPTED.get(command.removeprefix("robustft "), "")
        print(f"{command}: interrupted" + (f"; {what}" if what else ""), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
