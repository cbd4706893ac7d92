"""The API app through Flask's test client: reference requests, every bad input as a 4xx JSON error, auth,
request ids, batching of concurrent requests, admission control (503 when full, deadlines), the OpenAPI
description, and errors that must not leak."""
import io
import logging
import struct
import threading
import time
import zlib

import pytest
from PIL import Image

from config import ConfigError
from inference.api_server import create_app
from inference.api_settings import ServerSettings
from inference.backends import Document
from inference.openapi import SPEC

LIMITS = dict(max_content_length=200_000, max_image_pixels=1_000_000, max_pages=2, batch_wait_ms=50)


def image_bytes(size=(64, 48), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "white").save(buffer, format=fmt)
    return buffer.getvalue()


def pdf_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (100, 60), "white").save(buffer, format="PDF", resolution=72)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but holds almost no data: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def upload(data: bytes, name="f", **form):
    return {"file": (io.BytesIO(data), name), **{k: str(v) for k, v in form.items()}}


@pytest.fixture(scope="module")
def app(summarizer):
    return create_app(summarizer, ServerSettings(**LIMITS))


@pytest.fixture()
def client(app):
    return app.test_client()


def test_reference_requests(client):
    health = client.get("/health")
    assert health.status_code == 200 and health.json["model_loaded"] is True and health.json["engine"] == "torch"
    assert health.json["device"] == "cpu" and "tiny-summarizer" in health.json["model_name"]
    text = client.post("/summarize/text", json={"text": "Long document...", "max_length": 3})
    assert text.status_code == 200 and isinstance(text.json["summary"], str)
    assert text.json["pages"] == 1 and text.json["vision_tokens"] == 64 and text.json["text_tokens"] > 0
    assert text.headers["X-Request-ID"] == text.json["request_id"]
    file = client.post("/summarize/file", data=upload("Long document in a file.".encode(), "a.txt", max_length=3))
    assert file.status_code == 200 and isinstance(file.json["summary"], str) and file.json["text_tokens"] > 0
    image = client.post("/summarize/image", data=upload(image_bytes(), "document.png"))
    assert image.status_code == 200 and image.json["text_tokens"] is None
    pdf = client.post("/summarize/pdf", data=upload(pdf_bytes(), "doc.pdf", dpi=72, max_length=2))
    assert pdf.status_code == 200 and pdf.json["pages"] == 1



@pytest.mark.parametrize("name", ["max_new_tokens", "max_length"])
@pytest.mark.parametrize("route", ["text", "file"])
def test_the_limit_bounds_the_generated_tokens(client, summarizer, generated, route, name):
    text = "The harbour reopened on Friday after a week of storms. Fishing boats left at dawn."
    for limit in (2, 7):  # the folder's own limit is 4
        if route == "text":
            answer = client.post("/summarize/text", json={"text": text, name: limit})
        else:  # a form field: text that the server converts
            answer = client.post("/summarize/file", data=upload(text.encode(), "a.txt", **{name: limit}))
        assert answer.status_code == 200, answer.json
        assert [len(row) for row in generated] == [limit]
        assert answer.json["summary"] == summarizer.backend.processor.batch_decode(generated)[0].strip()
        generated.clear()


@pytest.mark.parametrize("route", ["text", "file"])
def test_max_new_tokens_and_max_length_together(client, route):
    def ask(**params):
        if route == "text":
            return client.post("/summarize/text", json={"text": "A short note.", **params})
        return client.post("/summarize/file", data=upload(b"A short note.", "a.txt", **params))

    assert ask(max_new_tokens=3, max_length=3).status_code == 200  # one value under both names
    refused = ask(max_new_tokens=3, max_length=5)
    assert refused.status_code == 400
    assert refused.json["error"] == "'max_new_tokens' (3) and 'max_length' (5) name one setting; give one of them"

def test_incoming_request_id_is_kept_and_bad_ones_replaced(client):
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).json["request_id"] == "abc-123"
    replaced = client.get("/health", headers={"X-Request-ID": "bad id; <script>"})
    assert replaced.json["request_id"] != "bad id; <script>" and len(replaced.json["request_id"]) == 32


BAD_REQUESTS = [
    ("invalid JSON", "post", "/summarize/text", dict(data="{not json", content_type="application/json"), 400),
    ("JSON not an object", "post", "/summarize/text", dict(json=["text"]), 400),
    ("wrong content type", "post", "/summarize/text", dict(data="text=hi", content_type="text/plain"), 415),
    ("missing text", "post", "/summarize/text", dict(json={"max_length": 5}), 400),
    ("empty text", "post", "/summarize/text", dict(json={"text": "  \n "}), 400),
    ("text wrong type", "post", "/summarize/text", dict(json={"text": 123}), 400),
    ("max_length wrong type", "post", "/summarize/text", dict(json={"text": "hi", "max_length": "long"}), 400),
    ("max_length bool", "post", "/summarize/text", dict(json={"text": "hi", "max_length": True}), 400),
    ("max_length out of range", "post", "/summarize/text", dict(json={"text": "hi", "max_length": 100000}), 400),
    ("num_beams out of range", "post", "/summarize/text", dict(json={"text": "hi", "num_beams": 0}), 400),
    ("temperature out of range", "post", "/summarize/text", dict(json={"text": "hi", "temperature": -1}), 400),
    ("unknown field", "post", "/summarize/text", dict(json={"text": "hi", "top_k": 3}), 400),
    ("too many pages", "post", "/summarize/text", dict(json={"text": "word " * 6000}), 413),
    ("oversize body", "post", "/summarize/text", dict(json={"text": "x" * 300_000}), 413),
    ("file: JSON instead of multipart", "post", "/summarize/file", dict(json={"text": "hi"}), 415),
    ("file: no file field", "post", "/summarize/file", dict(data={"max_length": "5"}, content_type="multipart/form-data"), 400),
    ("file: empty upload", "post", "/summarize/file", dict(data=upload(b"")), 400),
    ("file: not UTF-8", "post", "/summarize/file", dict(data=upload("caf\xe9".encode("latin-1"))), 400),
    ("file: form field wrong type", "post", "/summarize/file", dict(data=upload(b"hi", max_length="abc")), 400),
    ("file: unknown form field", "post", "/summarize/file", dict(data=upload(b"hi", colour="red")), 400),
    ("image: empty upload", "post", "/summarize/image", dict(data=upload(b"")), 400),
    ("image: not an image", "post", "/summarize/image", dict(data=upload(b"GIF89a? no, plain text")), 400),
    ("image: truncated", "post", "/summarize/image", dict(data=upload(image_bytes((200, 200), "JPEG")[:400])), 400),
    ("image: over the pixel limit", "post", "/summarize/image", dict(data=upload(image_bytes((1200, 1000)))), 413),
    ("image: decompression bomb", "post", "/summarize/image", dict(data=upload(png_header_only(60000, 60000))), 413),
    ("image: out-of-range max_length", "post", "/summarize/image", dict(data=upload(image_bytes(), max_length=0)), 400),
    ("pdf: not a PDF", "post", "/summarize/pdf", dict(data=upload(b"%PDF-1.7 but not really")), 400),
    ("pdf: dpi out of range", "post", "/summarize/pdf", dict(data=upload(pdf_bytes(), dpi=5000)), 400),
    ("unknown endpoint", "get", "/summarize/video", {}, 404),
    ("wrong method", "get", "/summarize/text", {}, 405),
]


@pytest.mark.parametrize("case, method, path, kwargs, status", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_json_4xx(client, case, method, path, kwargs, status):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.json
    assert body["status"] == status and body["error"] and body["request_id"] == response.headers["X-Request-ID"]
    assert "Traceback" not in response.get_data(as_text=True)


def test_server_keeps_serving_after_bad_requests(client):
    for _, method, path, kwargs, _ in BAD_REQUESTS[:5]:
        getattr(client, method)(path, **kwargs)
    assert client.post("/summarize/text", json={"text": "still here", "max_length": 2}).status_code == 200


def test_bearer_token(summarizer):
    client = create_app(summarizer, ServerSettings(api_token="s3cret", **LIMITS)).test_client()
    assert client.get("/health").status_code == 200  # health needs no token
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        response = client.post("/summarize/text", json={"text": "hi"}, headers=headers)
        assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
        assert "s3cret" not in response.get_data(as_text=True)
    assert client.get("/openapi.json").status_code == 401
    ok = client.post("/summarize/text", json={"text": "hi", "max_length": 2},
                     headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200


def test_no_model_is_503_and_health_says_so():
    client = create_app(None, ServerSettings()).test_client()
    health = client.get("/health").json
    assert health["model_loaded"] is False and health["device"] is None
    response = client.post("/summarize/text", json={"text": "hi"})
    assert response.status_code == 503 and response.json["error"] == "no model is loaded"


class _Failing:
    """A summarizer whose generation fails or hangs, to check what reaches the client."""
    name, model_type, device, engine, gguf = "stub", "deepseek-ocr", "cpu", "torch", None

    def __init__(self, delay=0.0):
        from config import GenerationSettings
        self.generation, self.delay = GenerationSettings(), delay

    def prepare_text(self, text, max_pages=None):
        return Document(text=text)

    def summarize_documents(self, documents, settings):
        time.sleep(self.delay)
        raise RuntimeError("secret internal detail at /srv/model.py line 12")


def test_internal_error_is_500_without_details():
    response = create_app(_Failing(), ServerSettings()).test_client().post("/summarize/text", json={"text": "hi"})
    assert response.status_code == 500 and "secret" not in response.get_data(as_text=True)
    assert response.json["request_id"] in response.json["error"]


def test_slow_generation_is_504():
    client = create_app(_Failing(delay=1.0), ServerSettings(request_timeout=0.2)).test_client()
    response = client.post("/summarize/text", json={"text": "hi"})
    assert response.status_code == 504 and "longer than 0.2 s" in response.json["error"]


class _Gated:
    """A stand-in summarizer whose generation waits for the test's go-ahead, recording what it prepares and
    generates, to hold the queue full for as long as a test needs."""
    name, model_type, device, engine, gguf = "gated", "deepseek-ocr", "cpu", "llamacpp", "model-q8_0.gguf"

    def __init__(self):
        from config import GenerationSettings
        self.generation, self.gate = GenerationSettings(), threading.Event()
        self.prepared, self.generated = [], []

    def prepare_text(self, text, max_pages=None):
        self.prepared.append(text)
        return Document(text=text)

    def summarize_documents(self, documents, settings):
        self.gate.wait(30)
        self.generated += [document.text for document in documents]
        from inference.summarizer import SummaryResult
        return [SummaryResult(summary=f"summary of {d.text}", pages=1, vision_tokens=None, text_tokens=None,
                              compression_ratio=None, seconds=0.0) for d in documents]


def in_thread(client, path, **kwargs):
    """Send a request from another thread; the answer is `box[0]` once `thread` has ended."""
    box = []
    thread = threading.Thread(target=lambda: box.append(client.post(path, **kwargs)))
    thread.start()
    return thread, box


def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_full_queue_is_503_with_retry_after_before_the_body_is_read():
    model = _Gated()
    app = create_app(model, ServerSettings(max_queue=2, batch_wait_ms=0))
    client, admission = app.test_client(), app.extensions["admission"]
    held = [in_thread(app.test_client(), "/summarize/text", json={"text": f"held {i}"}) for i in range(2)]
    wait_for(lambda: admission.depth == 2)
    refused = [client.post("/summarize/text", json={"text": "one too many"}),
               client.post("/summarize/text", data="{not json", content_type="application/json"),
               client.post("/summarize/image", data=upload(b"not even an image"))]
    for response in refused:  # 503, not 400: the body was never looked at
        assert response.status_code == 503 and response.json["status"] == 503, response.json
        assert "capacity" in response.json["error"] and response.json["request_id"]
        assert int(response.headers["Retry-After"]) >= 1
    assert "one too many" not in model.prepared
    assert client.get("/health").json["admission"]["depth"] == 2  # health is not a summarize request
    model.gate.set()
    for thread, box in held:
        thread.join(30)
        assert box[0].status_code == 200
    assert client.post("/summarize/text", json={"text": "after"}).status_code == 200  # places are given back
    counts = client.get("/health").json["admission"]
    assert counts == {"limit": 2, "depth": 0, "accepted": 3, "rejected": 3, "timed_out": 0, "client_gone": 0,
                      "draining": False}


def test_full_queue_with_the_real_model(summarizer, generated, monkeypatch):
    # The first request holds the queue until the refusal is seen, however fast the model would have been.
    gate, backend_generate = threading.Event(), summarizer.backend.generate
    monkeypatch.setattr(summarizer.backend, "generate", lambda *args: gate.wait(30) and backend_generate(*args))
    app = create_app(summarizer, ServerSettings(max_queue=1, **LIMITS))
    client = app.test_client()
    thread, box = in_thread(app.test_client(), "/summarize/text", json={"text": "A long wait.", "max_length": 6})
    wait_for(lambda: app.extensions["admission"].depth == 1)
    refused = client.post("/summarize/text", json={"text": "Me too.", "max_length": 2})
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
    gate.set()
    thread.join(120)
    assert box[0].status_code == 200 and [len(row) for row in generated] == [6]
    assert box[0].json["summary"] == summarizer.backend.processor.batch_decode(generated)[0].strip()
    assert client.post("/summarize/text", json={"text": "Me too.", "max_length": 2}).status_code == 200


def test_health_names_the_engine_and_its_gguf_file(client):
    assert (client.get("/health").json["engine"], client.get("/health").json["gguf"]) == ("torch", None)
    health = create_app(_Gated(), ServerSettings()).test_client().get("/health").json
    assert (health["engine"], health["gguf"]) == ("llamacpp", "model-q8_0.gguf")
    assert set(SPEC["components"]["schemas"]["Health"]["properties"]) == set(health)
    health = create_app(None, ServerSettings()).test_client().get("/health").json
    assert (health["engine"], health["gguf"]) == (None, None)


@pytest.mark.parametrize("engine", ["torch", "llamacpp"])
def test_startup_line_names_the_engine_and_its_gguf_file(summarizer, monkeypatch, caplog, engine):
    from inference import api_server, serving
    from inference.summarizer import DeepSeekSummarizer

    served = summarizer if engine == "torch" else _Gated()
    monkeypatch.setenv("MODEL_PATH", "the-model")
    for name in ("PORT", "HOST", "ENGINE", "GGUF"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(DeepSeekSummarizer, "from_pretrained", staticmethod(lambda name, load=None: served))
    # Everything main does but listen, and nothing that outlives the test (malloc arenas, a frozen heap).
    monkeypatch.setattr(serving, "serve", lambda app, settings, on_drain: None)
    monkeypatch.setattr(serving, "limit_malloc_arenas", lambda: None)
    monkeypatch.setattr(api_server.gc, "freeze", lambda: None)
    with caplog.at_level(logging.INFO, logger="inference.api_server"):
        assert api_server.main() == 0
    named = "engine torch, gguf None" if engine == "torch" else "engine llamacpp, gguf model-q8_0.gguf"
    assert f"model on cpu, {named}; serving on http://127.0.0.1:5000" in caplog.messages


def test_request_past_its_deadline_is_504_and_never_generated():
    model = _Gated()
    app = create_app(model, ServerSettings(max_batch_size=1, batch_wait_ms=0, request_timeout=0.5))
    first = in_thread(app.test_client(), "/summarize/text", json={"text": "first"})
    wait_for(lambda: app.extensions["admission"].depth == 1)
    second = in_thread(app.test_client(), "/summarize/text", json={"text": "second"})  # waits behind "first"
    for thread, box in (first, second):
        thread.join(30)
        assert box[0].status_code == 504 and "longer than 0.5 s" in box[0].json["error"]
    model.gate.set()  # "first" was already being generated; "second" must never be
    wait_for(lambda: app.extensions["batcher"].stats()["requests"] >= 1)
    app.extensions["batcher"].close(10)
    assert model.generated == ["first"]
    health = app.test_client().get("/health").json
    assert health["admission"]["timed_out"] == 2 and health["admission"]["depth"] == 0
    assert health["batching"]["cancelled"] + health["batching"]["expired"] == 1


def test_concurrent_requests_are_batched_and_match_one_at_a_time(app, summarizer):
    texts = [f"Report number {i}: " + "the harvest was good this year. " * (3 + 5 * i) for i in range(6)]
    expected = [r.summary for r in summarizer.summarize_text(texts, max_length=3)]
    before = app.extensions["batcher"].stats()
    answers = [None] * len(texts)
    barrier = threading.Barrier(len(texts))

    def ask(i):
        client = app.test_client()
        barrier.wait()
        answers[i] = client.post("/summarize/text", json={"text": texts[i], "max_length": 3})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [a.status_code for a in answers] == [200] * len(texts)
    assert [a.json["summary"] for a in answers] == expected
    after = app.extensions["batcher"].stats()
    assert after["requests"] - before["requests"] == len(texts)
    assert after["batches"] - before["batches"] < len(texts) and after["largest_batch"] > 1


def test_openapi_describes_exactly_the_routes(client):
    spec = client.get("/openapi.json").json
    assert spec == SPEC and spec["openapi"].startswith("3.")
    served = {}
    for rule in client.application.url_map.iter_rules():
        if rule.endpoint != "static":
            served.setdefault(rule.rule, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    assert served == {path: set(ops) for path, ops in spec["paths"].items()}


def test_settings_from_environment():
    settings = ServerSettings.from_env({"PORT": "6001", "API_TOKEN": "tok", "REQUEST_TIMEOUT": "7.5", "HOST": ""})
    assert (settings.host, settings.port, settings.request_timeout) == ("127.0.0.1", 6001, 7.5)
    assert settings.max_content_length == 20 * 2**20 and settings.max_image_pixels == 40_000_000
    assert "tok" not in repr(settings)
    with pytest.raises(ConfigError, match="^environment variable PORT must be an integer, got 'five thousand'$"):
        ServerSettings.from_env({"PORT": "five thousand"})
    with pytest.raises(ConfigError, match="environment variable MAX_BATCH_SIZE: input should be greater than or "
                                          "equal to 1, got 0"):
        ServerSettings.from_env({"MAX_BATCH_SIZE": "0"})
    assert ServerSettings.from_env({"MAX_QUEUE": "4"}).max_queue == 4
    with pytest.raises(ConfigError, match=r"environment variable MAX_QUEUE \(16\) must be less than environment "
                                          r"variable THREADS \(8\)"):
        ServerSettings.from_env({"THREADS": "8"})


def test_server_without_model_path_exits_with_one_line(monkeypatch, capsys):
    from inference import api_server

    monkeypatch.delenv("MODEL_PATH", raising=False)
    assert api_server.main() == 2
    assert capsys.readouterr().err == "error: no model: set MODEL_PATH to a trained summarizer folder\n"


def test_openapi_generation_parameters_are_the_ones_the_server_enforces(client):
    """Schema and validation come from one declaration: every documented bound is the one that rejects."""
    properties = client.get("/openapi.json").json["paths"]["/summarize/text"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]
    assert set(properties) == {"text", "max_new_tokens", "max_length", "num_beams", "temperature", "length_penalty",
                               "no_repeat_ngram_size", "no_repeat_ngram_window", "long_documents"}
    assert properties["long_documents"]["enum"] == ["auto", "fit", "hierarchical", "truncate", "error"]
    answer = client.post("/summarize/text", json={"text": "hi", "long_documents": "squeeze"})
    assert answer.status_code == 400 and "long_documents" in answer.json["error"]
    for name in ("max_new_tokens", "max_length"):  # one setting, two names
        assert (properties[name]["minimum"], properties[name]["maximum"]) == (1, 8192)
    assert properties["max_length"]["description"].startswith("max_new_tokens by the reference README's name")
    for name, schema in properties.items():
        if name in ("text", "long_documents"):
            continue
        assert schema["description"]
        step = 1 if schema["type"] == "integer" else 0.5
        for outside in (schema["minimum"] - step, schema["maximum"] + step):
            answer = client.post("/summarize/text", json={"text": "hi", name: outside})
            assert answer.status_code == 400 and name in answer.json["error"], (name, outside, answer.json)
