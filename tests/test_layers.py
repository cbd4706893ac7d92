"""The README's layers, checked on the real import graph by import-linter (contracts in pyproject.toml): each
package imports only those below it, scoring stays free of torch and transformers, and no package has a cycle.
(That scoring also runs without them is tests/evaluation/test_metrics.py's run-time check.)"""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "3 kept, 0 broken" in proc.stdout

