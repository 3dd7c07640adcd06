"""Deployment exports (TorchScript, torch.export, ONNX) and their parity with eager.

Every format is written to a file and checked in a fresh load from that file, so what is
checked is what ships (their CPU latency is timed in cifar_resnet.latency).

The files hold no path of the checkout that wrote them: torch records where the model's code
lives (absolute source paths, in debug information only), and that is left out of every
format, so two checkouts in different folders export the same bytes (see save_scripted,
save_program, export_onnx).
"""

from __future__ import annotations

import copy
import io
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Optional, Union

import numpy as np
import torch
from torch import nn

from .errors import UserError, describe_error
from .fileio import atomic_file, atomic_path
from .images import RESIZE
from .safeload import UnsafeModelFile, load_program_module

Forward = Union[nn.Module, Callable[[torch.Tensor], torch.Tensor]]

# Which stage writes the exported models, for "not found" messages.
PRODUCER = "export"

# File name of each exported format inside the export folder, by its latency-table row name.
EXPORT_FILES = {
    "traced": "traced.pt",  # TorchScript, torch.jit.trace
    "scripted": "scripted.pt",  # TorchScript, torch.jit.script
    "exported": "program.pt2",  # torch.export program: torch.export.load(path).module()
    "onnxruntime": "model.onnx",  # ONNX (input "images", output "logits"), run with onnxruntime
}
ONNX_INPUT, ONNX_OUTPUT = "images", "logits"
# The ONNX exporter's node metadata key for the torch.export stack trace (absolute source paths).
ONNX_STACK_TRACE = "pkg.torch.onnx.stack_trace"
IMAGE_SIZE = 32  # the exported models take 32x32 RGB images


# ---------------------------------------------------------------------------------------
# Exporting and loading each format
# ---------------------------------------------------------------------------------------


@contextmanager
def _quiet_jit() -> Iterator[None]:
    """Silence TorchScript's deprecation notices (torch >= 2.11): exporting to it is deliberate here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is (deprecated|not supported)")
        yield


def cpu_eval_copy(model: nn.Module) -> nn.Module:
    """An eval-mode CPU copy, so exporting never moves or re-modes the caller's model."""
    return copy.deepcopy(model).cpu().eval()


def _export_example(sample: torch.Tensor) -> torch.Tensor:
    """Two images: torch.export specialises a dimension of size 1, so a batch of one would fix it."""
    first = sample[:1].detach().cpu()
    return torch.cat([first, first])


def _require_file(path: Path, what: str) -> None:
    """A missing export is a UserError that says which stage makes it."""
    if not path.is_file():
        raise UserError(f"{path}: {what} not found (produced by the {PRODUCER} stage; run `dvc repro {PRODUCER}`)")


def trace_model(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Trace `model` (eval mode, CPU) on `example`."""
    with _quiet_jit(), torch.no_grad():
        return torch.jit.trace(cpu_eval_copy(model), example.detach().cpu())


def script_model(model: nn.Module) -> torch.jit.ScriptModule:
    """Compile `model` (eval mode, CPU) with torch.jit.script."""
    with _quiet_jit():
        return torch.jit.script(cpu_eval_copy(model))


def save_scripted(module: torch.jit.ScriptModule, path: str | Path) -> None:
    """torch.jit.save without its debug records (_copy_without_debug_records), atomically."""
    buffer = io.BytesIO()
    with _quiet_jit():
        torch.jit.save(module, buffer)
    with atomic_file(path) as file:
        _copy_without_debug_records(buffer.getvalue(), file)


# Records of a TorchScript archive that PyTorchFileWriter writes itself when they are missing.
_VERSION_RECORDS = ("version", ".data/version")
_SERIALIZATION_ID = ".data/serialization_id"


def _copy_without_debug_records(archive: bytes, file: IO[bytes]) -> None:
    """Copy a TorchScript archive into `file`, leaving out its `.debug_pkl` records.

    Those hold the source ranges of the serialized code: the absolute path of each model
    source file (and, for a traced model, of every Python frame of the call), which torch.jit.save
    offers no switch to omit. torch.jit.load reads them only if present, for error messages.
    The writer recomputes the serialization id from the records it writes (the original one
    hashes the dropped records too) and writes the original's format version.
    """
    reader = torch._C.PyTorchFileReader(io.BytesIO(archive))
    writer = torch._C.PyTorchFileWriter(file)
    for name in reader.get_all_records():
        if name in _VERSION_RECORDS:
            writer.set_min_version(int(reader.get_record(name)))
        elif name != _SERIALIZATION_ID and not name.endswith(".debug_pkl"):
            data = reader.get_record(name)
            writer.write_record(name, data, len(data))
    writer.write_end_of_file()


def load_scripted(path: str | Path, map_location: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """torch.jit.load a saved TorchScript model; absence or corruption is a UserError."""
    path = Path(path)
    _require_file(path, "TorchScript model")
    # No safety check needed (unlike .pt2): TorchScript's unpickler resolves globals only to
    # tensors, containers and TorchScript classes, never to Python callables (see safeload.py).
    try:
        with _quiet_jit():
            return torch.jit.load(str(path), map_location=map_location)
    except Exception as err:  # torch raises several types for corrupt files
        raise UserError(f"{path}: not a loadable TorchScript model ({describe_error(err)})") from None


def export_program(model: nn.Module, sample: torch.Tensor) -> torch.export.ExportedProgram:
    """torch.export the eval-mode CPU model with a dynamic batch dimension (any batch size runs)."""
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        return torch.export.export(cpu_eval_copy(model), (_export_example(sample),), dynamic_shapes=({0: batch},))


def save_program(program: torch.export.ExportedProgram, path: str | Path) -> None:
    """torch.export.save, atomically, without the nodes' stack traces (_drop_stack_traces)."""
    _drop_stack_traces(program)
    # Through a file object: given a path, torch.export.save warns when it does not end in .pt2.
    with atomic_file(path) as file:
        torch.export.save(program, file)


def _drop_stack_traces(program: torch.export.ExportedProgram) -> None:
    """Remove each graph node's `stack_trace` metadata, in place.

    torch.export records, per node, the Python frames that made it, by absolute file path;
    torch.export.save writes them out. They are debug information only: the graph, weights
    and module names stay, and the saved program no longer depends on the checkout's folder.
    """
    for module in program.graph_module.modules():
        if isinstance(module, torch.fx.GraphModule):
            for node in module.graph.nodes:
                node.meta.pop("stack_trace", None)


def load_program(path: str | Path) -> nn.Module:
    """A saved torch.export program as a callable module (torch only, no project code)."""
    path = Path(path)
    _require_file(path, "exported program")
    try:
        return load_program_module(path)  # torch.export.load would run pickles stored in the file
    except UnsafeModelFile as err:
        raise UserError(str(err)) from None
    except Exception as err:  # torch raises several types for archives it cannot deserialize
        raise UserError(f"{path}: not a loadable exported program ({type(err).__name__}); run `dvc repro {PRODUCER}`") from None


def export_onnx(model: nn.Module, sample: torch.Tensor, path: str | Path) -> None:
    """Write `model` as one self-contained ONNX file with a dynamic batch axis, validated by onnx.checker.

    Uses the torch.export-based exporter (dynamo=True, needs onnxscript): the TorchScript-based
    one is deprecated since torch 2.9 and warns that it will be removed. The nodes' stack
    traces (absolute source paths) are removed from the file: _drop_onnx_stack_traces.
    """
    import onnx

    with atomic_path(path) as tmp:
        torch.onnx.export(
            cpu_eval_copy(model),
            (_export_example(sample),),
            str(tmp),
            dynamo=True,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_shapes=({0: "batch"},),
            external_data=False,  # weights inside the .onnx file: one file to ship (fine below 2 GB)
            verbose=False,  # otherwise the exporter prints its progress to stdout
        )
        proto = onnx.load(str(tmp))
        _drop_onnx_stack_traces(proto)
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(proto, full_check=True)


def _drop_onnx_stack_traces(model: Any) -> None:
    """Remove the exporter's per-node stack-trace metadata (ONNX_STACK_TRACE), in place.

    It copies torch.export's stack traces (see _drop_stack_traces); the node's other metadata
    (module names and classes, the FX node) holds no paths and stays.
    """
    graphs = [model.graph.node, *(function.node for function in model.functions)]
    for node in _onnx_nodes(graphs):
        entries = node.metadata_props
        for index in reversed(range(len(entries))):
            if entries[index].key == ONNX_STACK_TRACE:
                del entries[index]


def _onnx_nodes(node_lists: Iterable[Iterable[Any]]) -> Iterator[Any]:
    """Every node in `node_lists`, and in the subgraphs their attributes hold (If, Loop, Scan)."""
    for nodes in node_lists:
        for node in nodes:
            yield node
            for attribute in node.attribute:
                yield from _onnx_nodes([attribute.g.node, *(graph.node for graph in attribute.graphs)])


class OnnxRuntimeModel:
    """An onnxruntime CPU session called like a module: float32 NCHW tensor in, logits tensor out."""

    def __init__(self, path: str | Path, threads: Optional[int] = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        _require_file(path, "ONNX model")
        options = ort.SessionOptions()
        # The same thread budget as torch, so the latency rows compare runtimes, not core counts.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its informational notices are not ours to show
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().cpu().contiguous().numpy()
        (logits,) = self.session.run([ONNX_OUTPUT], {ONNX_INPUT: array})
        return torch.from_numpy(logits)


def write_exports(model: nn.Module, sample: torch.Tensor, folder: str | Path, onnx: bool = True) -> dict[str, Path]:
    """Write every format into `folder` (ONNX only when `onnx`); return row name -> file."""
    folder = Path(folder)
    paths = {name: folder / filename for name, filename in EXPORT_FILES.items() if onnx or name != "onnxruntime"}
    save_scripted(trace_model(model, _export_example(sample)), paths["traced"])
    save_scripted(script_model(model), paths["scripted"])
    save_program(export_program(model, sample), paths["exported"])
    if onnx:
        export_onnx(model, sample, paths["onnxruntime"])
    return paths


def load_exports(paths: dict[str, Path]) -> dict[str, Forward]:
    """Load each written file afresh, so parity and latency are measured on what ships."""
    loaders: dict[str, Callable[[Path], Forward]] = {
        "traced": load_scripted,
        "scripted": load_scripted,
        "exported": load_program,
        "onnxruntime": OnnxRuntimeModel,
    }
    return {name: loaders[name](path) for name, path in paths.items()}


# ---------------------------------------------------------------------------------------
# Parity with eager
# ---------------------------------------------------------------------------------------


def max_abs_diff(reference: Forward, candidate: Forward, inputs: torch.Tensor, batch_size: int = 64) -> float:
    """Largest |reference(x) - candidate(x)| over all `inputs`, evaluated in batches."""
    if len(inputs) == 0 or batch_size < 1:
        raise ValueError(f"max_abs_diff needs inputs and batch_size >= 1 (got {len(inputs)} inputs, batch_size {batch_size})")
    worst = 0.0
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start : start + batch_size]
            expected, actual = reference(batch), candidate(batch)
            if expected.shape != actual.shape:
                raise RuntimeError(f"output shapes differ: {tuple(expected.shape)} vs {tuple(actual.shape)}")
            diff = (expected.double() - actual.double()).abs().max().item()
            if np.isnan(diff):
                return float("nan")  # max() would silently drop it; check_parity must see it
            worst = max(worst, diff)
    return worst


def check_parity(name: str, diff: float, atol: float) -> None:
    """Raise RuntimeError when an exported model strays from eager by more than `atol` (a bug, not a user error)."""
    if not diff <= atol:  # written this way so NaN fails too
        raise RuntimeError(f"{name}: max |output difference| vs eager is {diff:.3g}, above the tolerance {atol:.3g}")


def check_exports(reference: Forward, exports: dict[str, Forward], inputs: torch.Tensor, atol: float) -> dict[str, float]:
    """max_abs_diff of each export against `reference`; the first one above `atol` raises."""
    parity = {}
    for name, candidate in exports.items():
        parity[name] = max_abs_diff(reference, candidate, inputs)
        check_parity(name, parity[name], atol)
    return parity


def parity_metrics(parity: dict[str, float]) -> dict[str, float]:
    """The metrics JSON: the worst export's max |logit difference| from eager, in millionths of a logit.

    No timings: they change from run to run of the same model, so `dvc metrics diff` would
    report noise; the latency table stays beside the models (latency.json, latency.md).
    The parity figure is deterministic for a given model and machine. In millionths, because
    DVC rounds metrics to 5 decimals and a raw 8e-06 would print as 0.0; 3 significant
    digits are all a float32 comparison supports.
    """
    worst = max(parity.values(), default=0.0)
    return {"parity_max_abs_diff_micro": float(f"{worst * 1e6:.3g}")}


# ---------------------------------------------------------------------------------------
# What a standalone predictor needs besides the model
# ---------------------------------------------------------------------------------------


def preprocess_info(config: dict[str, Any], temperature: Optional[float] = None) -> dict[str, Any]:
    """What a consumer with torch and PIL alone needs besides the model file (preprocess.json).

    Class names and normalisation from the model config; the resize the training images went
    through (images.RESIZE, the one decoder's); and the temperature the evaluate stage fitted
    on the validation split (None: none was fitted, divide by 1).
    """
    missing = [key for key in ("classes", "mean", "std") if key not in config]
    if missing:
        raise UserError(f"model config lacks {', '.join(missing)}; retrain with `dvc repro train` to record them")
    return {
        "image_size": IMAGE_SIZE,
        "mode": "RGB",
        # PIL resampling of images that are not image_size square: see cifar_resnet.images.Resize.
        "resize": RESIZE.as_json(),
        # The formula the training stage used: pixels scaled to [0, 1], then per-channel (x - mean) / std.
        "normalise": "(pixels / 255 - mean) / std, NCHW float32",
        "mean": [float(m) for m in config["mean"]],
        "std": [float(s) for s in config["std"]],
        "classes": list(config["classes"]),
        # Probabilities: softmax(logits / temperature), calibrated on the validation split.
        "temperature": None if temperature is None else float(temperature),
    }
