"""The production WSGI server (waitress) around the Flask app, with the API's JSON errors at every layer.

Waitress buffers a whole request body before the app sees it, and refuses bodies over its own limit with a
plain-text answer. Its limit is set well above the app's MAX_CONTENT_LENGTH, so a client that sends the whole body
before reading (Python's urllib) gets Flask's JSON 413 from the app; a body beyond even that is refused by waitress
at once, and that answer is JSON too (its error task is waitress's extension point for exactly this).
"""
from __future__ import annotations

import json
import uuid

from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask

# Bodies up to this many times MAX_CONTENT_LENGTH are read (spooled to a temporary file by waitress) so the app can
# answer with JSON; beyond it, waitress answers without reading, as the JSON below.
WAITRESS_BODY_FACTOR = 8


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


def serve(app, host: str, port: int, threads: int, max_content_length: int) -> None:
    server = create_server(app, host=host, port=port, threads=threads, ident="deepseek-summarizer",
                           max_request_body_size=WAITRESS_BODY_FACTOR * max_content_length + 2**20)
    server.channel_class = _JsonErrorChannel
    server.run()
