"""The one exception type for user mistakes, and how a stage reports it."""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional


class UserError(Exception):
    """A mistake the user can fix (bad params, missing or corrupt data): one line, no traceback."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none.

    UserErrors are one line; the errors they wrap (torch, JSON, YAML) often span many.
    """
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def describe_error(err: BaseException) -> str:
    """`Type: first line` of an exception, or just `Type` when it has no message."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


# OS errors that are the machine's state, not a bug: a full disk or quota, a read-only or
# forbidden folder, a file where a folder should be. Other OSErrors keep their traceback.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
_ACCESS_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST}
# fileio.atomic_path/atomic_dir write to ".<name>.<random>.tmp" beside the output: name the output.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[^.]+\.tmp$")


def describe_os_error(err: OSError) -> Optional[str]:
    """One line for an OSError caused by the machine's state (full disk, read-only folder), else None."""
    if err.errno not in _WRITE_ERRNOS | _ACCESS_ERRNOS:
        return None
    verb = "write" if err.errno in _WRITE_ERRNOS else "access"
    reason = err.strerror or str(err)
    if err.filename is None:  # e.g. a failed flush: Python does not know the file's name
        return f"cannot {verb} an output: {reason}"
    path = Path(str(err.filename))
    temp = _TEMP_NAME.match(path.name)
    return f"cannot {verb} {path.with_name(temp['name']) if temp else path}: {reason}"


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def stop_with_parent(poll_seconds: float = 1.0) -> None:
    """Interrupt this process (as SIGTERM does) once the process that started it is gone.

    A stage killed with its `dvc` (kill -9, a closed terminal) must not live on as an
    orphan that keeps writing outputs beside the next run. An orphan is re-parented, so
    a changed parent pid is the sign; polling works for any parent, shell or dvc.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); a UserError becomes one line on stderr and exit status 1.

    So does an OSError from the machine's state (a full disk, a read-only or forbidden output
    folder): it names the file and the reason. atomic_path/atomic_dir have removed the partial
    output by the time it arrives here.

    SIGTERM (a scheduler or `kill` stopping the job) is treated like Ctrl-C, so both
    unwind through the same clean-up paths and end with exit status 130; so is the death
    of the process that started the stage.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    stop_with_parent()
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:
        message = describe_os_error(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
