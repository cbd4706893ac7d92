"""A folder written whole or not at all: assembled under a hidden name beside its destination and renamed into
place, for exports whose output is gigabytes.

The hidden name carries the writer's pid (`.<name>.export-tmp-<pid>`): an error, Ctrl-C or SIGTERM removes it
before the command ends, and what a writer killed beyond any handler left (SIGKILL, a power cut) is removed by the
next writer into the same destination, once the process named in it is gone.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path


def _leftover(output: Path, role: str) -> Path:
    """This process's hidden folder beside `output`: "tmp" (the export being assembled) or "old" (the output being
    replaced, for the moment between two renames)."""
    return output.with_name(f".{output.name}.export-{role}-{os.getpid()}")


def _running_elsewhere(pid: int) -> bool:
    """Whether `pid` is another live process. This process's own pid in a leftover's name was an earlier process's
    (a container's export often gets the same pid each run)."""
    if pid <= 0 or pid == os.getpid():
        return False
    if os.name == "nt":  # os.kill there ends the process instead of probing it: keep what cannot be checked
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        return True
    return True


def remove_stale_leftovers(output: Path) -> None:
    """Remove the hidden folders that exports into `output` killed beyond any handler (SIGKILL, a power cut) left
    beside it. The pid in a name tells which process wrote it: one still running is an export under way, kept."""
    pattern = re.compile(rf"\.{re.escape(output.name)}\.export-(?:tmp|old)-(\d+)")
    for path in output.parent.iterdir():
        found = pattern.fullmatch(path.name)
        if found and not _running_elsewhere(int(found[1])):
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _signals_deferred():
    """SIGINT and SIGTERM wait until the block is done (delivered at its end): for steps that must not be cut."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks (and no SIGTERM to defer)
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def _sigterm_interrupts():
    """SIGTERM (`kill`, a process manager's stop) ends the block as Ctrl-C does, with a KeyboardInterrupt that runs
    the cleanup, where its default action ends the process at once. A handler the caller installed (a graceful
    stop of its own) is kept, and outside the main thread none can be set."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def staged_folder(output: Path):
    """A new hidden folder beside `output` to assemble the export in (a rename is atomic within one file system
    only), removed however the block ends: done, an error, Ctrl-C or SIGTERM. Leftovers of killed exports into the
    same output go first."""
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_leftovers(output)
    with _sigterm_interrupts():
        try:
            _leftover(output, "tmp").mkdir()
            yield _leftover(output, "tmp")
        finally:
            with _signals_deferred():  # a second Ctrl-C must not cut the cleanup short
                for role in ("tmp", "old"):
                    shutil.rmtree(_leftover(output, role), ignore_errors=True)


def move_into_place(tmp: Path, output: Path) -> None:
    """Rename the complete `tmp` to `output`. An old output (--overwrite) is moved aside only then, and removed
    with the temporary folder on the way out of `staged_folder`."""
    with _signals_deferred():  # between the two renames neither folder has the output's name
        if output.exists():
            os.replace(output, _leftover(output, "old"))
        os.replace(tmp, output)
