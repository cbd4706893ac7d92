"""Batch generation spread over processes (one per GPU): each process writes its own part of the predictions and
the first one merges the parts, in input order, into the one predictions file.

    torchrun --nproc_per_node 4 -m evaluation.generate test.jsonl --model M --output predictions.jsonl
    accelerate launch --num_processes 4 -m evaluation.generate test.jsonl --model M --output predictions.jsonl

Both launchers set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them (a plain `python -m`)
there is one process and nothing here is used. The processes meet through a gloo process group (it works with and
without GPUs, and only carries these few messages):
0. the command's processes compare their checks of the flags and inputs: a bad input is reported once, by the first;
1. before generating: the first process records the settings (inference/generate.py) and folds the parts an
   interrupted run left (of any process count) into the predictions file, so every process sees the same
   finished ids and takes the same share of the rest, and none writes a line before the settings are recorded;
2. after generating: it merges the new parts into the predictions file (written atomically) and deletes them.
Process r takes every world_size-th remaining record from the r-th: neighbouring records, often of similar
length, go to different processes. A part is appended batch by batch like the one-process file, so a killed run
loses at most the batches in flight; re-running the same command resumes.
"""
from __future__ import annotations

import glob
import json
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Optional, Sequence

from inference.predictions import completed_ids

# The second barrier waits for the slowest process's whole share: hours on a large test set.
BARRIER_TIMEOUT = timedelta(days=2)


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Processes":
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", rank=self.rank, world_size=self.size, timeout=BARRIER_TIMEOUT)

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def stop(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    def any_problem(self, problem: Optional[str]) -> bool:
        """Whether any process found its inputs unusable (`problem`: this one's message, or None). The processes
        compare before any work, so a bad input stops them all; the first prints each distinct message once and
        the others wait until it has (torchrun ends every process as soon as one ends, message or not)."""
        import torch.distributed as dist

        self.start()
        problems: list[Optional[str]] = [None] * self.size
        dist.all_gather_object(problems, problem)
        found = [message for message in dict.fromkeys(problems) if message]
        if found:
            if self.is_main:
                print("\n".join(found), file=sys.stderr, flush=True)
            self.barrier()
            self.stop()
        return bool(found)

    def device(self, requested: str) -> str:
        """One GPU per process (the launcher's LOCAL_RANK) when CUDA is asked for or automatic."""
        import torch

        if self.size > 1 and requested in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return requested

    def share(self, records: Sequence[dict]) -> list[dict]:
        return list(records[self.rank::self.size])


def part_path(output: Path, processes: Processes) -> Path:
    return output.with_name(f"{output.name}.part-{processes.rank:03d}-of-{processes.size:03d}")


def part_files(output: Path) -> list[Path]:
    return sorted(output.parent.glob(glob.escape(output.name) + ".part-*-of-*"))


def merge_parts(output: Path, order: Sequence[str]) -> int:
    """Fold every part file into `output`: one line per id, ids of `order` (the input's order) first, any other id
    after them as found; written through a temporary file, then the parts are deleted. Returns the line count."""
    parts = part_files(output)
    if not parts:
        return len(completed_ids(output))
    lines: dict[str, str] = {}
    for path in [output, *parts]:
        completed_ids(path)  # drops a line cut short by a kill (and checks every line is a prediction)
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
                if line.strip():
                    lines.setdefault(str(json.loads(line)["id"]), line)
    merged = [lines.pop(record_id) for record_id in order if record_id in lines] + list(lines.values())
    tmp = output.with_name(f".{output.name}.merge-tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.writelines(merged)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, output)
    for path in parts:
        path.unlink()
    return len(merged)


def discard_predictions(output: Path) -> None:
    """--overwrite: the predictions file and every part, before the new run's settings are recorded."""
    for path in (output, *part_files(output)):
        path.unlink(missing_ok=True)


def gather_parts(output: Path, order: Sequence[str], processes: Processes) -> None:
    """Before generating: the first process folds the parts of an interrupted run into `output`; the others wait,
    then all read the same finished ids. Also run by a single process, which then resumes a multi-process run."""
    if processes.size > 1:
        processes.start()
    if processes.is_main:
        merge_parts(output, order)
    if processes.size > 1:
        processes.barrier()


def merge_shares(output: Path, order: Sequence[str], processes: Processes) -> None:
    """After generating: once every process has finished its part, the first one merges them into `output`."""
    if processes.size == 1:
        return
    processes.barrier()
    parts = part_files(output) if processes.is_main else []
    if parts:  # none when every record was done before this run
        count = merge_parts(output, order)
        print(f"[generate] merged the parts of {len(parts)} processes: {count} predictions in {output}")
    processes.stop()
