"""Errors the user can fix, and the helpers their one-line messages are built with."""

import errno
import os
import shutil
import sys
from numbers import Integral, Number
from pathlib import Path
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
    """The training loss became NaN/inf, or grew far beyond its start (above: the limit it passed): results.json
    says status "diverged"; a sweep goes on."""

    def __init__(self, step: int, epoch: int, loss: float | str, causes: str, above: str = ""):
        self.step, self.epoch = step, epoch
        loss = f"{loss:.3g}, {above}," if above else loss
        super().__init__(f"diverged: training loss is {loss} at step {step} (epoch {epoch}); likely causes: {causes}")


def size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def free_bytes(path) -> int | None:
    """Free space on the file system holding path (or its nearest existing parent)."""
    probe = Path(str(path))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def _filename(error: OSError) -> str | None:
    name = error.filename
    return os.fsdecode(name) if isinstance(name, bytes) else name  # TensorBoard's writer names its files in bytes


def thread_os_errors_in_one_line() -> None:
    """A library's writer thread (TensorBoard's) that meets a full disk or a removed folder: one log line instead of
    Python's thread traceback; the run's own writes meet the same cause and stop it in one line."""
    import logging
    import threading

    default = threading.excepthook

    def hook(args) -> None:
        if isinstance(args.exc_value, OSError) and args.exc_value.errno is not None:
            e = args.exc_value
            logging.getLogger(__name__).warning(
                "%s: %s (thread %s)", _filename(e), (e.strerror or "").lower(), getattr(args.thread, "name", "?")
            )
            return
        default(args)

    threading.excepthook = hook


class FileFault(TrickbenchError):
    """An OSError the user can fix (a full disk, a read-only or removed folder, a permission): one line naming the
    path and the cause, and, for a full disk, what the write needed and what is free."""

    @staticmethod
    def applies(error: OSError, run_dir) -> bool:
        """A cause the user can fix; other OSErrors (a network error, a bug) keep their traceback."""
        fixable = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST)
        return error.errno in fixable or error.errno == errno.ENOENT and not os.path.isdir(str(run_dir))

    def __init__(self, error: OSError, run_dir):
        where = _filename(error) or "a file"
        cause = (error.strerror or type(error).__name__).lower()
        line = f"{where}: {cause}"
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            needed = getattr(error, "needed_bytes", None)
            line += (
                f" (this write needs {size(needed)}, {size(free_bytes(where))} free there)"
                if needed
                else (f" ({size(free_bytes(where))} free there)")
            )
            line += f"; free some space, then resume={run_dir}"
        elif error.errno == errno.ENOENT and not os.path.isdir(str(run_dir)):
            line += f" (the run folder {run_dir} was removed while the run ran); start the run again"
        else:
            line += f"; fix that, then resume={run_dir}"
        super().__init__(line)
