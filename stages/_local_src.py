"""Imported first by every stage: the library of the tree the stage runs in, never another copy.

DVC hashes this tree's `src/` as the stage's dependency, so this tree's `src/` is what
must run, even when an editable install of another checkout (or a smoke or queue copy
of this one) is on the path.
"""

import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path[:1]:
    sys.path.insert(0, str(SRC))
