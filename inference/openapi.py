"""The OpenAPI 3 description of the API server, served at /openapi.json. Keep it in step with api_server.py:
tests/inference/test_api.py checks that every route is described and every described path is served.

The generation parameters' types, bounds and descriptions come from `GenerationSettings`' own declaration
(pydantic's JSON schema), under each of their names (max_new_tokens and the reference README's max_length); their
defaults are the served model folder's, so none are stated here.
"""
from __future__ import annotations

from pydantic import TypeAdapter

from config import GenerationSettings
from inference.inputs import DEFAULT_PDF_DPI, GENERATION_PARAMS, MAX_PDF_DPI, MIN_PDF_DPI

_SCHEMA_KEYS = ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum", "description")


def _generation_properties() -> dict:
    properties = TypeAdapter(GenerationSettings).json_schema()["properties"]
    described = {}
    for name, field_name in GENERATION_PARAMS.items():
        schema = {key: value for key, value in properties[field_name].items() if key in _SCHEMA_KEYS}
        if name != field_name:  # the same setting by its other name (both, with two values: 400)
            schema["description"] = f"{field_name} by the reference README's name: {schema['description']}"
        described[name] = schema
    return described


_GENERATION = _generation_properties()
_REQUEST_ID = {"X-Request-ID": {"description": "the request id, also in the body", "schema": {"type": "string"}}}


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying (from the recent batch time)",
                                "schema": {"type": "integer"}}}


def _json(ref: str, description: str, headers: dict | None = None) -> dict:
    return {"description": description, "headers": {**_REQUEST_ID, **(headers or {})},
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


_ERRORS = {str(code): _json("Error", text) for code, text in [
    (400, "invalid input"), (401, "missing or wrong bearer token (when API_TOKEN is set)"),
    (413, "body, image or page count over the limit"), (415, "wrong content type"),
    (504, "not answered within REQUEST_TIMEOUT of its admission")]}
_ERRORS["503"] = _json("Error", "refused at once, before the body is read: MAX_QUEUE requests are already held, or "
                                "the server is shutting down (both with Retry-After); or no model is loaded",
                       _RETRY_AFTER)


def _upload(description: str, extra: dict | None = None) -> dict:
    properties = {"file": {"type": "string", "format": "binary", "description": description},
                  **_GENERATION, **(extra or {})}
    return {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": ["file"], "properties": properties}}}}


def _summarize(summary: str, body: dict) -> dict:
    return {"post": {"summary": summary, "requestBody": body, "security": [{}, {"bearer": []}],
                     "responses": {"200": _json("Summary", "the summary"), **_ERRORS}}}


SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "DeepSeek-OCR summarizer", "version": "1.0.0",
             "description": "Summaries of text, text files, page images and PDFs. Every response is JSON."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Summary": {"type": "object", "properties": {
                "request_id": {"type": "string"}, "summary": {"type": "string"},
                "pages": {"type": "integer"}, "vision_tokens": {"type": "integer", "nullable": True},
                "text_tokens": {"type": "integer", "nullable": True},
                "compression_ratio": {"type": "number", "nullable": True}, "seconds": {"type": "number"},
                "strategy": {"type": "string", "enum": ["direct", "fit", "hierarchical", "truncate"],
                             "description": "how the document was read within the decoder's context"},
                "windows": {"type": "integer", "description": "readings of the document itself (hierarchical: its "
                            "windows)"},
                "levels": {"type": "integer", "description": "summarizing rounds"},
                "pages_read": {"type": "integer"}, "tokens_read": {"type": "integer"},
                "document_tokens": {"type": "integer", "description": "positions of the whole document as the "
                                    "model reads it at its own mode"},
                "read_mode": {"type": "string", "nullable": True,
                              "description": "the resolution mode pages were read at, where fit changed it"},
                "prompt_tokens": {"type": "integer", "description": "the longest prompt of any round"},
                "context": {"type": "integer", "nullable": True, "description": "the model's context"},
                "model": {"type": "string"}}},
            "Error": {"type": "object", "required": ["error", "status", "request_id"], "properties": {
                "error": {"type": "string"}, "status": {"type": "integer"}, "request_id": {"type": "string"}}},
            "Health": {"type": "object", "properties": {
                "status": {"type": "string", "enum": ["ok", "draining"]}, "model_loaded": {"type": "boolean"},
                "model_name": {"type": "string", "nullable": True}, "model_type": {"type": "string", "nullable": True},
                "device": {"type": "string", "nullable": True},
                "engine": {"type": "string", "nullable": True, "description": "what runs the decoder: torch or "
                           "llamacpp"},
                "gguf": {"type": "string", "nullable": True,
                         "description": "the llamacpp engine's GGUF decoder file name; null on torch"},
                "admission": {"$ref": "#/components/schemas/Admission"},
                "batching": {"type": "object", "nullable": True}, "request_id": {"type": "string"}}},
            "Admission": {"type": "object", "description": "summarize requests since the server started",
                          "properties": {
                "limit": {"type": "integer", "description": "MAX_QUEUE"},
                "depth": {"type": "integer", "description": "requests held now (being read, rendered, queued or "
                                                            "generated)"},
                "accepted": {"type": "integer"}, "rejected": {"type": "integer", "description": "answered 503"},
                "timed_out": {"type": "integer", "description": "answered 504"},
                "client_gone": {"type": "integer", "description": "client disconnected before generation"},
                "draining": {"type": "boolean", "description": "shutting down: new requests are refused"}}},
        },
    },
    "paths": {
        "/health": {"get": {"summary": "liveness, model, device, engine and GGUF file, queue depth and request "
                                       "counts", "security": [],
                            "responses": {"200": _json("Health", "server state")}}},
        "/openapi.json": {"get": {"summary": "this description", "security": [{}, {"bearer": []}],
                                  "responses": {"200": {"description": "OpenAPI 3 document"}}}},
        "/summarize/text": _summarize("summarize text", {"required": True, "content": {"application/json": {
            "schema": {"type": "object", "required": ["text"],
                       "properties": {"text": {"type": "string", "minLength": 1}, **_GENERATION}}}}}),
        "/summarize/file": _summarize("summarize an uploaded UTF-8 text file", _upload("UTF-8 text file")),
        "/summarize/image": _summarize("summarize a page image", _upload("PNG, JPEG, WebP, TIFF, BMP or GIF")),
        "/summarize/pdf": _summarize("summarize a PDF", _upload("PDF file", {"dpi": {
            "type": "integer", "minimum": MIN_PDF_DPI, "maximum": MAX_PDF_DPI, "default": DEFAULT_PDF_DPI}})),
    },
}
