"""DDP fine-tuning: two CPU processes under torchrun (gloo) train as one process does.

`finetune` runs on the transformers `Trainer`; under ``torchrun --nproc_per_node 2`` each
process gets half of every global batch and DistributedDataParallel averages the gradients.
The loss is normalised by the response tokens of the whole global batch, so the two-process
run takes the same steps as one process with twice the per-process batch.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# 32 toy questions, global batch 8 (2 processes x 2 examples x 2 accumulation steps, or
# 1 process x 4 x 2): 4 optimizer steps, no warm-up, so every step moves the weights.
N = 32
KW = dict(epochs=1, lr=4e-3, lora_r=16, lora_alpha=32, grad_accum=2, warmup_ratio=0.0,
          target_modules=["gate_proj", "up_proj", "down_proj"], seed=0, progress=False)
# Per-step losses of the two runs: the same examples in every step; only the order of
# floating-point sums differs (padding to 2 rows instead of 4, gloo's all-reduce).
LOSS_ATOL = 1e-5  # measured: 1.2e-7 (4 steps, 2 x 2 x 2 vs 1 x 4 x 2)

WORKER = """
import json, sys
import torch.distributed as dist
import robustft
from robustft.offline import make_benchmark

n, kw, out = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
lm = robustft.load_model("toy", seed=0)
tuned = robustft.finetune(lm, make_benchmark(seed=0).train[:n], **kw)
info = dict(tuned.info["trainer"], train_loss=tuned.info["train_loss"], adapter=tuned.info["adapter"],
            initialized=dist.is_initialized())
if dist.is_initialized():
    info.update(rank=dist.get_rank(), process_group_size=dist.get_world_size(), backend=dist.get_backend())
with open(f"{out}.{info.get('rank', 0)}.json", "w") as f:
    json.dump(info, f)
"""


def test_two_cpu_processes_under_torchrun_train_as_one(tmp_path):
    import robustft
    from robustft.offline import make_benchmark

    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    # PYTHONPATH: the workers import this checkout's robustft, as the test does.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    # --standalone: a local rendezvous on a free port (a fixed one may be taken).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(worker), str(N), json.dumps(dict(KW, batch_size=2)),
           str(tmp_path / "ddp")]
    # start_new_session: on a timeout the whole group (torchrun and its workers) is killed.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    run = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"ddp.{r}.json").read_text()) for r in (0, 1)]

    for r, info in enumerate(ranks):
        assert info["initialized"] and info["rank"] == r
        assert info["world_size"] == info["process_group_size"] == 2
        assert info["backend"] == "gloo"
        assert info["wrapper"] == "DistributedDataParallel"
        assert info["distributed_type"].endswith("MULTI_CPU")
        assert info["global_batch"] == 8 and info["steps"] == 4
    # DDP keeps the replicas identical, and both record the loss of the global batch.
    assert ranks[0]["adapter"] == ranks[1]["adapter"]
    assert ranks[0]["train_loss"] == ranks[1]["train_loss"]

    lm = robustft.load_model("toy", seed=0)
    one = robustft.finetune(lm, make_benchmark(seed=0).train[:N], batch_size=4, **KW)
    assert one.info["trainer"]["world_size"] == 1 and one.info["trainer"]["global_batch"] == 8
    assert one.info["trainer"]["wrapper"] != "DistributedDataParallel"
    assert len(one.info["train_loss"]) == 4
    assert ranks[0]["train_loss"] == pytest.approx(one.info["train_loss"], abs=LOSS_ATOL)
    # The weights moved between steps: equal losses are not four copies of the first one.
    assert max(one.info["train_loss"]) - min(one.info["train_loss"]) > 100 * LOSS_ATOL
