"""Load a torch.export program (.pt2) without ever running code stored in the file.

torch.export.load (torch 2.14: torch/export/pt2_archive/_package.py and
torch/_export/serde/serialize.py) unpickles several members with full pickle:
  - data/sample_inputs/<model>.pt: torch.load(weights_only=True), then, when that fails,
    *again with weights_only=False* (deserialize_torch_artifact);
  - data/weights/* and data/constants/tensor_* whose config says use_pickle:
    torch.load(weights_only=False); legacy data/{weights,constants}/<model>.pt go through
    deserialize_torch_artifact like the sample inputs;
  - data/constants/opaque_obj_*: pickle.loads; data/constants/custom_obj_*: the TorchScript
    unpickler (torchbind objects);
  - data/aotinductor/ (and the other backend folders) hold compiled shared libraries that
    load_pt2 dlopens.
So the archive is checked first (member names allow-listed, every pickle-bearing member must
load with weights_only=True) and then loaded from the same bytes, with
TORCH_FORCE_WEIGHTS_ONLY_LOAD set so that any torch.load a future torch adds is restricted too.

The loaded graph is checked too, before it becomes a callable module: its nodes name the
functions they call, and torch's deserializer and verifier accept more than tensor maths
(higher-order ops, any registered custom op, Python callables reached through them). So
every node of every graph (subgraphs included) may call only ATen or prims operators, or
operator.getitem, which is all the project's own exports use.

TorchScript files (torch.jit.load) need no such check: their unpickler
(torch/csrc/jit/serialization/unpickler.cpp) resolves globals only to tensors, containers and
TorchScript/torchbind classes, never to Python callables, and their code is TorchScript run by
the interpreter, not Python. ONNX files are protobuf, parsed by onnxruntime without pickle.

This module imports only torch and the standard library, so scripts/predict.py can use it
from a copy placed beside the script, away from this project.
"""

from __future__ import annotations

import io
import json
import operator
import os
import warnings
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator

import torch

# Members a program written by torch.export.save may hold (relative to the archive's root folder).
_FIXED = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
_FOLDERS = ("models/", "data/weights/", "data/constants/", "data/sample_inputs/", "extra/")
# Folders whose members torch unpickles, unless a payload config declares them raw tensor bytes.
_PICKLE_FOLDERS = ("data/weights/", "data/constants/", "data/sample_inputs/")
# Constants rebuilt by full pickle (opaque_obj_) or by torchbind's __setstate__ (custom_obj_).
_UNSAFE_CONSTANTS = ("custom_obj_", "opaque_obj_")


# Operator namespaces a loaded program may call: ATen (all the project's exports use, as
# listed from exporting every architecture) and its primitive decompositions (prims).
_ALLOWED_NAMESPACES = ("aten", "prims")
# Plain callables a graph may call: getitem picks one result of a multi-output operator.
_ALLOWED_CALLABLES = (operator.getitem,)
# Node kinds that call nothing: inputs, outputs, and references to parameters and subgraphs.
_INERT_NODES = ("placeholder", "output", "get_attr")


class UnsafeModelFile(Exception):
    """A model file that could run code when loaded, or that is not a torch.export archive."""


def load_program_module(path: str | os.PathLike) -> torch.nn.Module:
    """torch.export.load(path).module(), refusing any archive whose loading could run stored code."""
    path = Path(path)
    data = path.read_bytes()  # checked and loaded from the same bytes: the file cannot change in between
    check_program_bytes(data, path)
    with _weights_only_loads():
        program = torch.export.load(io.BytesIO(data))
    check_program_graph(program, path)
    return program.module()


def check_program_graph(program: torch.export.ExportedProgram, path: Path) -> None:
    """Raise UnsafeModelFile unless every node of every graph calls only allowed operators (see the module doc)."""
    for name, module in program.graph_module.named_modules():
        if not isinstance(module, torch.fx.GraphModule):  # a module with Python code of its own
            raise _unsafe(path, f"submodule {name!r} is a {type(module).__name__}, not a graph")
        for node in module.graph.nodes:
            if node.op in _INERT_NODES:
                continue
            if node.op != "call_function" or not _allowed_target(node.target):
                raise _unsafe(path, f"its graph calls {_target_name(node.target)} ({node.op}), "
                                    f"outside the allowed operators ({', '.join(_ALLOWED_NAMESPACES)}, getitem)")


def _allowed_target(target: object) -> bool:
    if any(target is allowed for allowed in _ALLOWED_CALLABLES):
        return True
    if isinstance(target, torch._ops.OpOverload):
        return target.namespace in _ALLOWED_NAMESPACES
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target._qualified_op_name.split("::")[0] in _ALLOWED_NAMESPACES
    return False  # higher-order ops, Python functions, methods, modules


def _target_name(target: object) -> str:
    """A node's target as one short name: `cifar.evil.default`, `higher_order.cond`, `posix.system`."""
    if isinstance(target, str):  # call_method and call_module name theirs
        name = target
    elif isinstance(target, torch._ops.OpOverload):
        name = str(target)
    elif isinstance(target, torch._ops.OpOverloadPacket):
        name = target._qualified_op_name.replace("::", ".")
    elif isinstance(target, torch._ops.HigherOrderOperator):
        name = f"{target.namespace}.{target.name()}"
    else:
        module = getattr(target, "__module__", None) or type(target).__module__
        name = f"{module}.{getattr(target, '__qualname__', type(target).__name__)}"
    return name[:120]


def check_program_bytes(data: bytes, path: Path) -> None:
    """Raise UnsafeModelFile unless every member is expected and every pickle loads with weights_only=True."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = _relative_names(archive, path)
            if "archive_format" not in members:
                raise UnsafeModelFile(f"{path} is not a torch.export archive (no archive_format member)")
            raw = _raw_payloads(archive, members, path)
            for relative, name in members.items():
                _check_member(archive, relative, name, raw, path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, zlib.error) as err:
        raise UnsafeModelFile(f"{path} is not a torch.export archive ({err})") from None


def _relative_names(archive: zipfile.ZipFile, path: Path) -> dict[str, str]:
    """Each member's name below the archive's single root folder -> its full name."""
    names = [info.filename for info in archive.infolist() if not info.is_dir()]
    if len(names) != len(set(names)):
        # zipfile reads the last of two same-named members, torch's reader may read the first:
        # the member checked would not be the member loaded.
        raise _unsafe(path, "a member name occurs twice")
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise UnsafeModelFile(f"{path} is not a torch.export archive (expected one root folder)")
    return {name.split("/", 1)[1]: name for name in names}


def _raw_payloads(archive: zipfile.ZipFile, members: dict[str, str], path: Path) -> set[str]:
    """Weights and constants that the configs declare as raw tensor bytes (use_pickle false): never unpickled."""
    raw = set()
    for relative, name in members.items():
        folder, _, file = relative.rpartition("/")
        if folder in ("data/weights", "data/constants") and file.endswith("_config.json"):
            try:
                entries = list(json.loads(archive.read(name))["config"].values())
                raw |= {f"{folder}/{entry['path_name']}" for entry in entries if not entry["use_pickle"]}
                # Checked in the config too, not only among the members torch may find.
                objects = [entry["path_name"] for entry in entries if str(entry["path_name"]).startswith(_UNSAFE_CONSTANTS)]
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raise _unsafe(path, f"member {name!r} is not a valid payload config: {type(err).__name__}") from None
            if objects:
                raise _unsafe(path, f"member {name!r} declares an object constant rebuilt by pickle ({objects[0]})")
    return raw


def _check_member(archive: zipfile.ZipFile, relative: str, name: str, raw: set[str], path: Path) -> None:
    """Refuse unknown members, object constants, and pickles that need more than weights_only=True."""
    if relative not in _FIXED and not relative.startswith(_FOLDERS):
        raise _unsafe(path, f"unexpected member {name!r}, such as compiled code")
    if not relative.startswith(_PICKLE_FOLDERS) or relative in raw or relative.endswith("_config.json"):
        return  # text (JSON, version strings) or raw tensor bytes: nothing to unpickle
    if PurePosixPath(relative).name.startswith(_UNSAFE_CONSTANTS):
        raise _unsafe(path, f"member {name!r} is an object constant rebuilt by pickle")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's notice about pickle protocols: not the user's concern
            torch.load(io.BytesIO(archive.read(name)), weights_only=True, map_location="cpu")
    except Exception as err:  # torch's restricted unpickler raises several types
        raise _unsafe(path, f"member {name!r} holds a pickle that weights_only=True refuses: {_reason(err)}") from None


def _reason(err: Exception) -> str:
    """The gist of a torch.load failure: torch prefixes the unpickler's reason with a long explanation."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    if "Unpickler error:" in text:
        text = text.split("Unpickler error:", 1)[1].split("Check the documentation", 1)[0].strip()
    return (text or type(err).__name__)[:160]


def _unsafe(path: Path, why: str) -> UnsafeModelFile:
    return UnsafeModelFile(f"{path} is not a safe model file ({why})")


@contextmanager
def _weights_only_loads() -> Iterator[None]:
    """Force weights_only=True on every torch.load, even those that ask for weights_only=False."""
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous
