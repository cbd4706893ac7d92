"""The summarization API: a Flask app served by waitress, configured by environment variables.

    MODEL_PATH=./deepseek-summarizer python -m inference.api_server

Every response is JSON with a request id (also the `X-Request-ID` header). Bad input is a 4xx with a message;
no traceback reaches a client. One worker thread owns the model and micro-batches concurrent requests
(inference/batching.py); request threads only decode and render their input and wait for the result.

Admission control (inference/admission.py): at most MAX_QUEUE summarize requests are held at once, each from before
its body is decoded until it is answered; the next one gets 503 with Retry-After at once. Admission sits in front
of Flask (a WSGI middleware): under overload the refusals compete with the model for the interpreter, so they
cost no Flask request, no routing and no parsing. A request's deadline (REQUEST_TIMEOUT from its admission) and its
client's connection are checked before its batch starts, so the model never works for a request nobody waits for.
On SIGTERM or SIGINT the server drains (inference/serving.py).
"""
from __future__ import annotations

import concurrent.futures
import gc
import hmac
import json
import logging
import math
import re
import sys
import time
import uuid
from typing import Optional

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

from config import ConfigError, GenerationSettings, UserError
from config.cli import USAGE_ERROR, first_line
from config.errors import USER_ERRORS
from inference.admission import Admission
from inference.api_settings import ServerSettings
from inference.batching import ClientGone, MicroBatcher
from inference.inputs import (
    DEFAULT_PDF_DPI,
    GENERATION_PARAMS,
    apply_generation_params,
    decode_text,
    form_value,
)
from inference.openapi import SPEC

logger = logging.getLogger("inference.api_server")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SUMMARIZE = frozenset({"summarize_text", "summarize_file", "summarize_image", "summarize_pdf"})
_ADMITTED = "summarizer.admitted"  # WSGI environ key: time.monotonic() when the request was admitted
# nginx's code for "client closed request": logged, never received
_CLIENT_GONE = 499


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _request_id(incoming: str) -> str:
    """The client's X-Request-ID when it is a safe token, else a new one."""
    return incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex


def _error(status: int, message: str):
    response = jsonify(error=message, status=status, request_id=g.get("request_id", ""))
    response.status_code = status
    return response


# ---------------------------------------------------------------------------------------------- request parsing

def _json_body() -> dict:
    if not request.is_json:
        raise ApiError(415, "Content-Type must be application/json")
    try:
        body = json.loads(request.get_data(cache=True))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, f"request body is not valid JSON ({err})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object such as {\"text\": \"...\"}")
    unknown = sorted(set(body) - {"text", *GENERATION_PARAMS})
    if unknown:
        raise ApiError(400, f"unknown field '{unknown[0]}' (known: text, {', '.join(GENERATION_PARAMS)})")
    return body


def _upload() -> tuple[bytes, dict]:
    """The multipart 'file' and the form's generation parameters (and dpi), converted."""
    if request.mimetype != "multipart/form-data":
        raise ApiError(415, "Content-Type must be multipart/form-data with a 'file' field")
    upload = request.files.get("file")
    if upload is None:
        raise ApiError(400, "multipart field 'file' is missing")
    data = upload.read()
    if not data:
        raise ApiError(400, "uploaded file is empty")
    unknown = sorted(set(request.form) - {*GENERATION_PARAMS, "dpi"})
    if unknown:
        raise ApiError(400, f"unknown form field '{unknown[0]}'")
    params = {name: form_value(name, value) for name, value in request.form.items() if name != "dpi"}
    if "dpi" in request.form:
        try:
            params["dpi"] = int(request.form["dpi"])
        except ValueError:
            raise ApiError(400, f"form field 'dpi' must be an integer, got {request.form['dpi'][:40]!r}") from None
    return data, params


# ---------------------------------------------------------------------------------------------- app

def create_app(summarizer=None, settings: Optional[ServerSettings] = None) -> Flask:
    """The app around `summarizer` (None: no model, summarize endpoints answer 503)."""
    settings = settings or ServerSettings()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length
    app.json.sort_keys = False
    batcher = None
    if summarizer is not None:
        batcher = MicroBatcher(summarizer.summarize_documents, settings.max_batch_size, settings.batch_wait_ms / 1000)
    admission = Admission(settings.max_queue)
    app.extensions.update(summarizer=summarizer, batcher=batcher, admission=admission)
    token = settings.api_token.encode() if settings.api_token else None

    @app.before_request
    def _start():
        g.request_id = _request_id(request.headers.get("X-Request-ID", ""))
        g.started = time.perf_counter()
        if token is not None and request.path != "/health":
            header = request.headers.get("Authorization", "")
            given = header[7:].encode() if header.startswith("Bearer ") else b""
            if not hmac.compare_digest(given, token):
                response = _error(401, "missing or wrong bearer token")
                response.headers["WWW-Authenticate"] = "Bearer"
                return response

    @app.after_request
    def _finish(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        elapsed = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        logger.info("%s %s %s -> %d (%.0f ms)", g.get("request_id", "-"), request.method, request.path,
                    response.status_code, elapsed)
        return response

    @app.errorhandler(ApiError)
    @app.errorhandler(UserError)
    def _bad_input(err):  # InputError and ApiError carry their status; any other user error is the request's
        return _error(getattr(err, "status", 400), first_line(err))

    @app.errorhandler(HTTPException)
    def _http(err):
        if err.code == 413:
            return _error(413, f"request body is larger than MAX_CONTENT_LENGTH ({settings.max_content_length} bytes)")
        return _error(err.code or 500, err.description or err.name)

    @app.errorhandler(Exception)
    def _internal(err):
        logger.exception("%s: unhandled error", g.get("request_id", "-"))
        return _error(500, f"internal error; quote request id {g.get('request_id', '')} when reporting it")

    def _summarize(document, params: dict):
        settings_ = apply_generation_params(summarizer.generation, **params)
        deadline = request.environ[_ADMITTED] + settings.request_timeout
        # waitress (with channel_request_lookahead) tells whether the client is still connected
        future = batcher.submit(document, settings_, deadline, request.environ.get("waitress.client_disconnected"))
        try:
            result = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:  # the waiter's timeout, or RequestExpired from the batcher
            future.cancel()
            admission.count("timed_out")
            raise ApiError(504, f"generation took longer than {settings.request_timeout:g} s") from None
        except ClientGone:
            admission.count("client_gone")
            raise ApiError(_CLIENT_GONE, "the client closed the connection") from None
        return jsonify(request_id=g.request_id, **result.to_dict(), model=summarizer.name)

    def _require_model():
        if summarizer is None:
            raise ApiError(503, "no model is loaded")
        return summarizer

    @app.get("/health")
    def health():
        return jsonify(status="draining" if admission.closed else "ok", model_loaded=summarizer is not None,
                       model_name=summarizer.name if summarizer else None,
                       model_type=summarizer.model_type if summarizer else None,
                       device=str(summarizer.device) if summarizer else None,
                       engine=summarizer.engine if summarizer else None,
                       gguf=summarizer.gguf if summarizer else None,
                       admission=admission.stats(), batching=batcher.stats() if batcher else None,
                       request_id=g.request_id)

    @app.get("/openapi.json")
    def openapi():
        return jsonify(SPEC)

    @app.post("/summarize/text")
    def summarize_text():
        body = _json_body()
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "field 'text' is required and must be a non-empty string")
        params = {name: body[name] for name in GENERATION_PARAMS if body.get(name) is not None}
        # Bad values fail before rendering.
        apply_generation_params(summarizer.generation if summarizer else GenerationSettings(), **params)
        return _summarize(_require_model().prepare_text(text, settings.max_pages), params)

    @app.post("/summarize/file")
    def summarize_file():
        data, params = _upload()
        params.pop("dpi", None)
        return _summarize(_require_model().prepare_text(decode_text(data), settings.max_pages), params)

    @app.post("/summarize/image")
    def summarize_image():
        data, params = _upload()
        params.pop("dpi", None)
        return _summarize(_require_model().prepare_image(data, settings.max_image_pixels), params)

    @app.post("/summarize/pdf")
    def summarize_pdf():
        data, params = _upload()
        dpi = params.pop("dpi", DEFAULT_PDF_DPI)
        document = _require_model().prepare_pdf(data, dpi, settings.max_image_pixels, settings.max_pages)
        return _summarize(document, params)

    summarize_paths = frozenset(rule.rule for rule in app.url_map.iter_rules() if rule.endpoint in _SUMMARIZE)
    flask_app = app.wsgi_app

    def _refuse(environ, start_response):
        request_id = _request_id(environ.get("HTTP_X_REQUEST_ID", ""))
        if admission.closed:
            message, retry_after = "the server is shutting down", 1
        else:
            message = f"the server is at capacity ({settings.max_queue} requests held); retry later"
            # the time for the requests already held to go through the model, in whole seconds
            batch_seconds = batcher.stats()["mean_batch_ms"] / 1000 if batcher else 0.0
            retry_after = max(1, math.ceil(batch_seconds * admission.depth / settings.max_batch_size))
        body = json.dumps({"error": message, "status": 503, "request_id": request_id}).encode()
        start_response("503 SERVICE UNAVAILABLE", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("X-Request-ID", request_id),
            ("Retry-After", str(retry_after))])
        logger.info("%s %s %s -> 503 (0 ms)", request_id, environ["REQUEST_METHOD"], environ["PATH_INFO"])
        return [body]

    def _admit(environ, start_response):
        if environ["REQUEST_METHOD"] != "POST" or environ.get("PATH_INFO") not in summarize_paths:
            return flask_app(environ, start_response)
        if not admission.enter():
            return _refuse(environ, start_response)
        environ[_ADMITTED] = time.monotonic()
        try:  # Flask has answered when it returns (the JSON body is built): the place is free
            return flask_app(environ, start_response)
        finally:
            admission.leave()

    app.wsgi_app = _admit
    return app


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = ServerSettings.from_env()
    except ConfigError as err:
        print(f"error: {first_line(err)}", file=sys.stderr)
        return USAGE_ERROR
    if not settings.model_path:
        print("error: no model: set MODEL_PATH to a trained summarizer folder", file=sys.stderr)
        return USAGE_ERROR
    from transformers.utils import logging as hf_logging

    from inference.serving import limit_malloc_arenas, serve
    from inference.summarizer import DeepSeekSummarizer

    limit_malloc_arenas()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logger.info("loading %s", settings.model_path)
    try:
        summarizer = DeepSeekSummarizer.from_pretrained(settings.model_path, settings.load)
    except USER_ERRORS as err:  # one line: the operator fixes the path, the folder or a setting
        print(f"error: cannot load model {settings.model_path!r}: {first_line(err)}", file=sys.stderr)
        return USAGE_ERROR
    app = create_app(summarizer, settings)
    # The model's objects live as long as the process: kept out of the collector's full passes (pauses while
    # serving) and out of its last one at exit (seconds); the loading's garbage is collected first.
    gc.collect()
    gc.freeze()
    logger.info("model on %s, engine %s, gguf %s; serving on http://%s:%d", summarizer.device, summarizer.engine,
                summarizer.gguf, settings.host, settings.port)
    serve(app, settings, on_drain=app.extensions["admission"].close)
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
