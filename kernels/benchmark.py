"""Benchmark of robustft.kernels against eager PyTorch and torch.compile (a script, not a test).

    python -m robustft.kernels.benchmark                 # CUDA if present, else the CPU rows
    python -m robustft.kernels.benchmark --device cpu    # force the CPU rows
    python -m robustft.kernels.benchmark --quick         # fewer shapes / repetitions

Writes ``kernels/results/<device-slug>.{json,md,png}``.

What is measured
----------------
* ``token_stats`` on ``[N, V]`` logits. Minimal traffic is one read of the logits plus the
  targets and four [N] outputs: ``bytes = N·V·b + 28·N``. Achieved bandwidth = bytes / time,
  reported against the device's copy bandwidth measured in the same run
  (``dst.copy_(src)``, counted as read + write), the practical roofline for a streaming
  kernel. Methods: eager PyTorch (``reference.eager_token_stats``: log_softmax + gather +
  entropy + logsumexp + argmax), ``torch.compile`` of the same function, the chunked torch
  path, and the Triton kernel (CUDA only).
* ``linear_token_stats`` (hidden ``[N, H]``, lm_head ``[V, H]``): the bare
  ``hidden @ W.T`` (the floor: any method has to do this matmul), the materialised path
  ``token_stats(hidden @ W.T)``, and the fused kernel.
* Peak extra memory: memory in use at the peak of one call minus memory in use before it
  (inputs excluded, outputs included). CUDA: ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``. CPU: a fresh subprocess per method with
  ``MALLOC_MMAP_THRESHOLD_=131072`` (every tensor >= 128 KiB is its own mmap, returned to
  the OS on free, so resident memory tracks live tensors), one warm-up call, then the
  kernel's peak-RSS counter is reset (``/proc/self/clear_refs``) and
  ``VmHWM - VmRSS(before)`` is taken around one call.
* Time: CUDA, ``triton.testing.do_bench`` (median, L2 flushed between runs). CPU, methods
  interleaved round by round (other processes share the cores), min and median reported;
  acceptance uses the median.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import linear_token_stats, token_stats
from .reference import eager_token_stats
from ..files import atomic_open, write_json

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

GPU_TOKEN_SHAPES = [(n, v) for n in (1024, 4096, 16384) for v in (32000, 128256, 151936)]
GPU_LINEAR_SHAPES = [  # (N, H, V, model)
    (8192, 4096, 128256, "Llama-3-8B"),
    (8192, 1536, 151936, "Qwen2.5-1.5B"),
]
# CPU rows: the acceptance shape in float32, the same in bf16, a Llama-size vocabulary,
# and a scaled-down lm_head (a full 8k x 4096 x 128k matmul is ~9 TFLOP: minutes on 2 cores).
CPU_TOKEN_SHAPES = [(4096, 32000, "fp32"), (4096, 32000, "bf16"), (1024, 128256, "bf16")]
CPU_LINEAR_SHAPES = [(512, 1536, 32000, "scaled-down", "fp32")]


# ---------------------------------------------------------------------------------------
# Inputs and methods
# ---------------------------------------------------------------------------------------


def make_token_inputs(n, v, dtype, device, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    logits = (torch.randn(n, v, generator=g, device=device, dtype=torch.float32) * 3).to(dtype)
    targets = torch.randint(0, v, (n,), generator=g, device=device)
    return logits, targets


def make_linear_inputs(n, h, v, dtype, device, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, device=device, dtype=torch.float32).to(dtype)
    weight = (torch.randn(v, h, generator=g, device=device, dtype=torch.float32) / h**0.5).to(dtype)
    targets = torch.randint(0, v, (n,), generator=g, device=device)
    return hidden, weight, targets


def token_methods(device):
    """name -> fn(logits, targets). Call once per shape: torch.compile is fresh each time
    (dynamo stops recompiling after 8 shapes and would silently run eager)."""
    torch._dynamo.reset()
    methods = {
        "eager": eager_token_stats,
        "torch.compile": torch.compile(eager_token_stats, dynamic=False),
        "torch chunked": lambda x, t: token_stats(x, t, backend="torch"),
    }
    if device.type == "cuda":
        methods["triton"] = lambda x, t: token_stats(x, t, backend="triton")
    return methods


def linear_methods(device):
    """name -> fn(hidden, weight, targets)."""
    backend = "triton" if device.type == "cuda" else "torch"
    return {
        "matmul only": lambda h, w, t: h @ w.T,
        "matmul + token_stats": lambda h, w, t: token_stats(h @ w.T, t, backend=backend),
        f"fused ({backend})": lambda h, w, t: linear_token_stats(h, w, t, backend=backend),
    }


# ---------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------


def copy_bandwidth(device) -> float:
    """Device copy bandwidth in GB/s (read + write), measured now."""
    nbytes = (1 << 30) if device.type == "cuda" else (256 << 20)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    if device.type == "cuda":
        import triton.testing

        ms = triton.testing.do_bench(lambda: dst.copy_(src), return_mode="median")
    else:
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - t0)
        ms = min(times) * 1e3  # best case: the roofline estimate, not a typical run
    return 2 * nbytes / (ms * 1e-3) / 1e9


def working(fns: dict, args) -> dict:
    """Drop methods that fail here (no C++ compiler for torch.compile, out of memory...)."""
    ok = {}
    for name, fn in fns.items():
        try:
            fn(*args)
            ok[name] = fn
        except Exception as err:  # report and go on: a benchmark row missing beats no benchmark
            print(f"  {name}: skipped ({type(err).__name__}: {str(err)[:200]})", flush=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return ok


def time_cuda(fns: dict, args) -> dict:
    import triton.testing

    return {name: {"ms": triton.testing.do_bench(lambda: fn(*args), return_mode="median")}
            for name, fn in fns.items()}


def time_cpu(fns: dict, args, rounds: int) -> dict:
    for fn in fns.values():  # warm-up (and compile)
        fn(*args)
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(*args)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: {"ms": statistics.median(ts), "ms_min": min(ts), "ms_all": ts}
            for name, ts in times.items()}


def peak_cuda(fn, args) -> int:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    fn(*args)  # warm-up: compile / autotune allocations are not the method's footprint
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn(*args)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return peak


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def peak_cpu(kind: str, method: str, shape: list, dtype: str) -> int | None:
    """Run one method once in a fresh process and return its peak extra RSS in bytes."""
    spec = json.dumps({"kind": kind, "method": method, "shape": shape, "dtype": dtype})
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    out = subprocess.run([sys.executable, "-m", "robustft.kernels.benchmark", "--peak-rss", spec],
                         capture_output=True, text=True, env=env, timeout=1800)
    m = re.search(r"PEAK_EXTRA_BYTES=(\d+)", out.stdout)
    if not m:
        print(f"  peak-RSS child failed for {method}: {out.stderr[-500:]}", file=sys.stderr)
        return None
    return int(m.group(1))


def _peak_rss_child(spec: dict) -> None:
    device = torch.device("cpu")
    dtype = DTYPES[spec["dtype"]]
    if spec["kind"] == "token":
        args = make_token_inputs(*spec["shape"], dtype, device)
        fn = token_methods(device)[spec["method"]]
    else:
        args = make_linear_inputs(*spec["shape"], dtype, device)
        fn = linear_methods(device)[spec["method"]]
    fn(*args)  # warm-up at full size (compiles; its memory is unmapped again on free)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS counter (VmHWM) to the current RSS
    before = _status_kib("VmRSS")
    out = fn(*args)
    peak = _status_kib("VmHWM")
    del out
    print(f"PEAK_EXTRA_BYTES={max(0, peak - before) * 1024}")


# ---------------------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------------------


def run_token_sweep(device, copy_gbs, quick, rounds):
    rows = []
    if device.type == "cuda":
        shapes = [(n, v, "bf16") for n, v in GPU_TOKEN_SHAPES]
        if quick:
            shapes = [(4096, 128256, "bf16"), (16384, 128256, "bf16")]
    else:
        shapes = CPU_TOKEN_SHAPES[:1] if quick else CPU_TOKEN_SHAPES
    for n, v, dt in shapes:
        print(f"token_stats N={n} V={v} {dt}", flush=True)
        args = make_token_inputs(n, v, DTYPES[dt], device)
        fns = working(token_methods(device), args)
        timing = time_cuda(fns, args) if device.type == "cuda" else time_cpu(fns, args, rounds)
        nbytes = n * v * args[0].element_size() + 28 * n
        for name, fn in fns.items():
            r = {"op": "token_stats", "N": n, "V": v, "dtype": dt, "method": name, **timing[name]}
            r["GB/s"] = nbytes / (r["ms"] * 1e-3) / 1e9
            r["pct_copy_bw"] = 100 * r["GB/s"] / copy_gbs
            r["peak_extra_MiB"] = _mib(peak_cuda(fn, args) if device.type == "cuda"
                                       else peak_cpu("token", name, [n, v], dt))
            rows.append(r)
            print(f"  {name:14s} {r['ms']:9.2f} ms {r['GB/s']:8.1f} GB/s "
                  f"{r['pct_copy_bw']:5.1f}% copy  peak +{r['peak_extra_MiB']} MiB", flush=True)
        del args
    return rows


def run_linear_sweep(device, quick, rounds):
    rows = []
    if device.type == "cuda":
        shapes = [(n, h, v, model, "bf16") for n, h, v, model in GPU_LINEAR_SHAPES]
        if quick:
            shapes = shapes[1:]
    else:
        shapes = CPU_LINEAR_SHAPES
    for n, h, v, model, dt in shapes:
        print(f"linear_token_stats N={n} H={h} V={v} {dt} ({model})", flush=True)
        args = make_linear_inputs(n, h, v, DTYPES[dt], device)
        fns = working(linear_methods(device), args)
        timing = time_cuda(fns, args) if device.type == "cuda" else time_cpu(fns, args, rounds)
        for name, fn in fns.items():
            r = {"op": "linear_token_stats", "N": n, "H": h, "V": v, "model": model, "dtype": dt,
                 "method": name, **timing[name]}
            r["TFLOP/s"] = 2 * n * h * v / (r["ms"] * 1e-3) / 1e12
            r["peak_extra_MiB"] = _mib(peak_cuda(fn, args) if device.type == "cuda"
                                       else peak_cpu("linear", name, [n, h, v], dt))
            rows.append(r)
            print(f"  {name:22s} {r['ms']:9.2f} ms {r['TFLOP/s']:7.2f} TFLOP/s "
                  f"peak +{r['peak_extra_MiB']} MiB", flush=True)
        del args
    return rows


TOKEN_CONFIGS = [(1024, 4), (2048, 4), (2048, 8), (4096, 8), (4096, 16), (8192, 16)]  # (BLOCK_V, warps)
LINEAR_CONFIGS = [  # (BLOCK_N, BLOCK_V, BLOCK_K, warps, stages)
    (128, 128, 64, 8, 3), (128, 128, 64, 8, 4), (128, 64, 64, 8, 3), (64, 128, 64, 4, 3),
    (128, 256, 64, 8, 3), (64, 64, 64, 4, 4),
]


def run_config_sweep(device, copy_gbs):
    """CUDA only: launch configurations of both kernels, to set the defaults from data."""
    from . import triton_ops

    rows = []
    n, v = 16384, 128256
    x, t = make_token_inputs(n, v, torch.bfloat16, device)
    for bv, nw in TOKEN_CONFIGS:
        fn = lambda: triton_ops.token_stats_triton(x, t, block_v=bv, num_warps=nw)  # noqa: E731
        ms = time_cuda({"k": fn}, ())["k"]["ms"]
        gbs = (n * v * 2 + 28 * n) / (ms * 1e-3) / 1e9
        rows.append({"op": "token_stats", "N": n, "V": v, "BLOCK_V": bv, "num_warps": nw, "ms": ms,
                     "pct_copy_bw": 100 * gbs / copy_gbs,
                     "default": (bv, nw) == (triton_ops.TOKEN_STATS_BLOCK_V, triton_ops.TOKEN_STATS_NUM_WARPS)})
        print(f"  token_stats BLOCK_V={bv} warps={nw}: {ms:.3f} ms, {rows[-1]['pct_copy_bw']:.1f}% copy")
    del x, t
    for n, h, v, model in GPU_LINEAR_SHAPES:
        hid, w, t = make_linear_inputs(n, h, v, torch.bfloat16, device)
        for bn, bv, bk, nw, ns in LINEAR_CONFIGS:
            fn = lambda: triton_ops.linear_token_stats_triton(  # noqa: E731
                hid, w, t, block_n=bn, block_v=bv, block_k=bk, num_warps=nw, num_stages=ns)
            try:
                ms = time_cuda({"k": fn}, ())["k"]["ms"]
            except Exception as err:  # e.g. out of shared memory for a large tile
                print(f"  linear {model} {bn}x{bv}x{bk} w{nw} s{ns}: failed ({type(err).__name__})")
                continue
            rows.append({"op": "linear_token_stats", "model": model, "BLOCK_N": bn, "BLOCK_V": bv,
                         "BLOCK_K": bk, "num_warps": nw, "num_stages": ns, "ms": ms,
                         "TFLOP/s": 2 * n * h * v / (ms * 1e-3) / 1e12})
            print(f"  linear {model} {bn}x{bv}x{bk} w{nw} s{ns}: {ms:.3f} ms "
                  f"{rows[-1]['TFLOP/s']:.0f} TFLOP/s")
        del hid, w, t
    return rows


def _mib(nbytes):
    return None if nbytes is None else round(nbytes / 2**20, 1)


def _row(rows, **match):
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def acceptance(rows, device) -> list[dict]:
    """The issue's acceptance criteria, evaluated on the rows of this run."""
    checks = []

    def check(name, value, limit, ok):
        checks.append({"check": name, "value": None if value is None else round(value, 3),
                       "limit": limit, "pass": bool(ok) if value is not None else None})

    if device.type == "cpu":
        eager = _row(rows, op="token_stats", N=4096, V=32000, dtype="fp32", method="eager")
        ours = _row(rows, op="token_stats", N=4096, V=32000, dtype="fp32", method="torch chunked")
        if eager and ours:
            ratio = ours["ms"] / eager["ms"]
            check("CPU N=4k V=32k fp32: time chunked / eager (median)", ratio, "<= 1.5", ratio <= 1.5)
            mem = (ours["peak_extra_MiB"] / eager["peak_extra_MiB"]
                   if ours["peak_extra_MiB"] is not None and eager["peak_extra_MiB"] else None)
            check("CPU N=4k V=32k fp32: peak extra memory chunked / eager", mem, "<= 0.25",
                  mem is not None and mem <= 0.25)
        return checks
    sel = dict(op="token_stats", N=16384, V=128256, dtype="bf16")
    tri, eager, comp = (_row(rows, **sel, method=m) for m in ("triton", "eager", "torch.compile"))
    if tri:
        check("token_stats N=16k V=128256 bf16: % of copy bandwidth", tri["pct_copy_bw"], ">= 85",
              tri["pct_copy_bw"] >= 85)
        if eager:
            check("... speed-up vs eager", eager["ms"] / tri["ms"], ">= 3", eager["ms"] / tri["ms"] >= 3)
        if comp:
            check("... speed-up vs torch.compile", comp["ms"] / tri["ms"], ">= 1.3",
                  comp["ms"] / tri["ms"] >= 1.3)
    for n, h, v, model in GPU_LINEAR_SHAPES:
        sel = dict(op="linear_token_stats", N=n, H=h, V=v)
        fused = _row(rows, **sel, method="fused (triton)")
        mat = _row(rows, **sel, method="matmul + token_stats")
        mm = _row(rows, **sel, method="matmul only")
        if fused and mat and mm:
            mem = fused["peak_extra_MiB"] / mat["peak_extra_MiB"]
            check(f"linear {model}: peak extra memory fused / materialised", mem, "<= 0.10", mem <= 0.10)
            ratio = fused["ms"] / mm["ms"]
            check(f"linear {model}: time fused / bare matmul", ratio, "<= 1.15", ratio <= 1.15)
    return checks


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def device_info(device):
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        name = f"CPU {name}, {torch.get_num_threads()} threads"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if device.type == "cuda":
        slug = "cuda-" + slug
    return name, slug


def _ms(row) -> str:
    """The median time, with the minimum in brackets when the run kept it (CPU runs)."""
    return f"{row['ms']:.2f}" + (f" ({row['ms_min']:.2f})" if "ms_min" in row else "")


def write_markdown(path, meta, rows, checks, sweep=()):
    lines = [f"# robustft.kernels benchmark: {meta['device_name']}", "",
             f"{meta['date']}; torch {meta['torch']}, triton {meta['triton']}; "
             f"measured copy bandwidth {meta['copy_GBps']:.1f} GB/s (read + write).", ""]
    if meta["device"] == "cpu":
        lines += ["**CPU run.** Methods are interleaved round by round; other processes shared "
                  "the cores, so times are medians (min in brackets). The Triton kernels are "
                  "not timed on CPU (the interpreter is for testing only).", ""]
    tok = [r for r in rows if r["op"] == "token_stats"]
    if tok:
        lines += ["## token_stats", "",
                  "| N | V | dtype | method | ms | GB/s | % copy BW | peak extra MiB |",
                  "|---:|---:|---|---|---:|---:|---:|---:|"]
        for r in tok:
            lines.append(f"| {r['N']} | {r['V']} | {r['dtype']} | {r['method']} | {_ms(r)} | "
                         f"{r['GB/s']:.1f} | {r['pct_copy_bw']:.1f} | {r['peak_extra_MiB']} |")
        lines.append("")
    lin = [r for r in rows if r["op"] == "linear_token_stats"]
    if lin:
        lines += ["## linear_token_stats (hidden @ lm_head.T, then statistics)", "",
                  "| N | H | V | model | dtype | method | ms | TFLOP/s | peak extra MiB |",
                  "|---:|---:|---:|---|---|---|---:|---:|---:|"]
        for r in lin:
            lines.append(f"| {r['N']} | {r['H']} | {r['V']} | {r['model']} | {r['dtype']} | "
                         f"{r['method']} | {_ms(r)} | {r['TFLOP/s']:.2f} | {r['peak_extra_MiB']} |")
        lines.append("")
    if checks:
        lines += ["## Acceptance checks", "", "| check | value | limit | pass |", "|---|---:|---|---|"]
        lines += [f"| {c['check']} | {c['value']} | {c['limit']} | {c['pass']} |" for c in checks]
        lines.append("")
    if sweep:
        lines += ["## Launch-configuration sweep (Triton)", "", "| op | config | ms | metric |",
                  "|---|---|---:|---:|"]
        for r in sweep:
            if r["op"] == "token_stats":
                cfg = f"BLOCK_V={r['BLOCK_V']} warps={r['num_warps']}" + (" (default)" if r["default"] else "")
                lines.append(f"| token_stats 16k x 128256 | {cfg} | {r['ms']:.3f} | {r['pct_copy_bw']:.1f}% copy |")
            else:
                cfg = f"{r['BLOCK_N']}x{r['BLOCK_V']}x{r['BLOCK_K']} w{r['num_warps']} s{r['num_stages']}"
                lines.append(f"| linear {r['model']} | {cfg} | {r['ms']:.3f} | {r['TFLOP/s']:.0f} TFLOP/s |")
        lines.append("")
    with atomic_open(path) as f:
        f.write("\n".join(lines))


def write_plot(path, meta, rows):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    tok = [r for r in rows if r["op"] == "token_stats"]
    lin = [r for r in rows if r["op"] == "linear_token_stats"]
    fig, axes = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [2, 1]})
    for ax, data, key, ylabel, label_of in (
        (axes[0], tok, "GB/s", "achieved GB/s (one read of the logits)",
         lambda r: f"{r['N'] // 1024}k×{r['V'] // 1000}k\n{r['dtype']}"),
        (axes[1], lin, "ms", "ms (lower is better)",
         lambda r: f"{r['model']}\nN={r['N']} H={r['H']}"),
    ):
        groups = list(dict.fromkeys(label_of(r) for r in data))
        methods = list(dict.fromkeys(r["method"] for r in data))
        width = 0.8 / max(1, len(methods))
        for i, m in enumerate(methods):
            ys = [next((r[key] for r in data if label_of(r) == g and r["method"] == m), 0) for g in groups]
            ax.bar([j + i * width for j in range(len(groups))], ys, width, label=m)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))], groups, fontsize=8)
        ax.set_ylabel(ylabel)
        top = max([r[key] for r in data] + ([meta["copy_GBps"]] if key == "GB/s" else []), default=1)
        ax.set_ylim(0, 1.3 * top)  # headroom for the legend
        ax.legend(fontsize=8, loc="upper right")
    axes[0].axhline(meta["copy_GBps"], color="k", ls="--", lw=1)
    axes[0].text(0, meta["copy_GBps"], " device copy bandwidth", va="bottom", fontsize=8)
    axes[0].set_title("token_stats")
    axes[1].set_title("linear_token_stats")
    fig.suptitle(f"robustft.kernels on {meta['device_name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default=None)
    p.add_argument("--quick", action="store_true", help="fewer shapes")
    p.add_argument("--rounds", type=int, default=7, help="CPU timing rounds")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--skip-linear", action="store_true")
    p.add_argument("--no-sweep", action="store_true", help="CUDA: skip the launch-config sweep")
    p.add_argument("--peak-rss", help=argparse.SUPPRESS)  # internal: measure one CPU method
    args = p.parse_args(argv)
    if args.peak_rss:
        _peak_rss_child(json.loads(args.peak_rss))
        return
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name, slug = device_info(device)
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    copy_gbs = copy_bandwidth(device)
    print(f"{name}: copy bandwidth {copy_gbs:.1f} GB/s", flush=True)
    meta = {"device": device.type, "device_name": name, "slug": slug, "torch": torch.__version__,
            "triton": triton_version, "copy_GBps": copy_gbs, "date": time.strftime("%Y-%m-%d %H:%M"),
            "cpu_threads": torch.get_num_threads(), "argv": sys.argv[1:]}
    rows = run_token_sweep(device, copy_gbs, args.quick, args.rounds)
    if not args.skip_linear:
        rows += run_linear_sweep(device, args.quick, args.rounds)
    sweep = []
    if device.type == "cuda" and not args.no_sweep:
        print("launch-configuration sweep", flush=True)
        sweep = run_config_sweep(device, copy_gbs)
    checks = acceptance(rows, device)
    for c in checks:
        print(f"{'PASS' if c['pass'] else 'FAIL'}  {c['check']}: {c['value']} ({c['limit']})")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / slug
    write_json(stem.with_suffix(".json"), {"meta": meta, "rows": rows, "checks": checks, "config_sweep": sweep})
    write_markdown(stem.with_suffix(".md"), meta, rows, checks, sweep)
    write_plot(stem.with_suffix(".png"), meta, rows)
    print(f"wrote {stem}.json/.md/.png")


if __name__ == "__main__":
    main()
