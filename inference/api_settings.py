"""The API server's settings, read from environment variables with safe defaults."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Optional

from config import EXPERTS_IMPLEMENTATIONS


@dataclass
class ServerSettings:
    model_path: Optional[str] = None  # MODEL_PATH
    host: str = "127.0.0.1"  # loopback unless the operator opens it up
    port: int = 5000
    device: Optional[str] = None  # DEVICE: cuda if available, else cpu
    # EXPERTS_IMPLEMENTATION: MoE experts kernels, eager, grouped_mm or batched_mm (default: grouped_mm where it
    # dispatches, else eager). The fast decode path is the model folder's generation_settings.json "compile".
    experts_implementation: Optional[str] = None
    max_content_length: int = 20 * 2**20  # bytes of a request body
    max_image_pixels: int = 40_000_000  # per image or PDF page (decompression-bomb guard)
    max_pages: int = 16  # per document (long texts, PDFs)
    request_timeout: float = 120.0  # seconds a request waits for its summary
    api_token: Optional[str] = field(default=None, repr=False)  # never printed
    max_batch_size: int = 8  # 1 turns micro-batching off
    batch_wait_ms: float = 5.0  # how long the batcher waits for companions of a first request
    threads: int = 16  # waitress worker threads: concurrent requests in flight

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"PORT must be between 1 and 65535, got {self.port}")
        for name in ("max_content_length", "max_image_pixels", "max_pages", "max_batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.upper()} must be at least 1, got {getattr(self, name)}")
        if self.experts_implementation not in (None, *EXPERTS_IMPLEMENTATIONS):
            raise ValueError(f"EXPERTS_IMPLEMENTATION must be one of {', '.join(EXPERTS_IMPLEMENTATIONS)}, "
                             f"got {self.experts_implementation!r}")
        if self.request_timeout <= 0 or self.batch_wait_ms < 0:
            raise ValueError("REQUEST_TIMEOUT must be positive and BATCH_WAIT_MS not negative")

    @classmethod
    def from_env(cls, environ=None) -> "ServerSettings":
        """Each field from its upper-case environment variable; unset or empty keeps the default."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(f.name.upper(), "").strip()
            if not raw:
                continue
            kind = type(f.default) if f.default is not None else str
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ValueError(f"environment variable {f.name.upper()} must be {kind.__name__}, got {raw!r}") from None
        return cls(**values)
