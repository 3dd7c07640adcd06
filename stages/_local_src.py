"""Imported first by every stage: a fixed hash seed, and the library of the tree the stage runs in.

- DVC hashes this tree's `src/` as the stage's dependency, so this tree's `src/` is what
  must run, even when an editable install of another checkout (or a smoke or queue copy
  of this one) is on the path.
- Python randomises the order of sets of strings per process (PYTHONHASHSEED), and
  torch.jit.script walks such sets (a module's __constants__): without a fixed seed,
  scripted.pt would differ from run to run, and DVC would see a changed output. So the
  stage re-executes itself once with the seed fixed, before doing anything else.
"""

import os
import sys
from pathlib import Path

if os.environ.get("PYTHONHASHSEED") != "0":
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path[:1]:
    sys.path.insert(0, str(SRC))
