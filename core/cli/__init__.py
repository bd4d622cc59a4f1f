"""The ``prunetune`` command line.

Heavy modules (torch, the plugins) are imported inside the commands, so ``prunetune --help``
stays fast. Every user mistake ends as one ``prunetune: error: ...`` line and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from prunetune.cli import commands
from prunetune.cli.parser import build_parser

__all__ = ["main"]


def _one_line(exc: Exception) -> str:
    # A message that quotes another library's (an import error, say) may span lines.
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _first_line(message: Warning | str) -> str:
    text = str(message).strip()
    return text.splitlines()[0] if text else type(message).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``prunetune`` command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    import warnings

    from prunetune.errors import TrainingDiverged, UsageError

    try:
        # Library warnings wait until the command ends: a mistake stays one line.
        with warnings.catch_warnings(record=True) as caught:
            code = commands.COMMANDS[args.command](args)
        for line in dict.fromkeys(_first_line(w.message) for w in caught):
            print(f"prunetune: warning: {line}", file=sys.stderr)
        return code
    except UsageError as exc:
        print(f"prunetune: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"prunetune: error: training diverged: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("prunetune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # A reader such as `head` closed the pipe: not an error of ours or the user's.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
