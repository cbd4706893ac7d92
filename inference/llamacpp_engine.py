"""The llama.cpp engine (`--engine llamacpp`, ENGINE=llamacpp): this project's DeepEncoder turns the pages into
embeddings, llama.cpp's decoder (the GGUF of `python -m model.export --format gguf`) writes the summary.

Why the split is there: on a CPU llama.cpp decodes faster than torch float32 (quantized weights, its own kernels),
but its vision pipeline reads pages only in its own gundam layout, and its encoder is slower than ours (see
benchmarks.bench_cpu_serving, which runs both against llama.cpp's own tools on the same GGUF files). Handing it
our page embeddings keeps every render mode exactly as training saw it, and the encoder runs in bf16 where the
CPU has bf16 units (model/checkpoint/device.py). The hand-over is exact:
at F32 the greedy tokens equal torch's (tests/inference/test_llamacpp_engine.py).

Each prompt is evaluated as torch sees it, positions 0..n-1: its text runs as token ids, its page runs as
embedding rows. Then every unfinished sequence of the batch advances one token per `llama_decode` call, which is how
llama.cpp batches several sequences in one context.
"""
from __future__ import annotations

import copy
import ctypes
import itertools
from pathlib import Path
from typing import Union

import numpy as np
import torch

from config import LoadSettings
from inference.backends import Document, OCRBackend
from inference.inputs import InputError
from inference.loop_guard import guard, without_guard
from model.checkpoint.gguf import GgufError, decoder_gguf, import_llama_cpp
from model.checkpoint.load import LoadedModel, ModelLoadError, load_pretrained
from model.checkpoint.source import resolve_model_source

# A prompt: its runs in order, token ids (list) or page embeddings ([n, hidden] float32 rows).
Segment = Union[list, np.ndarray]
CHUNK = 512  # tokens per llama_decode call while a prompt is evaluated (llama.cpp's n_batch)
CONTEXT_STEP = 256  # contexts are sized in these steps and reused while they are large enough


class LlamaCppDecoder:
    """A GGUF decoder in llama.cpp: batched prompt evaluation from tokens and embeddings, one step per token."""

    def __init__(self, path: Path, threads: int):
        self.llama_cpp = llama_cpp = import_llama_cpp()
        self.path, self.threads = path, threads
        params = llama_cpp.llama_model_default_params()
        # Read, not mapped: llama.cpp repacks most quantized weights into a faster layout, a copy, and a mapped file
        # stays resident beside it (see benchmarks.bench_cpu_serving's serving peak memory of the llamacpp paths).
        params.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise ModelLoadError(f"llama.cpp cannot load {path} (not a GGUF decoder this llama.cpp reads)")
        self.n_embd = llama_cpp.llama_model_n_embd(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        self.ctx, self.n_ctx, self.n_seq = None, 0, 0

    def _context(self, n_seq: int, n_ctx: int):
        """A context holding `n_seq` sequences of `n_ctx` tokens in all, its memory cleared."""
        llama_cpp = self.llama_cpp
        if self.ctx is None or n_seq > self.n_seq or n_ctx > self.n_ctx:
            self.close_context()
            params = llama_cpp.llama_context_default_params()
            params.n_ctx = -(-n_ctx // CONTEXT_STEP) * CONTEXT_STEP
            params.n_batch = params.n_ubatch = CHUNK
            params.n_seq_max = n_seq
            params.kv_unified = True  # the sequences share one cache, so short prompts leave room for long ones
            params.n_threads = params.n_threads_batch = self.threads
            self.ctx = llama_cpp.llama_init_from_model(self.model, params)
            if not self.ctx:
                raise ModelLoadError(f"llama.cpp cannot create a context of {params.n_ctx} tokens for {self.path}")
            self.n_ctx, self.n_seq = params.n_ctx, n_seq
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        return self.ctx

    def _decode(self, batch) -> None:
        status = self.llama_cpp.llama_decode(self.ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama.cpp's llama_decode failed (status {status})")

    def _logits(self, index: int) -> np.ndarray:
        row = self.llama_cpp.llama_get_logits_ith(self.ctx, index)
        return np.ctypeslib.as_array(row, shape=(self.n_vocab,)).copy()

    def _evaluate(self, segments: list[Segment], seq: int) -> np.ndarray:
        """Evaluate one prompt as sequence `seq`; its last position's logits."""
        llama_cpp, pos = self.llama_cpp, 0
        chunks = [(run[i:i + CHUNK]) for run in segments for i in range(0, len(run), CHUNK)]
        for number, chunk in enumerate(chunks):
            rows = isinstance(chunk, np.ndarray)
            batch = llama_cpp.llama_batch_init(len(chunk), self.n_embd if rows else 0, 1)
            try:
                batch.n_tokens = len(chunk)
                if rows:
                    data = np.ascontiguousarray(chunk, dtype=np.float32)
                    ctypes.memmove(batch.embd, data.ctypes.data, data.nbytes)
                for i in range(len(chunk)):
                    if not rows:
                        batch.token[i] = int(chunk[i])
                    batch.pos[i], batch.n_seq_id[i], batch.seq_id[i][0] = pos + i, 1, seq
                    batch.logits[i] = number == len(chunks) - 1 and i == len(chunk) - 1
                self._decode(batch)
            finally:
                llama_cpp.llama_batch_free(batch)
            pos += len(chunk)
        return self._logits(-1)

    def generate(self, prompts: list[list[Segment]], max_new_tokens: int, pick) -> list[list[int]]:
        """New tokens of each prompt. `pick(seq, new_tokens, logits) -> (token, finished)` chooses each token."""
        lengths = [sum(len(run) for run in prompt) for prompt in prompts]
        self._context(len(prompts), sum(lengths) + len(prompts) * max_new_tokens)
        rows = {seq: self._evaluate(prompt, seq) for seq, prompt in enumerate(prompts)}
        new: list[list[int]] = [[] for _ in prompts]
        llama_cpp = self.llama_cpp
        batch = llama_cpp.llama_batch_init(len(prompts), 0, 1)
        try:
            while rows:
                step = []
                for seq, logits in rows.items():
                    token, finished = pick(seq, new[seq], logits)
                    new[seq].append(token)
                    if not finished and len(new[seq]) < max_new_tokens:
                        step.append(seq)
                if not step:
                    break
                batch.n_tokens = len(step)
                for i, seq in enumerate(step):
                    batch.token[i] = new[seq][-1]
                    batch.pos[i], batch.n_seq_id[i], batch.seq_id[i][0] = lengths[seq] + len(new[seq]) - 1, 1, seq
                    batch.logits[i] = True
                self._decode(batch)
                rows = {seq: self._logits(i) for i, seq in enumerate(step)}
        finally:
            llama_cpp.llama_batch_free(batch)
        return new

    def close_context(self) -> None:
        if self.ctx is not None:
            self.llama_cpp.llama_free(self.ctx)
            self.ctx = None

    def close(self) -> None:
        self.close_context()
        if self.model is not None:
            self.llama_cpp.llama_model_free(self.model)
            self.model = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown may have unloaded the library first
            pass


class TokenPicker:
    """Greedy or sampled choice of each new token from llama.cpp's logits, with the logits processors of the
    generation settings the torch engine applies: transformers' own for temperature with the model's top-k/top-p
    and min_new_tokens, the loop guard's (inference/loop_guard.py) for no_repeat_ngram_size and its window."""

    def __init__(self, generation_config, generate_kwargs: dict, prompts_ids: list[list[int]]):
        from transformers import (
            LogitsProcessorList,
            MinNewTokensLengthLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        if generate_kwargs.get("num_beams", 1) > 1:
            raise InputError("beam search (num_beams > 1) needs the torch engine; the llamacpp engine decodes "
                             "greedily or by sampling")
        config = copy.deepcopy(generation_config)
        config.update(**without_guard(generate_kwargs))
        self.eos = config.eos_token_id if isinstance(config.eos_token_id, int) else config.eos_token_id[0]
        self.sample, self.prompts_ids = bool(config.do_sample), prompts_ids
        self.processors = []
        for prompt in prompts_ids:
            chain = LogitsProcessorList()
            if config.min_new_tokens:
                chain.append(MinNewTokensLengthLogitsProcessor(len(prompt), config.min_new_tokens, self.eos))
            chain.extend(guard(generate_kwargs, len(prompt)))
            if self.sample:
                chain.append(TemperatureLogitsWarper(config.temperature))
                if config.top_k:
                    chain.append(TopKLogitsWarper(config.top_k))
                if config.top_p is not None and config.top_p < 1.0:
                    chain.append(TopPLogitsWarper(config.top_p))
            self.processors.append(chain)

    def __call__(self, seq: int, new_tokens: list[int], logits: np.ndarray) -> tuple[int, bool]:
        scores = torch.from_numpy(logits)[None]
        if self.processors[seq]:
            ids = torch.tensor([self.prompts_ids[seq] + new_tokens])
            scores = self.processors[seq](ids, scores)
        if self.sample:
            token = int(torch.multinomial(torch.softmax(scores, dim=-1)[0], 1))
        else:
            token = int(scores[0].argmax())
        return token, token == self.eos


class LlamaCppBackend(OCRBackend):
    """DeepSeek-OCR with this project's encoder (torch, from `loaded`, decoder-less) and llama.cpp's decoder."""

    engine = "llamacpp"

    def __init__(self, loaded: LoadedModel, gguf: Path):
        super().__init__(loaded.model, loaded.processor, loaded.device)
        self.decoder = LlamaCppDecoder(gguf, torch.get_num_threads())
        self.gguf = gguf.name
        self.backbone = loaded.source.backbone
        width = loaded.model.config.get_text_config().hidden_size
        if self.decoder.n_embd != width:
            raise ModelLoadError(f"{gguf} is a decoder of width {self.decoder.n_embd}, the model folder's is "
                                 f"{width}: export both from the same model")

    def prompts(self, documents: list[Document]) -> tuple[list[list[int]], list[list[Segment]]]:
        """Each document's prompt ids (without padding) and its runs: text tokens, then page embeddings in the
        placeholders' places, as the torch model merges them."""
        batch = self.inputs(documents)
        embeddings = None
        if "pixel_values" in batch:
            with torch.inference_mode():
                embeddings = self.backbone.image_features(self.model, batch).float().cpu().numpy()
        image_token, used = self.model.config.image_token_id, 0
        ids, prompts = [], []
        for row, keep in zip(batch["input_ids"], batch["attention_mask"]):
            row = row[keep.bool()].tolist()
            segments: list[Segment] = []
            for is_image, run in itertools.groupby(row, key=lambda token: token == image_token):
                run = list(run)
                if is_image:
                    segments.append(embeddings[used:used + len(run)])
                    used += len(run)
                else:
                    segments.append(run)
            ids.append(row)
            prompts.append(segments)
        return ids, prompts

    def generate(self, documents: list[Document], generate_kwargs: dict) -> list[str]:
        ids, prompts = self.prompts(documents)
        self.check_context([len(row) for row in ids], generate_kwargs["max_new_tokens"])
        pick = TokenPicker(self.model.generation_config, generate_kwargs, ids)
        new = self.decoder.generate(prompts, generate_kwargs["max_new_tokens"], pick)
        return [text.strip() for text in self.processor.batch_decode(new)]


def load_llamacpp(name: str, load: LoadSettings) -> tuple[LlamaCppBackend, LoadedModel]:
    """The engine for a model source: its GGUF decoder (`load.gguf`, default the folder's) and llama.cpp are
    checked before the encoder, read without the decoder, loads."""
    source = resolve_model_source(name)
    if not source.has_backbone:
        raise ModelLoadError("the llamacpp engine serves DeepSeek-OCR models; a seq2seq baseline runs on torch")
    try:
        import_llama_cpp()
        if load.gguf:
            path = Path(load.gguf)
            if not path.is_file():
                raise GgufError(f"GGUF file not found: {path}")
        elif source.path is None:
            raise GgufError(f"{name} has no GGUF files: export it with `python -m model.export --format gguf`, or "
                            "name a GGUF decoder with --gguf")
        else:
            path = decoder_gguf(source.path)
    except GgufError as err:
        raise ModelLoadError(str(err)) from None
    loaded = load_pretrained(source, load, vision_only=True)
    return LlamaCppBackend(loaded, path), loaded
