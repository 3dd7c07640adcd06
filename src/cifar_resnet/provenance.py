"""What a result was made from: a script's import closure and digests of code, data and params.

The same closure serves twice: a test checks that each stage's `deps:` in dvc.yaml cover
it (so editing any imported module reruns the stage), and the train stage keys its
resumable checkpoints on it (so a checkpoint of other code is never resumed).
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

PACKAGE = "cifar_resnet"


def _imported_modules(path: Path, package: str | None) -> set[str]:
    """Absolute names of every module `path` imports, lazy imports inside functions included.

    `package` is the dotted package `path` belongs to (None for a script), for relative imports.
    For `from a import b`, both `a` and `a.b` are returned: `b` may be a submodule.
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if package is None:
                    continue
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _module_file(name: str, roots: Iterable[Path]) -> Path | None:
    """The file that defines module `name` under one of `roots`, if any."""
    relative = Path(*name.split("."))
    for root in roots:
        for candidate in (root / relative / "__init__.py", root / relative.with_suffix(".py")):
            if candidate.is_file():
                return candidate
    return None


def _package_of(path: Path, src: Path) -> str | None:
    """The dotted package a file under `src` belongs to (None outside it)."""
    try:
        relative = path.relative_to(src)
    except ValueError:
        return None
    # A module's package and an __init__.py's package are both its folder.
    return ".".join(relative.parent.parts)


def import_closure(script: str | Path, src: str | Path) -> list[Path]:
    """The script and every project file it imports, transitively, sorted.

    Project files are modules of the library under `src` and modules beside the script
    (stage helpers); third-party imports are not followed. Importing `a.b.c` runs the
    `__init__.py` of `a` and `a.b` too, so those count.
    """
    script, src = Path(script).resolve(), Path(src).resolve()
    seen: set[Path] = set()
    pending = [script]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        roots = [src] if path.is_relative_to(src) else [src, path.parent]
        for name in _imported_modules(path, _package_of(path, src)):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                found = _module_file(".".join(parts[:depth]), roots)
                if found is not None and found not in seen:
                    pending.append(found)
    return sorted(seen)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (prepared datasets can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def digests(paths: Iterable[Path], relative_to: Path | None = None) -> dict[str, str]:
    """{path (relative to `relative_to`, if given): SHA-256} for each file."""
    def name(path: Path) -> str:
        return (path.resolve().relative_to(relative_to.resolve()) if relative_to else path).as_posix()

    return {name(Path(path)): file_digest(path) for path in paths}


def value_digest(value: Any) -> str:
    """A short, stable digest of a JSON-able value (key order does not matter)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def describe_change(made_with: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why two run keys differ, in a few words naming what changed (None when equal).

    A key is {"params": digest, "code": {file: digest}, "data": {file: digest}}.
    """
    reasons = []
    if made_with.get("params") != current["params"]:
        reasons.append("other parameters")
    for part in ("code", "data"):
        old, new = made_with.get(part) or {}, current[part]
        changed = sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))
        if changed:
            shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
            reasons.append(f"other {part} ({shown})")
    return "; ".join(reasons) or None
