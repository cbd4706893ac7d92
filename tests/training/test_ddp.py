"""Two CPU processes (gloo, torchrun): both ranks end with identical weights and only rank 0 writes the run."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import free_port
from tests.training.conftest import REPO, TINY_BART, base_args, model_args

# Two training processes under torchrun.
pytestmark = pytest.mark.slow

# Runs the train CLI on each rank; a callback records a digest of that rank's final weights. The script keeps no
# reference to the trainer: the CLI frees its process group before exit, as a user's run does.
RANK_RUN = """
import hashlib, os, sys
from pathlib import Path
from transformers import TrainerCallback
import training.train as train

class Digest(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, **kwargs):
        assert args.world_size == 2
        digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
        Path(sys.argv[1], f"rank{os.environ['RANK']}.sha256").write_text(digest)

build_trainer = train.build_trainer
train.build_trainer = lambda cfg, tr, val, callbacks: build_trainer(cfg, tr, val, [*callbacks, Digest()])
assert train.main(sys.argv[2:]) == 0
"""


@pytest.mark.parametrize("kind", ["seq2seq", "deepseek", "deepseek-ocr-2"])
def test_two_process_ddp_run(tmp_path, prepared, tiny_config, kind):
    script, digests, out = tmp_path / "rank_run.py", tmp_path / "digests", tmp_path / "ddp"
    script.write_text(RANK_RUN)
    digests.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(script), str(digests), *base_args(prepared, TINY_BART, tiny_config, out),
               "--max-steps", "4", *model_args(kind)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = (digests / "rank0.sha256").read_text(), (digests / "rank1.sha256").read_text()
    assert first == second
    # Rank 0 alone saves model, optimizer and trainer state; each rank adds only its own RNG state.
    checkpoint = sorted(p.name for p in (out / "checkpoint-2").iterdir())
    assert {"model.safetensors", "optimizer.pt", "trainer_state.json", "rng_state_0.pth", "rng_state_1.pth"} \
        <= set(checkpoint)
    assert result.stdout.count("saved model to") == 1
