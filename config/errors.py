"""The one kind of error meant for the user, and the one line that reports it.

Every error a user fixes (a setting, a file or its content, a model name, a device, an output folder) derives from
`UserError`, whatever layer raises it; each keeps its own name, and ValueError or RuntimeError as a second base
where callers catch it by that. Every command ends such an error the same way, in `config.cli.run_command`: one
`error:` line and exit status 2. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """An error the user fixes, not the code; its message is one line that says what to change."""


# What a command reports in one line: a UserError, or an OSError, which is the state of the files and the machine
# the user gave the command (a missing or unreadable file, a full disk, a refused permission), not a bug.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, OSError)


def first_line(err: BaseException, with_type: bool = False) -> str:
    """The first line of `err`'s message (its type's name when it has none); `with_type` prefixes the type's name,
    for an error of another library that is only quoted inside a message of ours."""
    lines = str(err).strip().splitlines()
    if not lines:
        return type(err).__name__
    return f"{type(err).__name__}: {lines[0]}" if with_type else lines[0]
