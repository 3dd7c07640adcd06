"""The one exception type for user mistakes, and how a stage reports it."""

from __future__ import annotations

import signal
import sys
from typing import Callable


class UserError(Exception):
    """A mistake the user can fix (bad params, missing or corrupt data): one line, no traceback."""


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); a UserError becomes one line on stderr and exit status 1.

    SIGTERM (a scheduler or `kill` stopping the job) is treated like Ctrl-C, so both
    unwind through the same clean-up paths and end with exit status 130.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
