"""Imported first by every stage: the library of the tree the stage runs in.

DVC hashes this tree's `src/` as the stage's dependency, so this tree's `src/` is what
must run, even when an editable install of another checkout (or a smoke or queue copy of
this one) is on the path.

(Python's string-hash seed, which scripted.pt's bytes depend on, is fixed where the stage
commands are defined: dvc.yaml runs each as `PYTHONHASHSEED=0 python stages/...`. A stage
run by hand, or under a debugger, runs as it is started: no re-execution.)
"""

import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path[:1]:
    sys.path.insert(0, str(SRC))
