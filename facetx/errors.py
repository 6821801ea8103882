"""User mistakes as one line, program bugs as tracebacks: the one error path of every facetx entry point.

A :class:`UserError` says what the user got wrong (a missing file, a config key with a wrong value) in one line that
names the file or key, what was found and what was expected. Entry points wrap their work in :func:`exit_on_user_error`
(or call :func:`report_user_error`), which prints ``error: <message>`` on stderr and exits with code 2. Any other
exception is a bug and keeps its traceback. ``FACETX_TRACEBACK=1`` (or Hydra's ``HYDRA_FULL_ERROR=1``) shows the
traceback of user errors too.

This module is a leaf: it imports no other facetx module, so every layer can raise its errors.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

EXIT_USER_ERROR = 2
F = TypeVar("F", bound=Callable)


class UserError(Exception):
    """A mistake in the user's input (files, config values, command-line arguments); the message is one line."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work: the message names the key (``data.batch_size``), the value and what to do."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, unreadable, truncated, not a facetx checkpoint, or of the wrong kind."""


def show_tracebacks() -> bool:
    """Whether user errors should keep their traceback (``FACETX_TRACEBACK=1`` or ``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get("FACETX_TRACEBACK") == "1" or os.environ.get("HYDRA_FULL_ERROR") == "1"


def one_line(message: object) -> str:
    """The message folded onto one line (a user error must never print a wall of text)."""
    return " ".join(str(message).split())


def find_user_error(error: BaseException) -> UserError | None:
    """``error`` itself or the :class:`UserError` it was raised from (``raise ... from e``), else None.

    Hydra's ``instantiate`` re-raises whatever a constructor raised as an ``InstantiationException`` *from* it, so a
    ``DataFormatError`` of a reader built from the config arrives wrapped; the wrapper adds nothing the user needs.
    """
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        if isinstance(e, UserError):
            return e
        seen.add(id(e))
        e = e.__cause__
    return None


def config_key(error: BaseException) -> str | None:
    """The config node Hydra's ``instantiate`` was building when ``error`` (or what it was raised from) happened: the
    ``full_key: data.train`` line of its ``InstantiationException``, else None."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        found = re.search(r"^full_key: (\S+)$", str(e), flags=re.MULTILINE)
        if found:
            return found.group(1)
        seen.add(id(e))
        e = e.__cause__
    return None


def user_message(error: BaseException, key: str | None = None) -> str:
    """The one line to print for ``error``; ``key``: the config node it came from (see :func:`config_key`), put in
    front of a :class:`ConfigError` that does not name it (a reader knows its argument, not where it sits).

    A DataLoader worker re-raises the worker's exception with the worker's whole traceback as its message
    (``Caught X in DataLoader worker process 0. Original Traceback ...``); its last line is the original message.
    """
    text = str(error)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        name = type(error).__name__
        head, sep, rest = last.partition(": ")
        if sep and (head == name or head.endswith("." + name)):
            text = rest
    if key and isinstance(error, ConfigError) and key not in text:
        text = f"{key}: {text}"
    return one_line(text)


def print_user_error(error: BaseException, key: str | None = None) -> int:
    """Print ``error: <message>`` on stderr; returns :data:`EXIT_USER_ERROR` for ``main()`` functions to return.

    Under ``FACETX_TRACEBACK=1`` it re-raises ``error`` instead, with its traceback.
    """
    if show_tracebacks():
        raise error
    print(f"error: {user_message(error, key)}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def report_user_error(error: BaseException, key: str | None = None) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with :data:`EXIT_USER_ERROR` (re-raise under
    ``FACETX_TRACEBACK=1``)."""
    raise SystemExit(print_user_error(error, key))


def exit_on_user_error(fn: F) -> F:
    """Decorator for entry points: a :class:`UserError` (also one wrapped by Hydra's ``instantiate``) becomes one
    line on stderr and exit code 2; any other exception propagates with its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            user_error = find_user_error(e)
            if user_error is None or show_tracebacks():
                raise
            report_user_error(user_error, config_key(e))

    return wrapper  # type: ignore[return-value]
