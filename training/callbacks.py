"""The training progress bar: loss, learning rate and throughput in samples/s and tokens/s.

Tokens are the Trainer's `num_input_tokens_seen` counted as non-padding input tokens (summed over processes), so
for DeepSeek-OCR they include the image placeholder tokens, which is the decoder's real workload.
"""
from __future__ import annotations

import time
from typing import Any, Optional

from tqdm.auto import tqdm
from transformers import TrainerCallback


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class TrainingProgress(TrainerCallback):
    """One tqdm bar on the main process; evaluation results are printed above it as one line each."""

    def __init__(self) -> None:
        self.bar: Optional[tqdm] = None
        self.start_time = 0.0
        self.start_step = 0
        self.start_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        # Measured from the step training starts at, so a resumed run reports its own speed.
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step",
                        dynamic_ncols=True)
        self.start_time, self.start_step = time.perf_counter(), state.global_step
        self.start_tokens = state.num_input_tokens_seen
        if state.global_step:
            self.bar.write(f"resuming from checkpoint-{state.global_step} (step {state.global_step} of "
                           f"{state.max_steps})")

    def throughput(self, args, state) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start_time, 1e-9)
        samples_per_step = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        return {"samples/s": (state.global_step - self.start_step) * samples_per_step / elapsed,
                "tokens/s": (state.num_input_tokens_seen - self.start_tokens) / elapsed}

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        if "loss" in logs:
            speed = self.throughput(args, state)
            self.bar.set_postfix({"loss": f"{logs['loss']:.4f}", "lr": f"{logs.get('learning_rate', 0.0):.3g}",
                                  "samples/s": f"{speed['samples/s']:.2f}", "tokens/s": f"{speed['tokens/s']:.0f}"})
        elif any(key.startswith("eval_") for key in logs):
            shown = ", ".join(f"{k[5:]}={_short(v)}" for k, v in logs.items()
                              if k.startswith("eval_") and not k.endswith(("_per_second", "runtime")))
            self.bar.write(f"step {state.global_step}: eval {shown}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            speed, ran = self.throughput(args, state), state.global_step - self.start_step
            self.close()
            # A resumed run's figures are its own steps' only.
            if not ran:
                print(f"trained 0 steps: resumed at step {self.start_step} of {state.max_steps}, nothing left to "
                      "train", flush=True)
                return
            span = f" (steps {self.start_step + 1}-{state.global_step} of {state.max_steps}, resumed)" \
                if self.start_step else ""
            print(f"trained {ran} steps{span}: {speed['samples/s']:.2f} samples/s, {speed['tokens/s']:.0f} "
                  "tokens/s", flush=True)

    def close(self) -> None:
        """Ends the bar's line; also for a run that stops on an error, so the error gets a line of its own."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
