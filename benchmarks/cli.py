"""What every benchmark's command line shares: a --quick flag, and its rows printed as a Markdown table; its flags
and errors are those of every project command (config/cli.py)."""
from __future__ import annotations

import argparse
from typing import Callable, Optional

from config.cli import Parser, run_command


def table(rows: list[dict]) -> str:
    """Rows (dicts) as a Markdown table; columns in order of first appearance."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def benchmark_main(run: Callable[[bool], list[dict]], doc: str, quick_help: str,
                   argv: Optional[list[str]] = None) -> int:
    parser = Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    return run_command(parser, lambda args: print(table(run(args.quick))), argv)
