"""Errors the user can fix, and the helpers their one-line messages are built with."""

import sys
from numbers import Integral, Number
from typing import NoReturn


def is_int(v) -> bool:
    """An integer config value (YAML's true/false are bools, which Python counts as ints)."""
    return isinstance(v, Integral) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what one-line errors quote."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0].strip()


def with_status(status: str, message) -> str:
    """'status: message', said once when the message already starts with it (Diverged's says "diverged: ...")."""
    message = str(message)
    return message if message.startswith(f"{status}:") else f"{status}: {message}"


def exit_with(error: BaseException | str, code: int = 2) -> NoReturn:
    """The project's one-line refusal: `error: <message>` on stderr, no traceback, exit code 2."""
    print(f"error: {error}", file=sys.stderr)
    sys.exit(code)


class TrickbenchError(Exception):
    """An error the user can fix (bad value, missing data): train.py prints its one line, no traceback."""


class ConfigError(TrickbenchError, ValueError):
    """A bad config or data value. The message's first line names the key, the value and what is allowed."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r}: {allowed}")


class Diverged(TrickbenchError):
    """The training loss became NaN/inf: results.json says status "diverged"; a sweep goes on."""

    def __init__(self, step: int, epoch: int, loss: float | str, causes: str):
        self.step, self.epoch = step, epoch
        super().__init__(f"diverged: training loss is {loss} at step {step} (epoch {epoch}); likely causes: {causes}")
