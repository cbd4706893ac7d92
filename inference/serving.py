"""The production WSGI server (waitress) around the Flask app, with the API's JSON errors at every layer and a
graceful shutdown.

Waitress buffers a whole request body before the app sees it, and refuses bodies over its own limit with a
plain-text answer. Its limit is set well above the app's MAX_CONTENT_LENGTH, so a client that sends the whole body
before reading (Python's urllib) gets Flask's JSON 413 from the app; a body beyond even that is refused by waitress
at once, and that answer is JSON too (its error task is waitress's extension point for exactly this).

Shutdown: waitress has no drain of its own, so `serve` runs waitress's event loop itself. On SIGTERM or SIGINT it
stops listening (connections the kernel already completed are taken in and answered, not reset), tells the app to
refuse new requests (`on_drain`), keeps serving until every request it has taken is answered and sent (at most
REQUEST_TIMEOUT, the longest an admitted request waits), then returns. A second signal ends the wait.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import time
import uuid
from typing import Callable

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask

from inference.api_settings import ServerSettings

logger = logging.getLogger(__name__)
# Bodies up to this many times MAX_CONTENT_LENGTH are read (spooled to a temporary file by waitress) so the app can
# answer with JSON; beyond it, waitress answers without reading, as the JSON below.
WAITRESS_BODY_FACTOR = 8
# Seconds between the drain's checks whether every request has been answered and sent.
_DRAIN_POLL_S = 0.05
# Seconds the drain waits for a connection accepted but silent so far (just taken from the backlog) to send its
# request, which is then answered (503) rather than cut.
_SILENT_GRACE_S = 1.0
# glibc's mallopt parameter for the number of malloc arenas (malloc.h)
_M_ARENA_MAX = -8
_ARENAS = 2


def limit_malloc_arenas() -> None:
    """Let the process's threads share two glibc malloc arenas, unless MALLOC_ARENA_MAX says otherwise.

    By default glibc gives threads that allocate at once their own arena (up to 8 per core), and each grows to its
    own high-water mark: with dozens of request threads decoding and rendering pages, the server's resident memory
    kept creeping up with the number of requests; with two arenas it levels off (see benchmarks.bench_api --soak,
    which reports the server's memory over a long run). Call before the threads start. Other C libraries: nothing
    to do."""
    if "MALLOC_ARENA_MAX" in os.environ:  # glibc has read it at start-up
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_ARENA_MAX, _ARENAS)


class _JsonErrorTask(ErrorTask):
    def execute(self):
        error = self.request.error
        request_id = uuid.uuid4().hex
        message = {413: "request body is larger than the server accepts"}.get(error.code, error.reason)
        body = json.dumps({"error": f"{message} ({error.body})", "status": error.code,
                           "request_id": request_id}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"), ("X-Request-ID", request_id)])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _JsonErrorChannel(HTTPChannel):
    error_task_class = _JsonErrorTask


def serve(app, settings: ServerSettings, on_drain: Callable[[], None]) -> None:
    """Serve `app` until SIGTERM or SIGINT, then drain (see the module's docstring) and return."""
    # channel_request_lookahead: waitress keeps reading a connection while its request runs, so it notices a client
    # that hung up (the app's `waitress.client_disconnected`), and the batcher skips that request.
    server = create_server(app, host=settings.host, port=settings.port, threads=settings.threads,
                           ident="deepseek-summarizer", channel_request_lookahead=1,
                           max_request_body_size=WAITRESS_BODY_FACTOR * settings.max_content_length + 2**20)
    server.channel_class = _JsonErrorChannel
    received: list[int] = []

    def _on_signal(signum, _frame):  # only notes the signal: the event loop acts on it between two polls
        received.append(signum)
        server.pull_trigger()  # wakes the event loop (a write to its pipe: safe in a signal handler)

    previous = {signum: signal.signal(signum, _on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        _loop_until(server, lambda: bool(received), server.adj.asyncore_loop_timeout)
        logger.info("%s: draining", signal.Signals(received[0]).name)
        on_drain()
        _stop_listening(server)
        deadline = time.monotonic() + settings.request_timeout
        _loop_until(server, lambda: _idle(server) or len(received) > 1 or time.monotonic() > deadline,
                    _DRAIN_POLL_S)
        unanswered = sum(1 for channel in _channels(server) if channel.requests)
        if unanswered:
            logger.warning("%d request(s) unanswered at shutdown (REQUEST_TIMEOUT or a second signal)", unanswered)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        server.task_dispatcher.shutdown(timeout=1)


def _loop_until(server, done: Callable[[], bool], timeout: float) -> None:
    """Run the event loop until `done()`, checked after each poll (so input already arrived is read first)."""
    while True:
        wasyncore.loop(timeout=timeout, map=server._map, use_poll=server.adj.asyncore_use_poll, count=1)
        if done():
            return


def _stop_listening(server) -> None:
    """Close the listening socket, after taking in the connections the kernel has already completed (their clients
    get an answer, 503 while draining, instead of a reset)."""
    server.accepting = False
    while True:
        try:
            conn, addr = server.socket.accept()
        except OSError:  # BlockingIOError: no connection left in the backlog
            break
        server.set_socket_options(conn)
        server.channel_class(server, conn, server.fix_addr(addr), server.adj, map=server._map)
    server.del_channel()
    server.socket.close()


def _channels(server) -> list[HTTPChannel]:
    return list(server.active_channels.values())


def _idle(server) -> bool:
    """No request being received, run or queued, no answer left to send, and no new connection that may still send
    its first request."""
    now = time.time()  # waitress's clock for channels
    return not any(channel.request is not None or channel.requests or channel.total_outbufs_len
                   or (channel.last_activity == channel.creation_time and now - channel.creation_time < _SILENT_GRACE_S)
                   for channel in _channels(server))
