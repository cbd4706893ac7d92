"""The API server under load, against real server processes on 127.0.0.1 serving the tiny-random folder.

    python -m benchmarks.bench_api [--quick]                     # latency and throughput, batching on vs off
    python -m benchmarks.bench_api --soak [--requests 5000] [--clients 8]
    python -m benchmarks.bench_api --overload [--seconds 30]

Latency and throughput (the default, also in `benchmarks.run_all`): two servers share the folder,
MAX_BATCH_SIZE=8 (batching on) and 1 (off). Latency: sequential requests per endpoint, p50/p95. Throughput: 1, 8
and 32 concurrent clients sending text requests, bounded in count and in time (a client stops at the deadline; its
unfinished requests are not counted).

Soak: one server takes a long mixed stream (text, file, image, PDF and bad requests in a fixed rotation) from
closed-loop clients, fewer than MAX_QUEUE: throughput, p50/p95/p99 latency per kind and overall, and the server
process's resident memory at the start, after the warm-up and at the end (goal: under 50 MB growth after the
warm-up over 5,000 requests).

Overload: the capacity is measured first (MAX_QUEUE closed-loop clients sending text requests), then requests
arrive open-loop (Poisson, each on its own connection) at 2x and 4x that rate: goodput (200s within REQUEST_TIMEOUT
per second) against the capacity, the 503s' latency, 504s and dropped connections (goals at 4x: goodput >= 90% of
capacity, every 503 within 100 ms, none dropped). Last, SIGTERM at 2x load: every request sent before the signal
must be answered, later ones are refused at connect, and the server exits 0.
"""
from __future__ import annotations

import argparse
import http.client
import io
import itertools
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import psutil
from PIL import Image

from benchmarks.bench_generation import build_tiny_folder, documents
from benchmarks.cli import table
from config.cli import Parser

ROOT = Path(__file__).resolve().parent.parent
MAX_LENGTH = 8
MAX_QUEUE = 16
DEADLINE_S = 10.0  # the servers' REQUEST_TIMEOUT under load: a 200 later than this does not count as goodput


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _multipart(data: bytes, **form) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in form.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n'.encode()
                 + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@dataclass(frozen=True)
class Call:
    kind: str
    path: str
    body: Optional[bytes] = None
    content_type: Optional[str] = None
    expected: int = 200


def _text(text: str) -> Call:
    return Call("text", "/summarize/text", json.dumps({"text": text, "max_length": MAX_LENGTH}).encode(),
                "application/json")


def _image_bytes(size: tuple[int, int], fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "white").save(buffer, format=fmt, **({"resolution": 72} if fmt == "PDF" else {}))
    return buffer.getvalue()


HEALTH = Call("health", "/health")


def _requests() -> dict[str, Call]:
    """Endpoint -> one representative request."""
    text = documents(2)[1]
    return {
        "health": HEALTH,
        "text": _text(text),
        "file": Call("file", "/summarize/file", *_multipart(text.encode(), max_length=MAX_LENGTH)),
        "image": Call("image", "/summarize/image", *_multipart(_image_bytes((400, 300), "PNG"), max_length=MAX_LENGTH)),
        "pdf": Call("pdf", "/summarize/pdf", *_multipart(_image_bytes((300, 200), "PDF"), max_length=MAX_LENGTH)),
    }


def _mixed_stream() -> list[Call]:
    """The soak's rotation of 20 requests: 8 text, 4 file, 3 image, 3 PDF, 2 bad (four kinds of bad in turn over
    two rotations), with varied texts and page sizes."""
    texts = documents(8)
    images = [_image_bytes(size, "PNG") for size in ((400, 300), (640, 480), (300, 500))]
    pdfs = [_image_bytes(size, "PDF") for size in ((300, 200), (595, 842), (420, 300))]
    bad = [Call("bad", "/summarize/text", b"{not json", "application/json", 400),
           Call("bad", "/summarize/text", json.dumps({"text": "hi", "top_k": 3}).encode(), "application/json", 400),
           Call("bad", "/summarize/image", *_multipart(b"plain text, not an image"), 400),
           Call("bad", "/summarize/text", b"text=hi", "text/plain", 415)]
    stream = []
    for rotation in range(2):
        stream += [_text(text) for text in texts]
        stream += [Call("file", "/summarize/file", *_multipart(texts[(i + rotation) % 8].encode(),
                                                               max_length=MAX_LENGTH)) for i in range(4)]
        stream += [Call("image", "/summarize/image", *_multipart(page, max_length=MAX_LENGTH)) for page in images]
        stream += [Call("pdf", "/summarize/pdf", *_multipart(pdf, max_length=MAX_LENGTH)) for pdf in pdfs]
        stream += bad[2 * rotation:2 * rotation + 2]
    return stream


@dataclass
class Outcome:
    kind: str
    status: Optional[int]  # None: no HTTP answer
    expected: int
    seconds: float
    sent_at: float  # time.monotonic() when the request started
    error: Optional[str] = None  # the exception's class name when there was no answer


def _call(port: int, call: Call, timeout: float = 300.0) -> Outcome:
    """One request on its own connection; never raises."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    began = time.monotonic()
    try:
        connection.request("POST" if call.body is not None else "GET", call.path, body=call.body,
                           headers={"Content-Type": call.content_type} if call.content_type else {})
        response = connection.getresponse()
        response.read()
        return Outcome(call.kind, response.status, call.expected, time.monotonic() - began, began)
    except (OSError, http.client.HTTPException) as err:
        return Outcome(call.kind, None, call.expected, time.monotonic() - began, began, type(err).__name__)
    finally:
        connection.close()


def _send(port: int, call: Call) -> float:
    outcome = _call(port, call)
    if outcome.status != 200:
        raise RuntimeError(f"{call.path}: {outcome.error or f'HTTP {outcome.status}'}")
    return outcome.seconds


class Server:
    def __init__(self, folder: Path, max_batch_size: int, **variables: str):
        self.port = _free_port()
        env = {**os.environ, "MODEL_PATH": str(folder), "PORT": str(self.port), "HOST": "127.0.0.1",
               "MAX_BATCH_SIZE": str(max_batch_size), "THREADS": "40", "PYTHONPATH": str(ROOT), **variables}
        self.process = subprocess.Popen([sys.executable, "-m", "inference.api_server"], cwd=ROOT, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.usage = psutil.Process(self.process.pid)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and self.process.poll() is None:
            if _call(self.port, HEALTH, timeout=10).status == 200:
                return
            time.sleep(0.5)
        self.close()
        raise RuntimeError("the server did not start")

    def rss_mib(self) -> float:
        return round(self.usage.memory_info().rss / 2**20, 1)

    def health(self) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("GET", "/health")
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(300)


def _percentile(values: list[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value * 1000, 1)


# ---------------------------------------------------------------------------------------------- latency, throughput

def _latency(port: int, batching: str, repeats: int) -> list[dict]:
    rows = []
    for endpoint, call in _requests().items():
        _send(port, call)  # warm-up: caches, first-call overheads
        times = [_send(port, call) * 1000 for _ in range(repeats)]
        rows.append({"bench": "api_latency", "batching": batching, "endpoint": endpoint, "requests": repeats,
                     "p50_ms": round(statistics.median(times), 1), "p95_ms": round(_percentile(times, 0.95), 1)})
    return rows


def _throughput(port: int, batching: str, clients: int, per_client: int, budget_s: float) -> dict:
    began = time.monotonic()
    outcomes = _closed_loop(port, [_text(text) for text in documents(clients)], clients, count=clients * per_client,
                            until=began + budget_s)
    seconds = time.monotonic() - began
    done = [o.seconds for o in outcomes if o.status == 200]
    return {"bench": "api_throughput", "batching": batching, "clients": clients, "requests": len(done),
            "seconds": round(seconds, 2), "req_per_s": round(len(done) / seconds, 2),
            "p50_ms": _ms(statistics.median(done)) if done else None}


def run(quick: bool = False) -> list[dict]:
    repeats, concurrency, per_client, budget = (3, (1, 8), 2, 60.0) if quick else (10, (1, 8, 32), 3, 120.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_folder(Path(tmp), MAX_LENGTH)
        # Both servers run side by side and each measurement is taken on one, then at once on the other, so a
        # change in the machine's load (shared CPUs) hits both settings alike.
        servers = {"on": Server(folder, 8), "off": Server(folder, 1)}
        try:
            for batching, server in servers.items():
                rows += _latency(server.port, batching, repeats)
            for clients in concurrency:
                rows += [_throughput(s.port, batching, clients, per_client, budget) for batching, s in servers.items()]
        finally:
            for server in servers.values():
                server.close()
    return rows


# ---------------------------------------------------------------------------------------------- load generators

def _closed_loop(port: int, calls: list[Call], clients: int, count: Optional[int],
                 until: Optional[float] = None) -> list[Outcome]:
    """`clients` threads, each sending its next request as soon as its last is answered, going round `calls`:
    `count` requests in all (None: no limit), none started after the time `until` (time.monotonic())."""
    numbers, lock, outcomes = itertools.count(), threading.Lock(), []

    def client() -> None:
        while until is None or time.monotonic() < until:
            with lock:
                number = next(numbers)
            if count is not None and number >= count:
                return
            outcome = _call(port, calls[number % len(calls)])
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def _open_loop(port: int, call: Call, rate: float, seconds: float, seed: int = 0,
               during=None) -> tuple[list[Outcome], float]:
    """Requests arriving at `rate` per second (Poisson) for `seconds`, each on its own connection whether or not
    the earlier ones were answered. `during` (optional) is called once, halfway. The outcomes and the rate
    actually offered."""
    arrivals, clock = [], random.Random(seed)
    moment = clock.expovariate(rate)
    while moment < seconds:
        arrivals.append(moment)
        moment += clock.expovariate(rate)
    # Enough workers that a slow answer never delays a later arrival: at most every request of 30 s in flight.
    with ThreadPoolExecutor(max_workers=min(len(arrivals), int(rate * 30)) + 1) as pool:
        futures, began, called = [], time.monotonic(), during is None
        for moment in arrivals:
            if not called and moment >= seconds / 2:
                called = True
                during()
            time.sleep(max(0.0, began + moment - time.monotonic()))
            futures.append(pool.submit(_call, port, call, DEADLINE_S + 30))
        offered = len(arrivals) / (time.monotonic() - began)
        return [future.result() for future in futures], offered


# ---------------------------------------------------------------------------------------------- soak

def _latency_row(name: str, outcomes: list[Outcome]) -> dict:
    times = [o.seconds for o in outcomes if o.status is not None]
    return {"bench": "api_soak", "kind": name, "requests": len(outcomes),
            "as_expected": sum(o.status == o.expected for o in outcomes),
            "no_answer": sum(o.status is None for o in outcomes),
            "p50_ms": _ms(_percentile(times, 0.5)), "p95_ms": _ms(_percentile(times, 0.95)),
            "p99_ms": _ms(_percentile(times, 0.99))}


def soak(requests: int, clients: int) -> list[dict]:
    stream = _mixed_stream()
    # The server's memory grows over its first thousand or so requests (buffers sized by the largest batches and
    # pages so far), then stays flat: the growth that counts is after the warm-up.
    warmup = max(len(stream), min(1000, requests // 5))
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(build_tiny_folder(Path(tmp), MAX_LENGTH), 8, MAX_QUEUE=str(MAX_QUEUE))
        try:
            rss_start = server.rss_mib()
            _closed_loop(server.port, stream, clients, count=warmup)
            rss_warm, peak, stop = server.rss_mib(), [0.0], threading.Event()

            def sample() -> None:
                while not stop.wait(0.5):
                    peak[0] = max(peak[0], server.rss_mib())

            sampler = threading.Thread(target=sample)
            sampler.start()
            began = time.monotonic()
            outcomes = _closed_loop(server.port, stream, clients, count=requests)
            seconds = time.monotonic() - began
            stop.set()
            sampler.join()
            rss_end = server.rss_mib()
            admission = server.health()["admission"]
        finally:
            server.close()
    rows = [_latency_row(kind, [o for o in outcomes if o.kind == kind])
            for kind in dict.fromkeys(call.kind for call in stream)]
    rows.append({**_latency_row("all", outcomes), "clients": clients, "seconds": round(seconds, 1),
                 "req_per_s": round(len(outcomes) / seconds, 2), "rejected_503": admission["rejected"],
                 "rss_start_mib": rss_start, "rss_after_warmup_mib": rss_warm, "rss_end_mib": rss_end,
                 "rss_peak_mib": max(peak[0], rss_end), "rss_growth_after_warmup_mib": round(rss_end - rss_warm, 1)})
    return rows


# ---------------------------------------------------------------------------------------------- overload

@dataclass
class _Usage:
    """What the server and this load generator had used by a moment: CPU seconds, batches and requests generated."""
    at: float
    server_cpu_s: float
    client_cpu_s: float
    batches: int
    generated: int


def _usage(server: Server) -> _Usage:
    cpu, batching = server.usage.cpu_times(), server.health()["batching"]
    return _Usage(time.monotonic(), cpu.user + cpu.system, time.process_time(), batching["batches"],
                  batching["requests"])


def _usage_columns(before: _Usage, after: _Usage) -> dict:
    """Where the time went between two moments: the mean batch size, and the CPU (100 = one core) of the server and
    of this load generator, which share the machine."""
    wall = after.at - before.at
    return {"mean_batch": round((after.generated - before.generated) / max(1, after.batches - before.batches), 2),
            "server_cpu_pct": round(100 * (after.server_cpu_s - before.server_cpu_s) / wall),
            "client_cpu_pct": round(100 * (after.client_cpu_s - before.client_cpu_s) / wall)}


def _overload_row(load: str, outcomes: list[Outcome], offered: float, capacity: float, seconds: float) -> dict:
    ok = [o.seconds for o in outcomes if o.status == 200]
    refused = [o.seconds for o in outcomes if o.status == 503]
    goodput = sum(t <= DEADLINE_S for t in ok) / seconds
    return {"bench": "api_overload", "load": load, "offered_req_per_s": round(offered, 1),
            "capacity_req_per_s": round(capacity, 1), "goodput_req_per_s": round(goodput, 1),
            "goodput_vs_capacity": round(goodput / capacity, 2), "answered_200": len(ok),
            "p50_ms_200": _ms(_percentile(ok, 0.5)), "p99_ms_200": _ms(_percentile(ok, 0.99)),
            "rejected_503": len(refused), "p50_ms_503": _ms(_percentile(refused, 0.5)),
            "p99_ms_503": _ms(_percentile(refused, 0.99)), "max_ms_503": _ms(max(refused, default=None)),
            "share_503_within_100ms": round(sum(t <= 0.1 for t in refused) / len(refused), 3) if refused else None,
            "timed_out_504": sum(o.status == 504 for o in outcomes),
            "other_status": sum(o.status not in (None, 200, 503, 504) for o in outcomes),
            "dropped": sum(o.status is None for o in outcomes)}


def _sigterm_row(outcomes: list[Outcome], signalled_at: float, exit_code: int, exited_at: float) -> dict:
    before = [o for o in outcomes if o.sent_at < signalled_at]
    after = [o for o in outcomes if o.sent_at >= signalled_at]
    return {"bench": "api_sigterm", "load": "2x", "sent_before_signal": len(before),
            "answered_before_signal": sum(o.status is not None for o in before),
            "dropped_before_signal": sum(o.status is None for o in before),
            "sent_after_signal": len(after), "refused_after_signal": sum(o.error == "ConnectionRefusedError"
                                                                          for o in after),
            "answered_after_signal": sum(o.status is not None for o in after),
            "dropped_after_signal": sum(o.status is None and o.error != "ConnectionRefusedError" for o in after),
            "dropped_errors": " ".join(sorted({o.error for o in outcomes
                                               if o.status is None and o.error != "ConnectionRefusedError"})),
            "exit_code": exit_code, "signal_to_exit_s": round(exited_at - signalled_at, 2)}


def overload(seconds: float) -> list[dict]:
    text = _text(documents(1)[0])
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(build_tiny_folder(Path(tmp), MAX_LENGTH), 8, MAX_QUEUE=str(MAX_QUEUE),
                        REQUEST_TIMEOUT=str(DEADLINE_S))
        try:
            # warm-up as long as a run: the first few hundred requests are slower (allocations, see soak)
            _closed_loop(server.port, [text], MAX_QUEUE, count=None, until=time.monotonic() + seconds)
            before = _usage(server)
            measured = _closed_loop(server.port, [text], MAX_QUEUE, count=None, until=before.at + seconds)
            after = _usage(server)
            capacity = sum(o.status == 200 for o in measured) / (after.at - before.at)
            ok = [o.seconds for o in measured if o.status == 200]
            rows = [{"bench": "api_overload", "load": f"capacity ({MAX_QUEUE} closed-loop clients)",
                     "goodput_req_per_s": round(capacity, 1), "answered_200": len(ok),
                     "p50_ms_200": _ms(_percentile(ok, 0.5)), "p99_ms_200": _ms(_percentile(ok, 0.99)),
                     **_usage_columns(before, after)}]
            for factor in (2, 4):
                before = _usage(server)
                outcomes, offered = _open_loop(server.port, text, factor * capacity, seconds, seed=factor)
                rows.append({**_overload_row(f"{factor}x", outcomes, offered, capacity, seconds),
                             **_usage_columns(before, _usage(server))})
            signalled, exited = [], []

            def terminate() -> None:
                signalled.append(time.monotonic())
                server.process.send_signal(signal.SIGTERM)
                watcher.start()

            watcher = threading.Thread(target=lambda: exited.append((server.process.wait(), time.monotonic())))
            outcomes, _ = _open_loop(server.port, text, 2 * capacity, seconds, seed=3, during=terminate)
            watcher.join(DEADLINE_S + 60)
            rows.append(_sigterm_row(outcomes, signalled[0], *exited[0]))
        finally:
            server.close()
    return rows


def main(argv=None) -> None:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes: fewer requests, shorter runs")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--soak", action="store_true", help="a long mixed stream: latency percentiles and server RSS")
    mode.add_argument("--overload", action="store_true", help="capacity, then 2x and 4x of it, then SIGTERM")
    parser.add_argument("--requests", type=int, default=None, help="soak requests after the warm-up "
                                                                   "(default 5000; 300 with --quick)")
    parser.add_argument("--clients", type=int, default=8, help=f"soak clients (fewer than MAX_QUEUE={MAX_QUEUE})")
    parser.add_argument("--seconds", type=float, default=None, help="overload: length of each run "
                                                                    "(default 30; 10 with --quick)")
    args = parser.parse_args(argv)
    if args.soak:
        rows = soak(args.requests or (300 if args.quick else 5000), args.clients)
    elif args.overload:
        rows = overload(args.seconds or (10.0 if args.quick else 30.0))
    else:
        rows = run(args.quick)
    print(table(rows))


if __name__ == "__main__":
    main()
