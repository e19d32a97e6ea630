"""One-line errors of the command lines (`iceberg-offload`, the job's `offload`).

A failure is one line on stderr, `<prog>: error: <what>, <what to do>`, whatever the message
of its cause holds (a traceback, a Java stack, several lines of a server's answer); a usage
error is such a line too, with exit code 2 as argparse's own.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

USAGE_ERROR = 2
SETTINGS_TODO = "set or correct that variable in the environment"


class CommandError(Exception):
    """A failure a command explains itself: what went wrong, and what to do about it."""

    def __init__(self, what: str, todo: str) -> None:
        super().__init__(what)
        self.what = what
        self.todo = todo


def first_line(text: str) -> str:
    """The first non-blank line of a message, stripped ('' for a blank message)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def error_line(prefix: str, what: str, todo: str) -> str:
    """`<prefix>: error: <what>, <what to do>` on one line."""
    return f"{prefix}: error: {first_line(what) or 'failed'}, {first_line(todo)}"


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, `<error_prefix>: error: <what>, see
    <prog> --help`, and exit 2. Its sub-parsers are of this class too: give each its
    `error_prefix` (add_parser passes keyword arguments on), else it is its own prog."""

    def __init__(self, *args: Any, error_prefix: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.error_prefix = error_prefix or self.prog

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, error_line(self.error_prefix, message, f"see {self.prog} --help") + "\n")


def argument_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """`parse` as an argparse type: the message of the ValueError it raises becomes the usage
    error's (argparse would say only "invalid <function name> value")."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert
