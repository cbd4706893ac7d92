"""A predictions file (one JSON line per record, appended batch by batch) as a kill may leave it, read back by
the generation that resumes it (inference/generate.py) and the merge of the processes' parts (distributed.py)."""
from __future__ import annotations

import json
from pathlib import Path

from config import UserError


class GenerateError(UserError):
    """A problem with the inputs or the output file, reported as one line."""


def completed_ids(output: Path) -> set[str]:
    """Ids already in `output`; a last line without its newline (a kill mid-write) is cut off first."""
    if not output.exists():
        return set()
    data = output.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with open(output, "r+b") as handle:
            handle.truncate(keep)
    done = set()
    for number, line in enumerate(data[:keep].decode("utf-8").splitlines(), start=1):
        if line.strip():
            try:
                done.add(str(json.loads(line)["id"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise GenerateError(f"{output}:{number} is not a prediction line; move the file away or "
                                    f"use --overwrite") from None
    return done
