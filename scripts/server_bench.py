"""Requests per second and the client's overhead per sample of the server backend.

    OMP_NUM_THREADS=1 python scripts/server_bench.py --n 300 --out results/server-backend

Runs one toy denoise (offline benchmark, seed 0, 30 % noise) in process, then the same run
through `robustft.backends.server.ServerBackend` against the test server
(``python -m robustft.backends.testing``) in its own process on 127.0.0.1, and writes:

- ``server-backend.json``: the timings, the request count, the outputs' equality;
- ``server-backend.md``: the same as a table, with this command.

The client's overhead is the run's wall time in the client minus the seconds the server spent
in the model's calls (its ``/stats``), per sample: HTTP, JSON, the openai client, the server's
own request handling and any time a request waited for the one model, all of it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's robustft, whatever is installed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="samples (default 300)")
    parser.add_argument("--max-in-flight", type=int, default=8)
    parser.add_argument("--out", default="results/server-backend")
    args = parser.parse_args()

    import torch

    import robustft
    from robustft.backends.server import ServerBackend
    from robustft.denoise import DenoiseConfig, denoise
    from robustft.offline import ToyConfig, make_benchmark

    config = DenoiseConfig(embedder="tfidf")  # the defaults otherwise; a server gives no hidden states
    toy = ToyConfig.for_seed(0)
    lm = robustft.load_model("toy", config=toy, progress=False)
    train, _ = robustft.inject_noise(make_benchmark(toy.world).train[:args.n], 0.3, seed=0)

    t0 = time.perf_counter()
    local = denoise(train, lm, config, progress=False)
    local_s = time.perf_counter() - t0

    proc = subprocess.Popen([sys.executable, "-m", "robustft.backends.testing", "--seed", "0"],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    try:
        url = proc.stdout.readline().strip()
        backend = ServerBackend(url, "toy", tokenizer=lm.tokenizer, max_in_flight=args.max_in_flight)
        before = json.loads(urllib.request.urlopen(url.removesuffix("/v1") + "/stats").read())
        t0 = time.perf_counter()
        remote = denoise(train, backend, config, progress=False)
        remote_s = time.perf_counter() - t0
        after = json.loads(urllib.request.urlopen(url.removesuffix("/v1") + "/stats").read())
    finally:
        proc.terminate()
        proc.wait()

    requests = after["requests"] - before["requests"]
    model_s = after["model_seconds"] - before["model_seconds"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "entropy"} for r in rows]  # noqa: E731
    entropy_gap = max((abs(a["entropy"] - b["entropy"]) for a, b in zip(local.provenance, remote.provenance)
                       if a.get("entropy") is not None and b.get("entropy") is not None), default=0.0)
    result = {
        "command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python scripts/server_bench.py "
                   f"--n {args.n} --max-in-flight {args.max_in_flight} --out {args.out}",
        "samples": args.n, "noise": 0.3, "config": config.to_dict(), "max_in_flight": args.max_in_flight,
        "scoring": backend.scoring, "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "in_process_seconds": round(local_s, 2), "server_seconds": round(remote_s, 2),
        "requests": requests, "requests_per_second": round(requests / remote_s, 1),
        "server_model_seconds": round(model_s, 2),
        "client_overhead_ms_per_sample": round(1000 * (remote_s - model_s) / args.n, 1),
        "client_overhead_ms_per_request": round(1000 * (remote_s - model_s) / requests, 2),
        "identical_provenance": strip(local.provenance) == strip(remote.provenance),
        "identical_training_set": [(s.id, s.answer) for s in local.samples] == [(s.id, s.answer) for s in remote.samples],
        "max_selection_entropy_gap": entropy_gap,
        "kept": len(remote.samples), "flagged": sum(bool(p["noisy"]) for p in remote.provenance),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "server-backend.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [("samples (toy, 30 % noise)", result["samples"]), ("requests", requests),
            ("in-process denoise, s", result["in_process_seconds"]), ("through the server, s", result["server_seconds"]),
            ("server's model calls, s", result["server_model_seconds"]),
            ("requests per second", result["requests_per_second"]),
            ("client overhead per sample, ms", result["client_overhead_ms_per_sample"]),
            ("client overhead per request, ms", result["client_overhead_ms_per_request"]),
            ("identical provenance / training set", f"{result['identical_provenance']} / {result['identical_training_set']}"),
            ("largest selection-entropy gap", f"{entropy_gap:.1e}")]
    md = ["# The server backend on the toy model", "",
          f"`{result['command']}` ({result['torch_threads']} torch thread(s), {result['cpu']}; the test server "
          f"in its own process on 127.0.0.1, scoring by {result['scoring']}, {args.max_in_flight} requests in "
          f"flight; {result['cpus']} CPUs, load average {result['load_average_1min_at_end']} at the end: the "
          "machine was shared). The client's overhead is the client's wall time minus the server's seconds in "
          "model calls: HTTP, JSON, the openai client, the server's request handling: the wall time "
          "the model sat idle. The test server answers one request at a time, unbatched, with a teacher-forced "
          "pass beside each generation, so its model time is no measure of vLLM's.", "",
          "| | |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows], ""]
    (out / "server-backend.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
