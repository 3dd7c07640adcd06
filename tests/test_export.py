"""Exports (TorchScript, torch.export, ONNX): fresh loads match eager, latency tables, and the export stage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml

from cifar_resnet.config import load_params
from cifar_resnet.data import ImageSet, save_imageset
from cifar_resnet.errors import UserError
from cifar_resnet.fileio import write_json
from cifar_resnet.export import (
    EXPORT_FILES,
    OnnxRuntimeModel,
    check_exports,
    check_parity,
    load_exports,
    load_program,
    load_scripted,
    max_abs_diff,
    parity_metrics,
    preprocess_info,
    write_exports,
)
from cifar_resnet.latency import (
    LATENCY_ROWS,
    Skipped,
    bf16_skip_reason,
    environment_info,
    latency_markdown,
    latency_models,
    latency_rows,
)
from cifar_resnet.models import build_model, save_model
from cifar_resnet.pipeline import export as export_stage
from conftest import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread: see conftest

ATOL = 1e-4  # params.yaml's export.tolerance
BATCHES = [1, 3]


def tiny_model(num_classes: int = 10) -> torch.nn.Module:
    """resnet18 at width 8 with BatchNorm statistics moved off their defaults, in eval mode."""
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes, width=8, dropout=0.3)
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))  # training mode: updates the running statistics
    return model.eval()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model()


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def exported(model, inputs, tmp_path_factory) -> dict[str, Path]:
    """Every format written once for the module (the ONNX export alone takes seconds)."""
    return write_exports(model, inputs, tmp_path_factory.mktemp("export"), onnx=True)


# --- formats -----------------------------------------------------------------------------


def test_every_format_is_written_under_its_file_name(exported: dict[str, Path]) -> None:
    assert {name: path.name for name, path in exported.items()} == EXPORT_FILES
    assert all(path.stat().st_size > 0 for path in exported.values())
    # Atomic writes leave no temporary files beside the outputs.
    assert sorted(p.name for p in next(iter(exported.values())).parent.iterdir()) == sorted(EXPORT_FILES.values())


@pytest.mark.parametrize("name", list(EXPORT_FILES))
def test_each_format_loaded_from_its_file_matches_eager(name, model, inputs, exported) -> None:
    (loaded,) = load_exports({name: exported[name]}).values()
    diff = max_abs_diff(model, loaded, inputs, batch_size=4)  # batches of 4 and 2
    assert diff < ATOL
    # check_exports measures in batches of 64, a different kernel choice (oneDNN/AMX blocking) than
    # the batches of 4 above: both are fp32 rounding noise (~1e-6 here), equal only to within a few
    # ulps of the logits, never bit for bit across CPUs. A tenth of ATOL still tells a wrong measure.
    parity = check_exports(model, {name: loaded}, inputs, ATOL)
    assert set(parity) == {name} and parity[name] == pytest.approx(diff, abs=ATOL / 10)


@pytest.mark.parametrize("arch", ["resnet9", "airbench"])
def test_fixed_layouts_export_in_every_format_and_match_eager(arch, inputs, tmp_path) -> None:
    # Their max-pools, GELUs, whitening layer and scaled logits must survive TorchScript,
    # torch.export and ONNX.
    torch.manual_seed(0)
    network = build_model(arch, 10, width=8)
    if arch == "airbench":
        network.fit_whitening(torch.randn(16, 3, 32, 32))
    with torch.no_grad():
        network(torch.randn(8, 3, 32, 32))  # training mode: moves the BatchNorm statistics
    network.eval()
    loaded = load_exports(write_exports(network, inputs, tmp_path, onnx=True))
    diffs = check_exports(network, loaded, inputs, ATOL)
    assert set(diffs) == set(EXPORT_FILES) and max(diffs.values()) < ATOL


@pytest.mark.parametrize("name", ["exported", "onnxruntime"])
@pytest.mark.parametrize("batch_size", [1, 5])
def test_dynamic_batch_formats_run_at_other_batch_sizes(name, batch_size, model, exported) -> None:
    # Exported with a batch of two; the batch dimension must have stayed symbolic.
    (loaded,) = load_exports({name: exported[name]}).values()
    images = torch.randn(batch_size, 3, 32, 32)
    with torch.no_grad():
        out = loaded(images)
        assert out.shape == (batch_size, 10)
        assert (out - model(images)).abs().max().item() < ATOL


def test_onnx_file_is_valid_with_named_inputs_and_a_symbolic_batch(exported) -> None:
    graph = onnx.load(str(exported["onnxruntime"]))
    onnx.checker.check_model(graph, full_check=True)
    assert [i.name for i in graph.graph.input] == ["images"]
    assert [o.name for o in graph.graph.output] == ["logits"]
    batch_dim = graph.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    assert not list(exported["onnxruntime"].parent.glob("*.data"))  # weights inside the one file


def file_contents(path: Path) -> bytes:
    """What a file holds: an ONNX file's bytes, a zip archive's members decompressed (TorchScript compresses some)."""
    if path.suffix == ".onnx":
        return path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        return b"".join(archive.read(name) for name in archive.namelist())


def test_no_export_names_the_folder_of_the_code_that_made_it(exported) -> None:
    # torch's debug information names the model's source files (src/cifar_resnet/models/...)
    # by absolute path, and a traced model every Python frame of the call (this test file
    # too): two checkouts in different folders would export different bytes.
    import cifar_resnet

    src = Path(cifar_resnet.__file__).parents[1]
    folders = {str(REPO), str(src), str(src.resolve())}
    for name, path in exported.items():
        contents = file_contents(path)
        assert [folder for folder in folders if folder.encode() in contents] == [], name


CHILD_EXPORT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    import cifar_resnet
    from cifar_resnet.export import write_exports
    from cifar_resnet.models import build_model

    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    assert Path(cifar_resnet.__file__).resolve().is_relative_to(src.resolve()), cifar_resnet.__file__
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("resnet18", 10, width=8).eval()
    write_exports(model, torch.randn(2, 3, 32, 32), out)
    """
)


@pytest.mark.slow  # two more exports in subprocesses, of a case the quick loop covers in-process
def test_two_checkouts_in_different_folders_export_the_same_bytes(tmp_path) -> None:
    # Each child imports its own copy of src/ (folder names of different lengths) and writes
    # into its own folder, with the hash seed the stages fix (stages/_local_src.py).
    exports = []
    for checkout in ("a", "another-checkout"):
        src = tmp_path / checkout / "src"
        shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
        env = {**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
        result = subprocess.run([sys.executable, "-c", CHILD_EXPORT, str(src), str(tmp_path / checkout / "export")],
                                capture_output=True, text=True, cwd=tmp_path / checkout, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        exports.append({path.name: path.read_bytes() for path in (tmp_path / checkout / "export").iterdir()})
    first, second = exports
    assert sorted(first) == sorted(second) == sorted(EXPORT_FILES.values())
    assert [name for name in first if first[name] != second[name]] == []


def test_exporting_leaves_the_callers_model_alone(inputs, tmp_path) -> None:
    model = tiny_model().train()
    write_exports(model, inputs, tmp_path, onnx=False)
    assert model.training
    assert sorted(p.name for p in tmp_path.iterdir()) == ["program.pt2", "scripted.pt", "traced.pt"]


@pytest.mark.slow  # another subprocess run of a script the quick loop already runs
def test_all_formats_load_and_match_eager_in_a_fresh_process(model, inputs, exported, tmp_path) -> None:
    with torch.no_grad():
        torch.save({"inputs": inputs, "expected": model(inputs)}, tmp_path / "io.pt")
    # Only torch and onnxruntime in the child: what a deployment without this project has.
    child = textwrap.dedent(
        """
        import json, sys, warnings
        import onnxruntime, torch
        warnings.simplefilter("ignore")
        io_path, files = sys.argv[1], json.loads(sys.argv[2])
        data = torch.load(io_path)
        models = {
            "traced": torch.jit.load(files["traced"]),
            "scripted": torch.jit.load(files["scripted"]),
            "exported": torch.export.load(files["exported"]).module(),
        }
        session = onnxruntime.InferenceSession(files["onnxruntime"], providers=["CPUExecutionProvider"])
        models["onnxruntime"] = lambda x: torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
        with torch.no_grad():
            diffs = {name: (m(data["inputs"]) - data["expected"]).abs().max().item() for name, m in models.items()}
        assert "cifar_resnet" not in sys.modules
        print(json.dumps(diffs))
        """
    )
    files = json.dumps({name: str(path) for name, path in exported.items()})
    result = subprocess.run(
        [sys.executable, "-c", child, str(tmp_path / "io.pt"), files],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    diffs = json.loads(result.stdout)
    assert set(diffs) == set(EXPORT_FILES)
    assert all(diff < ATOL for diff in diffs.values()), diffs


def test_missing_or_corrupt_exports_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="export"):
        load_scripted(tmp_path / "absent.pt")
    with pytest.raises(UserError, match="export"):
        load_program(tmp_path / "absent.pt2")
    with pytest.raises(UserError, match="export"):
        OnnxRuntimeModel(tmp_path / "absent.onnx")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a loadable"):
        load_scripted(bad)


# --- parity ------------------------------------------------------------------------------


def test_max_abs_diff_covers_every_batch(model: torch.nn.Module) -> None:
    inputs = torch.randn(5, 3, 32, 32)

    def shifted_last(x: torch.Tensor) -> torch.Tensor:
        return model(x) + 0.5 * (x[:, :1, 0, 0] > 1e3)  # true only for the marked image

    assert max_abs_diff(model, shifted_last, inputs, batch_size=2) == 0.0
    inputs[4, 0, 0, 0] = 1e4  # only the last, partial batch differs
    assert max_abs_diff(model, shifted_last, inputs, batch_size=2) == pytest.approx(0.5)


def test_check_parity_raises_on_large_or_nan_diff() -> None:
    check_parity("ok", 1e-6, atol=1e-5)
    with pytest.raises(RuntimeError, match="traced"):
        check_parity("traced", 0.3, atol=1e-5)
    with pytest.raises(RuntimeError, match="scripted: max .* is nan"):
        check_parity("scripted", float("nan"), atol=1e-5)


def test_a_mismatching_export_fails_the_parity_check(model, inputs, exported, tmp_path) -> None:
    # A file exported from slightly different weights: loads fine, but its outputs stray.
    other = tiny_model()
    with torch.no_grad():
        other.fc.bias.add_(1e-2)
    mismatched = write_exports(other, inputs, tmp_path, onnx=False)
    good = load_exports({"traced": exported["traced"]})
    bad = load_exports({"scripted": mismatched["scripted"]})
    with pytest.raises(RuntimeError, match="scripted.*above the tolerance"):
        check_exports(model, {**good, **bad}, inputs, ATOL)


def test_a_corrupted_onnx_file_fails_the_parity_check(model, inputs, exported, tmp_path) -> None:
    graph = onnx.load(str(exported["onnxruntime"]))
    fc_bias = next(t for t in graph.graph.initializer if t.name == "fc.bias")
    values = onnx.numpy_helper.to_array(fc_bias).copy()
    values[3] += 0.5
    fc_bias.CopyFrom(onnx.numpy_helper.from_array(values, fc_bias.name))
    onnx.save(graph, str(tmp_path / "corrupt.onnx"))
    with pytest.raises(RuntimeError, match="onnxruntime"):
        check_exports(model, {"onnxruntime": OnnxRuntimeModel(tmp_path / "corrupt.onnx")}, inputs, ATOL)


# --- latency -----------------------------------------------------------------------------


def assert_sane_timing(row: dict) -> None:
    assert 0 < row["p50_ms"] <= row["p95_ms"]
    assert row["mean_ms"] > 0 and row["images_per_s"] > 0
    assert row["ms_per_image"] == pytest.approx(row["mean_ms"] / row["batch"])
    assert row["images_per_s"] == pytest.approx(1000.0 / row["ms_per_image"])


def test_latency_rows_time_every_model_at_every_batch_size(model, inputs, exported) -> None:
    # bf16 forced on (no skip reason), so its row is timed whatever this CPU supports.
    models = latency_models(model, load_exports(exported), bf16_skip=None)
    assert list(models) == list(LATENCY_ROWS)
    rows = latency_rows(models, inputs, BATCHES, warmup=1, repeats=2)
    assert [(row["model"], row["batch"]) for row in rows] == [(name, b) for name in LATENCY_ROWS for b in BATCHES]
    for row in rows:
        assert "skipped" not in row
        assert_sane_timing(row)

    markdown = latency_markdown(rows)
    lines = markdown.strip().splitlines()
    assert lines[0] == "| model | batch | mean ms | p50 ms | p95 ms | ms/image | images/s |"
    assert [line.split(" | ")[:2] for line in lines[2:]] == [[f"| {name}", str(b)] for name in LATENCY_ROWS for b in BATCHES]


def test_rows_that_cannot_run_stay_in_the_table_as_skipped(model, inputs, exported) -> None:
    without_onnx = {name: path for name, path in exported.items() if name != "onnxruntime"}
    models = latency_models(model, load_exports(without_onnx), bf16_skip="no native bf16 here")
    assert models["onnxruntime"] == Skipped("not exported (ONNX export switched off)")
    rows = latency_rows(models, inputs, BATCHES, warmup=1, repeats=2)
    skipped = {(row["model"], row["batch"]): row["skipped"] for row in rows if "skipped" in row}
    assert skipped == {
        ("onnxruntime", 1): "not exported (ONNX export switched off)",
        ("onnxruntime", 3): "not exported (ONNX export switched off)",
        ("eager_bf16", 1): "no native bf16 here",
        ("eager_bf16", 3): "no native bf16 here",
    }
    markdown = latency_markdown(rows, environment_info())
    assert "| eager_bf16 | 3 | skipped |" in markdown
    assert "- eager_bf16 skipped: no native bf16 here" in markdown
    assert all(f"| {name} | {b} |" in markdown for name in LATENCY_ROWS for b in BATCHES)



def test_metrics_hold_no_timings_only_the_worst_parity_in_millionths() -> None:
    # Timings differ between two runs of one model; `dvc metrics diff` must not report them.
    metrics = parity_metrics({"traced": 0.0, "onnxruntime": 8.106231689453125e-06, "exported": 1e-7})
    assert metrics == {"parity_max_abs_diff_micro": 8.11}  # DVC's 5-decimal rounding would print 8e-06 as 0.0
    assert parity_metrics({"traced": 0.0}) == {"parity_max_abs_diff_micro": 0.0}
    # Three significant digits of the worst export, whichever it is; none exported is no difference.
    assert parity_metrics({"traced": 1.23456e-05, "exported": 2e-07}) == {"parity_max_abs_diff_micro": 12.3}
    assert parity_metrics({}) == {"parity_max_abs_diff_micro": 0.0}


def test_bf16_is_skipped_exactly_when_the_cpu_lacks_native_bf16() -> None:
    # /proc/cpuinfo is an independent witness of what torch.cpu.get_capabilities reports.
    flags = set(Path("/proc/cpuinfo").read_text().split())
    native = bool({"avx512_bf16", "amx_bf16"} & flags)
    reason = bf16_skip_reason()
    assert (reason is None) == native, reason
    if reason is not None:
        assert "has no native bf16 (AVX512-BF16 or AMX-BF16)" in reason, reason


def test_environment_names_what_the_timings_depend_on() -> None:
    environment = environment_info()
    assert {"device", "threads", "torch", "onnxruntime", "onnx", "python", "processor"} <= set(environment)
    assert environment["threads"] == torch.get_num_threads() == 1
    assert environment["torch"] == torch.__version__
    assert environment["onnx"] == onnx.__version__


def test_preprocess_info_comes_from_the_model_config() -> None:
    config = {"classes": ["a", "b"], "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.25], "num_classes": 2}
    info = preprocess_info(config)
    assert (info["classes"], info["mean"], info["std"], info["image_size"]) == (["a", "b"], [0.5, 0.4, 0.3], [0.2, 0.2, 0.25], 32)
    with pytest.raises(UserError, match="mean"):
        preprocess_info({"classes": ["a"], "std": [1, 1, 1]})
    # The one decoder's resize, and no temperature unless one was fitted.
    assert info["resize"] == {"filter": "bicubic", "reducing_gap": 2.0, "jpeg_draft": True} and info["temperature"] is None
    assert preprocess_info(config, 0.53)["temperature"] == 0.53


def test_the_fitted_temperature_is_read_from_the_evaluate_metrics(tmp_path) -> None:
    metrics = tmp_path / "eval.json"
    metrics.write_text(json.dumps({"test": {"acc": 0.5}, "calibrated": {"temperature": 0.61, "fitted_on": 90}}))
    assert export_stage.fitted_temperature(metrics) == 0.61
    metrics.write_text(json.dumps({"test": {"acc": 0.5}}))  # evaluate.calibrate false, or no validation split
    assert export_stage.fitted_temperature(metrics) is None
    metrics.write_text(json.dumps({"calibrated": {"temperature": -1}}))
    with pytest.raises(UserError, match=r"calibrated\.temperature = -1 is not a positive number"):
        export_stage.fitted_temperature(metrics)
    with pytest.raises(UserError, match=r"missing\.json: not found \(written by the evaluate stage"):
        export_stage.fitted_temperature(tmp_path / "missing.json")


# --- the stage's work, in this process (pipeline.export.run, as stages/export.py calls it) ---


def write_stage_inputs(folder: Path) -> dict:
    """A tiny trained-looking model, a test split and params.yaml with a quick export section."""
    config = {
        "arch": "resnet18", "num_classes": 3, "width": 8, "stem": "cifar", "dropout": 0.0,
        "classes": ["circle", "square", "star"], "mean": [0.5, 0.45, 0.4], "std": [0.25, 0.24, 0.26],
    }
    save_model(folder / "models" / "model.pt", folder / "models" / "model.json", tiny_model(3), config)
    rng = np.random.default_rng(0)
    test = ImageSet(rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), rng.integers(0, 3, 10).astype(np.int64))
    save_imageset(folder / "data" / "prepared" / "test.npz", test)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["export"].update(parity_images=8, latency_batches=[1, 4], warmup=1, repeats=2, onnx=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return params["export"]


def test_export_stage_writes_checked_models_tables_and_compact_metrics(tmp_path, capsys) -> None:
    export = write_stage_inputs(tmp_path)
    paths = export_stage.ExportPaths(tmp_path / "data" / "prepared", tmp_path / "models" / "model.pt",
                                     tmp_path / "models" / "model.json", tmp_path / "models" / "export",
                                     tmp_path / "plots" / "export", tmp_path / "metrics" / "export.json",
                                     tmp_path / "metrics" / "eval.json")
    write_json(tmp_path / "metrics" / "eval.json", {"calibrated": {"temperature": 0.625, "fitted_on": 10}})
    export_stage.run(load_params(tmp_path / "params.yaml").export, paths)
    out = tmp_path / "models" / "export"
    assert json.loads((out / "preprocess.json").read_text())["temperature"] == 0.625
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*EXPORT_FILES.values(), "preprocess.json"]
    )
    latency = tmp_path / "plots" / "export"
    assert sorted(p.name for p in latency.iterdir()) == ["latency.json", "latency.md", "parity.json"]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["export", "model.json", "model.pt"]

    # The metrics: one deterministic parity figure, no timings (they live in latency.json/md).
    metrics = json.loads((tmp_path / "metrics" / "export.json").read_text())
    assert set(metrics) == {"parity_max_abs_diff_micro"}
    parity = json.loads((latency / "parity.json").read_text())
    assert set(parity["max_abs_diff"]) == set(EXPORT_FILES) and parity["images"] == 8
    assert max(parity["max_abs_diff"].values()) <= export["tolerance"] == parity["tolerance"]
    assert metrics["parity_max_abs_diff_micro"] == pytest.approx(max(parity["max_abs_diff"].values()) * 1e6, rel=1e-2, abs=1e-9)

    table = json.loads((latency / "latency.json").read_text())
    assert [(row["model"], row["batch"]) for row in table["rows"]] == [(m, b) for m in LATENCY_ROWS for b in (1, 4)]
    assert table["environment"]["device"] == "cpu" and table["environment"]["threads"] == 1
    markdown = (latency / "latency.md").read_text()
    assert all(f"| {name} | {b} |" in markdown for name in LATENCY_ROWS for b in (1, 4))
    assert markdown in capsys.readouterr().out

    preprocess = json.loads((out / "preprocess.json").read_text())
    saved_config = json.loads((tmp_path / "models" / "model.json").read_text())
    assert {key: preprocess[key] for key in ("classes", "mean", "std")} == {
        key: saved_config[key] for key in ("classes", "mean", "std")
    }
    assert preprocess["image_size"] == 32


class _WritesMarker:
    """Full pickle would call Path.touch(marker) while loading this."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _tiny_program(path: Path) -> None:
    """A two-layer program saved by torch.export.save (seconds, unlike a ResNet)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.BatchNorm2d(2)).eval()
    torch.export.save(torch.export.export(model, (torch.randn(2, 3, 8, 8),)), str(path))


def _replace_member(source: Path, target: Path, member: str, payload: bytes) -> None:
    """Copy a .pt2 with the member whose name ends with `member` replaced (or added) with `payload`."""
    import zipfile

    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            if info.filename != f"{root}/{member}":
                zout.writestr(info, zin.read(info))
        zout.writestr(f"{root}/{member}", payload)


@pytest.mark.parametrize(
    "member, payload, expected",
    [
        ("data/sample_inputs/model.pt", "pickle", "holds a pickle that weights_only=True refuses"),
        ("data/aotinductor/model/model.so", b"\x7fELF", "unexpected member"),
        ("data/constants/opaque_obj_0", "pickle", "object constant rebuilt by pickle"),
    ],
)
def test_load_program_refuses_files_that_could_run_code(member, payload, expected, tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "marker"
    _tiny_program(tmp_path / "good.pt2")
    assert isinstance(load_program(tmp_path / "good.pt2"), torch.nn.Module)  # a genuine file still loads
    evil = tmp_path / "evil.pt2"
    _replace_member(tmp_path / "good.pt2", evil, member, pickle.dumps(_WritesMarker(marker)) if payload == "pickle" else payload)
    with pytest.raises(UserError, match=rf"evil\.pt2 is not a safe model file \(.*{expected}") as caught:
        load_program(evil)
    assert "\n" not in str(caught.value)
    assert not marker.exists()


def test_load_program_refuses_a_file_that_is_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="is not a torch.export archive"):
        load_program(tmp_path / "junk.pt2")


def test_load_program_refuses_a_member_name_given_twice(tmp_path: Path) -> None:
    import zipfile

    _tiny_program(tmp_path / "good.pt2")
    evil = tmp_path / "twice.pt2"
    with zipfile.ZipFile(tmp_path / "good.pt2") as zin, zipfile.ZipFile(evil, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        with pytest.warns(UserWarning, match="Duplicate name"):
            zout.writestr(zin.infolist()[0], zin.read(zin.infolist()[0]))
    with pytest.raises(UserError, match=r"twice\.pt2 is not a safe model file \(a member name occurs twice\)"):
        load_program(evil)


def test_load_program_refuses_an_opaque_constant_declared_in_the_config(tmp_path: Path) -> None:
    import zipfile

    marker = tmp_path / "marker"
    _tiny_program(tmp_path / "good.pt2")
    evil = tmp_path / "opaque.pt2"
    config = {"config": {"c": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}}}
    with zipfile.ZipFile(tmp_path / "good.pt2") as zin, zipfile.ZipFile(evil, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            if not info.filename.endswith("model_constants_config.json"):
                zout.writestr(info, zin.read(info))
        zout.writestr(f"{root}/data/constants/model_constants_config.json", json.dumps(config))
    with pytest.raises(UserError, match=r"declares an object constant rebuilt by pickle \(opaque_obj_0\)"):
        load_program(evil)
    assert not marker.exists()


def test_load_program_reports_an_archive_torch_cannot_read(tmp_path: Path) -> None:
    import zipfile

    _tiny_program(tmp_path / "good.pt2")
    broken = tmp_path / "broken.pt2"
    with zipfile.ZipFile(tmp_path / "good.pt2") as zin, zipfile.ZipFile(broken, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, b"{}" if info.filename.endswith("models/model.json") else zin.read(info))
    with pytest.raises(UserError, match=r"broken\.pt2: not a loadable exported program \(\w+\)"):
        load_program(broken)
