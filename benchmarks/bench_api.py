"""API server latency and throughput, micro-batching on and off, against real server processes on 127.0.0.1.

Two servers share the tiny-random folder: MAX_BATCH_SIZE=8 (batching on) and 1 (off). Latency:
sequential requests per endpoint, p50/p95. Throughput: 1, 8 and 32 concurrent clients sending text requests,
bounded in count and in time (a client stops at the deadline; its unfinished requests are not counted).

    python -m benchmarks.bench_api [--quick]
"""
from __future__ import annotations

import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from PIL import Image

from benchmarks.bench_generation import build_tiny_folder, documents
from benchmarks.cli import benchmark_main

ROOT = Path(__file__).resolve().parent.parent
MAX_LENGTH = 8


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


def _requests() -> dict[str, tuple[str, bytes | None, str | None]]:
    """Endpoint -> (path, body, content type), one representative request each."""
    text = documents(2)[1]
    page, pdf = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (400, 300), "white").save(page, format="PNG")
    Image.new("RGB", (300, 200), "white").save(pdf, format="PDF", resolution=72)
    return {
        "health": ("/health", None, None),
        "text": ("/summarize/text", json.dumps({"text": text, "max_length": MAX_LENGTH}).encode(), "application/json"),
        "file": ("/summarize/file", *_multipart(text.encode(), max_length=MAX_LENGTH)),
        "image": ("/summarize/image", *_multipart(page.getvalue(), max_length=MAX_LENGTH)),
        "pdf": ("/summarize/pdf", *_multipart(pdf.getvalue(), max_length=MAX_LENGTH)),
    }


def _send(port: int, path: str, body: bytes | None, content_type: str | None) -> float:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                     headers={"Content-Type": content_type} if content_type else {})
    began = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status}")
    return time.perf_counter() - began


class Server:
    def __init__(self, folder: Path, max_batch_size: int):
        self.port = _free_port()
        env = {**os.environ, "MODEL_PATH": str(folder), "PORT": str(self.port), "HOST": "127.0.0.1",
               "MAX_BATCH_SIZE": str(max_batch_size), "THREADS": "40", "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen([sys.executable, "-m", "inference.api_server"], cwd=ROOT, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                _send(self.port, "/health", None, None)
                return
            except OSError:
                time.sleep(0.5)
        self.close()
        raise RuntimeError("the server did not start")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _latency(port: int, batching: str, repeats: int) -> list[dict]:
    rows = []
    for endpoint, (path, body, content_type) in _requests().items():
        _send(port, path, body, content_type)  # warm-up: caches, first-call overheads
        times = [_send(port, path, body, content_type) * 1000 for _ in range(repeats)]
        rows.append({"bench": "api_latency", "batching": batching, "endpoint": endpoint, "requests": repeats,
                     "p50_ms": round(statistics.median(times), 1), "p95_ms": round(_percentile(times, 0.95), 1)})
    return rows


def _throughput(port: int, batching: str, clients: int, per_client: int, budget_s: float) -> dict:
    texts = documents(clients)
    done, lock = [], threading.Lock()
    deadline = time.monotonic() + budget_s

    def client(index: int) -> None:
        body = json.dumps({"text": texts[index], "max_length": MAX_LENGTH}).encode()
        for _ in range(per_client):
            if time.monotonic() > deadline:
                return
            latency = _send(port, "/summarize/text", body, "application/json")
            with lock:
                done.append(latency)

    began = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    return {"bench": "api_throughput", "batching": batching, "clients": clients, "requests": len(done),
            "seconds": round(seconds, 2), "req_per_s": round(len(done) / seconds, 2),
            "p50_ms": round(statistics.median(done) * 1000, 1) if done else None}


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


def main(argv=None) -> None:
    benchmark_main(run, __doc__, "fewer requests, 1 and 8 clients only", argv)


if __name__ == "__main__":
    main()
