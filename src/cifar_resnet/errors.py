"""The one exception type for user mistakes, and how a stage reports it."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Callable


class UserError(Exception):
    """A mistake the user can fix (bad params, missing or corrupt data): one line, no traceback."""


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
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
