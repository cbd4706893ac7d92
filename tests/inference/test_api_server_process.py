"""The real server: `python -m inference.api_server` in its own process on a free loopback port, over HTTP.

The README's curl requests (with the real curl when installed), every bad input as a 4xx, concurrent clients, a
client that hangs up before its turn (never generated), and SIGTERM with requests in flight (each answered, exit 0)."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.inference.test_api import image_bytes, pdf_bytes, png_header_only

ROOT = Path(__file__).resolve().parents[2]

# The server runs in its own process, started for the module and for the SIGTERM test.
pytestmark = pytest.mark.slow


class Client:
    def __init__(self, port: int):
        self.port = port

    def request(self, method, path, body=b"", headers=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def json(self, path, payload):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.request("POST", path, body, {"Content-Type": "application/json"})

    def upload(self, path, data: bytes, **form):
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in form.items()]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request("POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})


def start_server(model_dir, **variables) -> tuple[subprocess.Popen, Client]:
    """`python -m inference.api_server` on a free port, once /health answers."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "MODEL_PATH": str(model_dir),
           "PORT": str(port), **variables}
    env.pop("API_TOKEN", None)
    process = subprocess.Popen([sys.executable, "-m", "inference.api_server"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = Client(port)
    deadline = time.monotonic() + 240
    while True:
        if process.poll() is not None:
            pytest.fail(f"server exited: {process.stdout.read().decode()[-2000:]}")
        try:
            if client.request("GET", "/health")[0] == 200:
                return process, client
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("server did not start in time")
            time.sleep(0.5)


def health(client) -> dict:
    return json.loads(client.request("GET", "/health")[2])


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    process, client = start_server(tiny_model_dir, MAX_CONTENT_LENGTH="300000", MAX_PAGES="3", BATCH_WAIT_MS="20")
    yield client
    process.terminate()
    process.wait(30)


def test_readme_curl_requests(server, tmp_path):
    assert shutil.which("curl"), "curl is not installed: run `bash setup.sh --dev`"
    (tmp_path / "article.txt").write_text("A long article about the harbour and its boats. " * 20)
    (tmp_path / "document.png").write_bytes(image_bytes((300, 200)))
    base = f"http://localhost:{server.port}"
    commands = [  # the README's requests; max_length lowered from 128 to keep the tiny model quick
        ["curl", "-s", f"{base}/health"],
        ["curl", "-s", "-X", "POST", f"{base}/summarize/text", "-H", "Content-Type: application/json",
         "-d", '{"text": "Long document...", "max_length": 8}'],
        ["curl", "-s", "-X", "POST", f"{base}/summarize/file", "-F", "file=@article.txt", "-F", "max_length=8"],
        ["curl", "-s", "-X", "POST", f"{base}/summarize/image", "-F", "file=@document.png"],
    ]
    bodies = [json.loads(subprocess.run(c, cwd=tmp_path, capture_output=True, check=True, timeout=120).stdout)
              for c in commands]
    assert bodies[0]["status"] == "ok" and bodies[0]["model_loaded"] is True and bodies[0]["device"] == "cpu"
    assert all(isinstance(b["summary"], str) and b["request_id"] for b in bodies[1:])
    assert bodies[2]["pages"] >= 1 and bodies[2]["text_tokens"] > 0 and bodies[3]["text_tokens"] is None


def test_pdf_and_request_id_over_http(server):
    status, headers, body = server.upload("/summarize/pdf", pdf_bytes(), max_length="2")
    assert status == 200 and json.loads(body)["pages"] == 1
    assert headers["x-request-id"] == json.loads(body)["request_id"]


BAD = [
    ("invalid JSON", lambda c: c.json("/summarize/text", b"{oops"), 400),
    ("wrong content type", lambda c: c.request("POST", "/summarize/text", b"text", {"Content-Type": "text/plain"}), 415),
    ("missing text", lambda c: c.json("/summarize/text", {"max_length": 3}), 400),
    ("empty text", lambda c: c.json("/summarize/text", {"text": ""}), 400),
    ("text wrong type", lambda c: c.json("/summarize/text", {"text": ["a"]}), 400),
    ("max_length wrong type", lambda c: c.json("/summarize/text", {"text": "a", "max_length": "9"}), 400),
    ("max_length out of range", lambda c: c.json("/summarize/text", {"text": "a", "max_length": 9000}), 400),
    ("length_penalty out of range", lambda c: c.json("/summarize/text", {"text": "a", "length_penalty": 99}), 400),
    ("oversize body", lambda c: c.json("/summarize/text", {"text": "y" * 400_000}), 413),
    ("too many pages", lambda c: c.json("/summarize/text", {"text": "word " * 8000}), 413),
    ("empty upload", lambda c: c.upload("/summarize/image", b""), 400),
    ("non-image upload", lambda c: c.upload("/summarize/image", b"hello, I am text"), 400),
    ("truncated image", lambda c: c.upload("/summarize/image", image_bytes((300, 300), "JPEG")[:500]), 400),
    ("decompression bomb", lambda c: c.upload("/summarize/image", png_header_only(70000, 70000)), 413),
    ("non-UTF-8 text file", lambda c: c.upload("/summarize/file", "na\xefve".encode("latin-1")), 400),
    ("bad form number", lambda c: c.upload("/summarize/file", b"text", num_beams="two"), 400),
    ("corrupt PDF", lambda c: c.upload("/summarize/pdf", b"%PDF-1.4\n%%EOF"), 400),
    ("unknown endpoint", lambda c: c.request("GET", "/nope"), 404),
    ("wrong method", lambda c: c.request("PUT", "/summarize/text"), 405),
]


def test_every_bad_input_is_a_json_4xx_and_the_server_keeps_serving(server):
    codes = {}
    for case, send, expected in BAD:
        status, headers, body = send(server)
        payload = json.loads(body)
        assert (status, payload["status"]) == (expected, expected), (case, body)
        assert payload["error"] and headers["x-request-id"] == payload["request_id"] and b"Traceback" not in body
        codes[case] = status
    assert len(codes) == len(BAD) == 19 and all(400 <= code < 500 for code in codes.values())
    assert server.request("GET", "/health")[0] == 200


def test_concurrent_clients_all_answered_and_batched(server, summarizer):
    texts = [f"Item {i}. " + "Rain fell over the valley all week long. " * (2 + i) for i in range(16)]
    expected = {text: r.summary for text, r in zip(texts, summarizer.summarize_text(texts, max_length=3))}
    answers, lock = [], threading.Lock()

    def client(worker):
        for text in texts[worker::8]:
            status, _, body = server.json("/summarize/text", {"text": text, "max_length": 3})
            with lock:
                answers.append((text, status, json.loads(body)))

    threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert len(answers) == len(texts)  # none lost
    assert all(status == 200 and body["summary"] == expected[text] for text, status, body in answers)
    assert len({body["request_id"] for _, _, body in answers}) == len(texts)
    batching = json.loads(server.request("GET", "/health")[2])["batching"]
    assert batching["largest_batch"] > 1


def test_oversize_body_read_in_full_by_urllib_gets_the_json_413(server):
    """urllib sends the whole body before reading: it must still get the API's JSON answer, not a reset."""
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/summarize/text", method="POST",
                                     data=json.dumps({"text": "z" * 1_000_000}).encode(),
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=120)
    assert caught.value.code == 413
    body = json.loads(caught.value.read())
    assert body["status"] == 413 and "MAX_CONTENT_LENGTH" in body["error"] and body["request_id"]


def test_body_beyond_the_servers_buffer_limit_is_answered_in_json_at_once(server):
    """A declared length beyond what waitress buffers (8 x MAX_CONTENT_LENGTH here) is refused before the body is
    read, and that answer is JSON too."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(b"POST /summarize/text HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 50000000\r\n\r\n" + b"{" * 1000)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"application/json" in head
    assert json.loads(body)["status"] == 413
    assert server.request("GET", "/health")[0] == 200


def test_request_whose_client_hung_up_is_never_generated(server):
    before = health(server)
    answers = []
    # Busy for seconds, not for the moment a warm tiny model takes to write 80 tokens: two pages and room for
    # 1,500 tokens (its random weights rarely end early; a short answer only makes this test wait in vain).
    long = threading.Thread(target=lambda: answers.append(
        server.json("/summarize/text", {"text": "Keep the model busy. " * 60, "max_length": 1500})))
    long.start()
    wait_for(lambda: health(server)["admission"]["depth"] == 1)
    time.sleep(0.3)  # its batch has started: the next request waits for the one after
    body = json.dumps({"text": "Nobody will read this.", "max_length": 3}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(b"POST /summarize/text HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_for(lambda: health(server)["admission"]["depth"] == 2)
    long.join(120)
    assert answers[0][0] == 200
    wait_for(lambda: health(server)["admission"]["depth"] == 0)
    after = health(server)
    assert after["admission"]["client_gone"] - before["admission"]["client_gone"] == 1
    assert after["batching"]["client_gone"] - before["batching"]["client_gone"] == 1
    assert after["batching"]["requests"] - before["batching"]["requests"] == 1  # the long one only


def test_sigterm_answers_every_request_in_flight_and_exits_0(tiny_model_dir, summarizer):
    process, client = start_server(tiny_model_dir, MAX_BATCH_SIZE="1", BATCH_WAIT_MS="0")
    texts = [f"Document {i}: the river rose and the town prepared." for i in range(4)]
    # One at a time, as the server generates them: the seeded tiny model's greedy summaries, empty ones too.
    expected = {text: summarizer.summarize_text(text, max_length=40).summary for text in texts}
    answers, lock = {}, threading.Lock()

    def ask(text):
        status, _, body = client.json("/summarize/text", {"text": text, "max_length": 40})
        with lock:
            answers[text] = (status, json.loads(body))

    threads = [threading.Thread(target=ask, args=(text,)) for text in texts]
    for thread in threads:
        thread.start()
    wait_for(lambda: health(client)["admission"]["depth"] == len(texts))
    process.send_signal(signal.SIGTERM)

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", client.port), timeout=5).close()
            return False
        except ConnectionRefusedError:
            return True

    wait_for(refused, timeout=10)  # no longer listening...
    with lock:
        assert len(answers) < len(texts)  # ...while requests are still being generated
    for thread in threads:
        thread.join(120)
    assert process.wait(60) == 0, process.stdout.read().decode()[-3000:]
    assert sorted(answers) == sorted(texts)
    assert {text: (status, body["summary"]) for text, (status, body) in answers.items()} == {
        text: (200, summary) for text, summary in expected.items()}
    assert "SIGTERM: draining" in process.stdout.read().decode()
