"""Admission control: how many summarize requests the server holds at once, and what became of them.

A request is admitted before its body is decoded or its pages rendered, and holds its place until it is answered
(read, rendered, queued, generated). When `limit` requests are held, the next one is refused at once (the API
answers 503 with Retry-After) instead of waiting behind work the server cannot finish in time. When the server
drains for shutdown, every new request is refused and the held ones finish.
"""
from __future__ import annotations

import threading


class Admission:
    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._lock = threading.Lock()
        self._depth = 0
        self._closed = False
        self._counts = {"accepted": 0, "rejected": 0, "timed_out": 0, "client_gone": 0}

    def enter(self) -> bool:
        """Take a place; False (and counted as rejected) when all are taken or the server is draining."""
        with self._lock:
            admitted = not self._closed and self._depth < self.limit
            self._depth += admitted
            self._counts["accepted" if admitted else "rejected"] += 1
            return admitted

    def leave(self) -> None:
        with self._lock:
            self._depth -= 1

    def count(self, outcome: str) -> None:
        """Record how an admitted request ended without a summary: "timed_out" or "client_gone"."""
        with self._lock:
            self._counts[outcome] += 1

    def close(self) -> None:
        """Refuse every request from now on (the server is draining)."""
        with self._lock:
            self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def depth(self) -> int:
        return self._depth

    def stats(self) -> dict:
        with self._lock:
            return {"limit": self.limit, "depth": self._depth, **self._counts, "draining": self._closed}
