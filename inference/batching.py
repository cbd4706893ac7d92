"""Micro-batching: requests that arrive together share one generation call.

One worker thread owns the model. It takes the first waiting request, then collects more for up to `max_wait_s`
(or until `max_batch_size`), groups them by generation settings (only equal settings can share a `generate`
call) and runs each group as one batch. While a batch runs, new requests queue up and form the next batch, so
under load batches fill without waiting. Request threads wait on a `Future`; a request that gave up (timeout)
is cancelled and skipped if its batch has not started.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, Sequence

from config import GenerationSettings

logger = logging.getLogger(__name__)
_STOP = object()

RunBatch = Callable[[Sequence, GenerationSettings], list]


def _settings_key(settings: GenerationSettings) -> tuple:
    return dataclasses.astuple(dataclasses.replace(settings, batch_size=1))


class MicroBatcher:
    def __init__(self, run_batch: RunBatch, max_batch_size: int = 8, max_wait_s: float = 0.005):
        if max_batch_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size must be >= 1 and max_wait_s >= 0")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue = queue.Queue()
        self._stats_lock = threading.Lock()
        self._stats = {"requests": 0, "batches": 0, "largest_batch": 0}
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self._worker.start()

    def submit(self, document, settings: GenerationSettings) -> Future:
        """A Future of the document's result (or of the exception its generation raised)."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        future: Future = Future()
        self._queue.put((future, document, settings))
        return future

    def stats(self) -> dict:
        with self._stats_lock:
            return dict(self._stats, max_batch_size=self.max_batch_size, max_wait_ms=self.max_wait_s * 1000)

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued requests, then stop the worker."""
        self._closed = True
        self._queue.put(_STOP)
        self._worker.join(timeout)

    # ------------------------------------------------------------------------------------------ worker

    def _collect(self, first) -> tuple[list, bool]:
        pending, stopping = [first], False
        deadline = time.monotonic() + self.max_wait_s
        while len(pending) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:  # what is already queued is taken even after the deadline: it waited long enough
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stopping = True
                break
            pending.append(item)
        return pending, stopping

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            pending, stopping = self._collect(first)
            groups: dict[tuple, list] = {}
            for item in pending:
                if item[0].set_running_or_notify_cancel():  # False: the client stopped waiting
                    groups.setdefault(_settings_key(item[2]), []).append(item)
            for group in groups.values():
                self._run(group)
            if stopping:
                return

    def _run(self, group: list) -> None:
        settings = dataclasses.replace(group[0][2], batch_size=len(group))
        try:
            results = self.run_batch([document for _, document, _ in group], settings)
        except Exception as err:  # noqa: BLE001 - every waiting request must hear about the failure
            if len(group) > 1:
                # One document can spoil a batch; retried alone, the others still get their summaries.
                logger.warning("batch of %d failed (%s); retrying one at a time", len(group), err)
                for item in group:
                    self._run([item])
                return
            group[0][0].set_exception(err)
            return
        with self._stats_lock:
            self._stats["requests"] += len(group)
            self._stats["batches"] += 1
            self._stats["largest_batch"] = max(self._stats["largest_batch"], len(group))
        for (future, _, _), result in zip(group, results):
            future.set_result(result)
