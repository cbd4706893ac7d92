"""Micro-batching: requests that arrive together share one generation call.

One worker thread owns the model. It takes the first waiting request, then collects more for up to `max_wait_s`
(or until `max_batch_size`), groups them by generation settings (only equal settings can share a `generate`
call) and runs each group as one batch. While a batch runs, new requests queue up and form the next batch, so
under load batches fill without waiting. Request threads wait on a `Future`.

A request is never generated when, just before its group runs, its waiter has given up (the Future is cancelled),
its deadline has passed (RequestExpired) or its client has disconnected (ClientGone): the model's time goes to
requests someone still waits for.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, Optional, Sequence

from config import GenerationSettings

logger = logging.getLogger(__name__)
_STOP = object()
_EWMA = 0.2  # weight of the newest batch in the mean batch time (recent load, not the whole history)

RunBatch = Callable[[Sequence, GenerationSettings], list]


class RequestExpired(TimeoutError):
    """The request's deadline passed before its batch started; it was not generated."""


class ClientGone(ConnectionError):
    """The request's client disconnected before its batch started; it was not generated."""


@dataclasses.dataclass
class _Request:
    future: Future
    document: object
    settings: GenerationSettings
    deadline: float  # time.monotonic() after which nobody waits for the result
    gone: Optional[Callable[[], bool]]  # True once the client has disconnected


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
        self._stats = {"requests": 0, "batches": 0, "largest_batch": 0, "cancelled": 0, "expired": 0,
                       "client_gone": 0}
        self._batch_seconds = 0.0
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self._worker.start()

    def submit(self, document, settings: GenerationSettings, deadline: float = math.inf,
               gone: Optional[Callable[[], bool]] = None) -> Future:
        """A Future of the document's result (or of the exception its generation raised). `deadline`
        (time.monotonic()) and `gone` (a check of the client's connection) let the worker skip a request
        nobody waits for any more."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        future: Future = Future()
        self._queue.put(_Request(future, document, settings, deadline, gone))
        return future

    def stats(self) -> dict:
        with self._stats_lock:
            return dict(self._stats, queued=self._queue.qsize(), max_batch_size=self.max_batch_size,
                        max_wait_ms=self.max_wait_s * 1000, mean_batch_ms=round(self._batch_seconds * 1000, 1))

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
                groups.setdefault(_settings_key(item.settings), []).append(item)
            for group in groups.values():
                # Checked just before the group runs: earlier groups may have taken long enough for a wait to end.
                live = [item for item in group if self._claim(item)]
                if live:
                    self._run(live)
            if stopping:
                return

    def _claim(self, item: _Request) -> bool:
        """Mark the request running, or settle it without generating it (and count why)."""
        skip = None
        if time.monotonic() >= item.deadline:
            skip = "expired"
        elif item.gone is not None and item.gone():
            skip = "client_gone"
        if not item.future.set_running_or_notify_cancel():
            skip = "cancelled"  # its waiter gave up and cancelled the Future
        elif skip is not None:
            item.future.set_exception(RequestExpired() if skip == "expired" else ClientGone())
        if skip is not None:
            with self._stats_lock:
                self._stats[skip] += 1
        return skip is None

    def _run(self, group: list[_Request]) -> None:
        settings = dataclasses.replace(group[0].settings, batch_size=len(group))
        began = time.perf_counter()
        try:
            results = self.run_batch([item.document for item in group], settings)
        except Exception as err:  # noqa: BLE001 - every waiting request must hear about the failure
            if len(group) > 1:
                # One document can spoil a batch; retried alone, the others still get their summaries.
                logger.warning("batch of %d failed (%s); retrying one at a time", len(group), err)
                for item in group:
                    self._run([item])
                return
            group[0].future.set_exception(err)
            return
        seconds = time.perf_counter() - began
        with self._stats_lock:
            self._stats["requests"] += len(group)
            self._stats["batches"] += 1
            self._stats["largest_batch"] = max(self._stats["largest_batch"], len(group))
            self._batch_seconds = seconds if self._stats["batches"] == 1 else (
                _EWMA * seconds + (1 - _EWMA) * self._batch_seconds)
        for item, result in zip(group, results):
            item.future.set_result(result)
