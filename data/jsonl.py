"""JSON Lines files written atomically and read with errors that name the file and line.

Shared by every package that writes or reads record files (prepared datasets, predictions, metrics inputs).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from config import UserError


class JsonlError(UserError, ValueError):
    """A JSONL file that cannot be read: missing, or a line that is not a JSON object."""


def dumps_record(record: dict[str, Any]) -> str:
    """One record as one line; fixed formatting so equal records always give equal bytes."""
    return json.dumps(record, ensure_ascii=False, separators=(", ", ": ")) + "\n"


class AtomicJsonlWriter:
    """Streams records into a temporary file next to `path`; `commit()` renames it into place.

    A reader (or a killed writer) never sees a half-written file: the old content stays until `os.replace`.
    Leaving the `with` block without `commit()` (an error) deletes the temporary file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.count = 0
        self._handle = open(self.tmp, "w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(dumps_record(record))
        self.count += 1

    def commit(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self.tmp, self.path)

    def __enter__(self) -> "AtomicJsonlWriter":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if not self._handle.closed:
            self._handle.close()
            self.tmp.unlink(missing_ok=True)


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> int:
    """Write `records` to `path` atomically (see `AtomicJsonlWriter`); return how many were written."""
    with AtomicJsonlWriter(path) as writer:
        for record in records:
            writer.write(record)
        writer.commit()
    return writer.count


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """A small JSON document (report, sidecar) written through a temporary name in the same directory."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """A small text file (a report) written through a temporary name in the same directory: never half written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def file_digest(path: str | os.PathLike) -> str:
    """A short SHA-256 of a file's bytes: what identifies a data file across runs (its path may stay the same
    while it is prepared again with other settings)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object written by `write_json_atomic`, or {} when the file is missing or unreadable (never written,
    or by another version): the callers treat that as "nothing recorded"."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def iter_jsonl_lines(path: str | os.PathLike, on_error: Optional[Callable[[str], None]] = None
                     ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each JSON object line of a JSONL file (blank lines are allowed).

    A line that is not a JSON object raises JsonlError naming the file and line; with `on_error`, the message
    goes to `on_error` instead and the line is skipped, so one bad line does not hide the rest of the file.
    """
    path = Path(path)
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise JsonlError(f"file not found: {path}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                problem = None if isinstance(record, dict) else f"expected a JSON object, got {type(record).__name__}"
            except json.JSONDecodeError as err:
                problem = f"not valid JSON ({err.msg})"
            if problem is None:
                yield number, record
            elif on_error is None:
                raise JsonlError(f"{path}:{number}: {problem}")
            else:
                on_error(f"{path}:{number}: {problem}")


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a JSONL file one by one; a bad line is a JsonlError naming file and line."""
    for _, record in iter_jsonl_lines(path):
        yield record


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSONL file; a bad line is a JsonlError naming the file and line number."""
    return list(iter_jsonl(path))
