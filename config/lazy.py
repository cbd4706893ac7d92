"""Package exports imported on first use, so `import data` or `from evaluation import evaluate_pairs` does not
pull in torch, transformers or `datasets` before they are needed (CLIs' --help and worker processes stay light).
"""
from __future__ import annotations

from importlib import import_module
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module-level `__getattr__` for `package` that imports `name` from `exports[name]` on first access."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(exports[name]), name)
        namespace[name] = value  # later look-ups skip this function
        return value

    return __getattr__
