"""The API server's settings: each field is read from its upper-case environment variable (MODEL_PATH, PORT, ...)."""
from __future__ import annotations

import os
from dataclasses import field, fields, is_dataclass
from typing import Optional, TypeVar

from pydantic import Field

from config.loading import ConfigError, Float, Int, Str, field_type, parse_text, settings
from config.settings import LoadSettings


@settings
class ServerSettings:
    model_path: Optional[Str] = Field(None, description="model folder, hub id or preset to serve")
    host: Str = Field("127.0.0.1", description="address to bind (loopback unless the operator opens it up)")
    port: Int = Field(5000, ge=1, le=65535, description="TCP port")
    # DEVICE, DTYPE, ATTN_IMPLEMENTATION, EXPERTS_IMPLEMENTATION: the load block every command shares. The fast
    # decode path is the model folder's generation_settings.json "compile".
    load: LoadSettings = field(default_factory=LoadSettings)
    max_content_length: Int = Field(20 * 2**20, ge=1, description="bytes of a request body")
    max_image_pixels: Int = Field(40_000_000, ge=1, description="per image or PDF page (decompression-bomb guard)")
    max_pages: Int = Field(16, ge=1, description="pages per document (long texts, PDFs)")
    request_timeout: Float = Field(120.0, gt=0, description="seconds from a request's admission to its answer (504 "
                                   "when over; not generated if its batch has not started); also bounds the drain "
                                   "on SIGTERM")
    api_token: Optional[Str] = Field(None, repr=False, description="bearer token clients must send (never printed)")
    max_batch_size: Int = Field(8, ge=1, description="documents generated together; 1 turns micro-batching off")
    batch_wait_ms: Float = Field(5.0, ge=0, description="how long the batcher waits for companions of a request")
    max_queue: Int = Field(16, ge=1, description="summarize requests held at once (being read, rendered, queued "
                                                 "or generated); beyond it a request gets 503 with Retry-After at once")
    threads: Int = Field(24, ge=2, description="waitress worker threads; those beyond MAX_QUEUE answer 503s and "
                                               "/health while the queue is full")

    def __post_init__(self) -> None:
        if self.max_queue >= self.threads:
            raise ConfigError(f"config key 'max_queue' ({self.max_queue}) must be less than config key 'threads' "
                              f"({self.threads}): spare threads answer 503 and /health while the queue is full")

    @classmethod
    def from_env(cls, environ=None) -> "ServerSettings":
        """Each field from its upper-case environment variable (a block's fields by their own names); unset or
        empty keeps the default."""
        return settings_from_env(cls, os.environ if environ is None else environ)


T = TypeVar("T")


def settings_from_env(cls: type[T], environ) -> T:
    """Settings dataclass `cls` from environment variables: each field from its upper-case name (a nested block's
    fields by their own names), the text read as the field's declared type (config.loading.parse_text, as the API's
    form fields are); unset or empty keeps the default. Every error line names the variable, never a config key."""
    values = _env_values(cls, environ)
    try:
        return cls(**values)
    except ConfigError as err:
        message = str(err)
        for key, variable in _variables(cls):
            message = message.replace(f"config key '{key}'", f"environment variable {variable}")
        raise ConfigError(message) from None


def _variables(cls: type, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, environment variable) of every field."""
    pairs = []
    for f in fields(cls):
        kind = field_type(cls, f.name)
        if is_dataclass(kind):
            pairs += _variables(kind, f"{prefix}{f.name}.")
        else:
            pairs.append((prefix + f.name, f.name.upper()))
    return pairs


def _env_values(cls: type, environ) -> dict:
    values = {}
    for f in fields(cls):
        kind = field_type(cls, f.name)
        if is_dataclass(kind):
            values[f.name] = _env_values(kind, environ)
            continue
        raw = environ.get(f.name.upper(), "").strip()
        if raw:
            values[f.name] = parse_text(cls, f.name, raw, f"environment variable {f.name.upper()}")
    return values
