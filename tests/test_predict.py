"""scripts/predict.py: classifies image files with an exported model, with no project code but safeload."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_resnet.data import ImageSet
from cifar_resnet.export import export_onnx, export_program, preprocess_info, save_program, save_scripted, script_model
from cifar_resnet.fileio import write_json
from cifar_resnet.models import build_model
from cifar_resnet.inference import make_eval_tensors
from conftest import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread: see conftest

SCRIPT = REPO / "scripts" / "predict.py"
CONFIG = {"classes": ["circle", "square", "star", "moon"], "mean": [0.5, 0.45, 0.4], "std": [0.25, 0.24, 0.26]}
LINE = re.compile(r"^(?P<path>.+): (?P<ranked>[^:]+)$")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """A tiny model exported as scripted.pt, program.pt2 and model.onnx, with the stage's preprocess.json beside them."""
    torch.manual_seed(0)
    model = build_model("resnet18", len(CONFIG["classes"]), width=8)
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))  # training mode: moves the BatchNorm statistics off their defaults
    model.eval()
    folder = tmp_path_factory.mktemp("export")
    save_scripted(script_model(model), folder / "scripted.pt")
    save_program(export_program(model, torch.randn(2, 3, 32, 32)), folder / "program.pt2")
    export_onnx(model, torch.randn(2, 3, 32, 32), folder / "model.onnx")
    write_json(folder / "preprocess.json", preprocess_info(CONFIG))
    return model, folder


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> tuple[np.ndarray, list[Path]]:
    """Four random 32x32 RGB images written as PNG (lossless: the script sees these exact pixels)."""
    pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    folder = tmp_path_factory.mktemp("images")
    paths = [folder / f"image {i}.png" for i in range(len(pixels))]  # a space in the name on purpose
    for image, path in zip(pixels, paths):
        Image.fromarray(image).save(path)
    return pixels, paths


def run_predict(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120,
        # This tree's src: the script imports cifar_resnet.safeload for .pt2 files.
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")},
    )


def parse_line(line: str) -> tuple[str, list[tuple[str, float]]]:
    """'path: cls 91.2%, cls 5.0%' -> (path, [(cls, 0.912), (cls, 0.05)])."""
    match = LINE.match(line)
    assert match, line
    ranked = [item.rsplit(" ", 1) for item in match["ranked"].split(", ")]
    return match["path"], [(name, float(percent.rstrip("%")) / 100) for name, percent in ranked]


def eager_probabilities(model: torch.nn.Module, pixels: np.ndarray) -> torch.Tensor:
    """The pipeline's own normalisation and the eager model: what the script must reproduce."""
    images, _ = make_eval_tensors(ImageSet(pixels, np.zeros(len(pixels), dtype=np.int64)), CONFIG["mean"], CONFIG["std"])
    with torch.no_grad():
        return model(images).softmax(dim=1)


@pytest.mark.parametrize("model_file", [
    "scripted.pt", pytest.param("program.pt2", marks=pytest.mark.slow), pytest.param("model.onnx", marks=pytest.mark.slow)])
def test_predictions_match_the_eager_model(model_file, export_dir, pngs, tmp_path) -> None:
    model, folder = export_dir
    pixels, paths = pngs
    result = run_predict("--model", folder / model_file, "--top", "2", *paths, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(paths)
    expected = eager_probabilities(model, pixels)
    for line, path, probabilities in zip(lines, paths, expected):
        printed_path, ranked = parse_line(line)
        assert printed_path == str(path)
        assert len(ranked) == 2
        assert ranked[0][0] == CONFIG["classes"][int(probabilities.argmax())]
        for name, probability in ranked:
            assert probability == pytest.approx(float(probabilities[CONFIG["classes"].index(name)]), abs=0.0006)
        assert ranked[0][1] >= ranked[1][1]


@pytest.mark.slow  # predict.py run four times; the quick loop reads the temperature once, below
def test_a_temperature_divides_the_logits_before_the_softmax(export_dir, pngs, tmp_path) -> None:
    model, folder = export_dir
    pixels, paths = pngs
    result = run_predict("--model", folder / "scripted.pt", "--top", "4", "--temperature", "0.5", *paths, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    images, _ = make_eval_tensors(ImageSet(pixels, np.zeros(len(pixels), dtype=np.int64)), CONFIG["mean"], CONFIG["std"])
    with torch.no_grad():
        sharper = (model(images) / 0.5).softmax(dim=1)
    assert not torch.allclose(sharper, eager_probabilities(model, pixels), atol=0.01)  # the temperature matters here
    for line, probabilities in zip(result.stdout.strip().splitlines(), sharper):
        for name, probability in parse_line(line)[1]:
            assert probability == pytest.approx(float(probabilities[CONFIG["classes"].index(name)]), abs=0.0006)
    for bad in ("0", "-1", "nan", "inf"):
        refused = run_predict("--model", folder / "scripted.pt", "--temperature", bad, *paths, cwd=tmp_path)
        assert refused.returncode == 1 and refused.stdout == "", bad
        assert refused.stderr.strip() == f"error: --temperature must be a positive number, got {float(bad)}", refused.stderr


def test_the_temperature_comes_from_preprocess_json_and_the_flag_overrides_it(export_dir, pngs, tmp_path, capsys) -> None:
    """The export stage copies the fitted temperature into preprocess.json: no flag is needed.

    The script's main runs in this process: what is tested is where the temperature comes
    from, not the command line (the tests above run it as a command).
    """
    model, folder = export_dir
    pixels, paths = pngs
    scripted = tmp_path / "scripted.pt"
    scripted.write_bytes((folder / "scripted.pt").read_bytes())
    info = json.loads((folder / "preprocess.json").read_text())
    assert info["temperature"] is None  # none fitted: probabilities as the model gives them
    (tmp_path / "preprocess.json").write_text(json.dumps({**info, "temperature": 0.5}))
    script = _script()

    def printed(*args) -> list[list[tuple[str, float]]]:
        assert script.main([str(a) for a in ("--model", scripted, "--top", "4", *args, *paths)]) == 0
        return [parse_line(line)[1] for line in capsys.readouterr().out.splitlines()]

    eager = eager_probabilities(model, pixels)
    sharper = (eager.log() / 0.5).softmax(dim=1)  # softmax(logits / 0.5): the log-softmax differs by a constant
    assert not torch.allclose(sharper, eager, atol=0.01)  # the temperature matters here
    for args, expected in (((), sharper), (("--temperature", "1"), eager)):
        lines = printed(*args)
        assert len(lines) == len(paths), args
        for ranked, probabilities in zip(lines, expected):
            for name, probability in ranked:
                assert probability == pytest.approx(float(probabilities[CONFIG["classes"].index(name)]), abs=0.0006), args


def odd_sized_images(folder: Path) -> list[Path]:
    """Images that are not 32x32: a large JPEG (libjpeg's draft scaling applies) and a small odd PNG."""
    rng = np.random.default_rng(3)
    smooth = np.kron(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), np.ones((10, 10, 1), dtype=np.uint8))
    jpeg, png = folder / "big.jpg", folder / "odd.png"
    Image.fromarray(smooth).save(jpeg, quality=90)  # 400 x 300
    Image.fromarray(rng.integers(0, 256, (45, 27, 3), dtype=np.uint8)).save(png)
    return [jpeg, png]


def test_an_odd_sized_image_becomes_the_same_tensor_in_training_and_in_predict(tmp_path) -> None:
    """One decoder: the folder dataset (training's path) and predict.py give identical tensors."""
    from cifar_resnet.data import read_image_folder

    folder = tmp_path / "dataset"
    for split in ("train", "test"):
        (folder / split / "thing").mkdir(parents=True)
    images = odd_sized_images(folder / "train" / "thing")
    (folder / "test" / "thing" / "x.png").write_bytes(images[1].read_bytes())
    train, _, _ = read_image_folder(folder, workers=1)
    trained_on, _ = make_eval_tensors(train, CONFIG["mean"], CONFIG["std"])

    script = _script()
    info = preprocess_info(CONFIG)
    served = script.normalise(np.stack([script.read_image(path, info["image_size"], script.resize_from_json(info["resize"]))
                                        for path in images]), CONFIG["mean"], CONFIG["std"])
    assert torch.equal(served, trained_on)
    # The resize matters: what predict.py used to do (BILINEAR) gives other pixels.
    with Image.open(images[1]) as image:
        bilinear = np.asarray(image.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR))
    assert not np.array_equal(bilinear, train.images[1])


@pytest.mark.slow  # another subprocess run of a script the quick loop already runs
def test_other_sizes_and_modes_are_converted_and_top_is_capped(export_dir, tmp_path) -> None:
    model, folder = export_dir
    grey = tmp_path / "grey.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 40), dtype=np.uint8)).save(grey)
    result = run_predict("--model", folder / "scripted.pt", "--top", "10", grey, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _, ranked = parse_line(result.stdout.strip())
    assert sorted(name for name, _ in ranked) == sorted(CONFIG["classes"])  # all four, not ten
    assert sum(p for _, p in ranked) == pytest.approx(1.0, abs=0.003)


@pytest.mark.slow  # another subprocess run of a script the quick loop already runs
@pytest.mark.parametrize(
    "case, expected",
    [("missing image", "no such file"), ("text file named .png", "not an image")],
)
def test_an_unreadable_image_is_one_line_and_the_others_are_still_classified(case, expected, export_dir, pngs, tmp_path) -> None:
    _, folder = export_dir
    _, paths = pngs
    bad = tmp_path / "absent.png"
    if case == "text file named .png":
        bad = tmp_path / "notes.png"
        bad.write_text("not pixels")
    result = run_predict("--model", folder / "scripted.pt", paths[0], bad, paths[1], cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: ") and expected in lines[0], result.stderr
    assert [parse_line(line)[0] for line in result.stdout.strip().splitlines()] == [str(paths[0]), str(paths[1])]


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.slow  # another subprocess run of a script the quick loop already runs
@pytest.mark.parametrize(
    "change, expected",
    [
        (None, "preprocess.json: not found"),
        ({"image_size": 0}, "image_size = 0: expected a whole number"),
        ({"image_size": "32"}, "image_size = '32'"),
        ({"image_size": None}, "missing image_size"),
        ({"std": [0.2, 0.0, 0.2]}, "std = [0.2, 0.0, 0.2]"),
        ({"classes": []}, "classes: expected a non-empty list"),
        ({"temperature": 0}, "temperature = 0: expected null or a positive number"),
        ({"resize": {"filter": "cubic", "reducing_gap": 2.0, "jpeg_draft": True}}, "resize.filter = 'cubic'"),
        ({"resize": "bicubic"}, "resize: expected an object"),
    ],
)
def test_a_bad_preprocess_json_is_one_line(change, expected, export_dir, pngs, tmp_path) -> None:
    _, folder = export_dir
    _, paths = pngs
    model = tmp_path / "scripted.pt"
    model.write_bytes((folder / "scripted.pt").read_bytes())
    if change is not None:
        info = {**json.loads((folder / "preprocess.json").read_text()), **change}
        (tmp_path / "preprocess.json").write_text(json.dumps({k: v for k, v in info.items() if v is not None}))
    line = one_error_line(run_predict("--model", model, paths[0], cwd=tmp_path))
    assert "preprocess.json" in line and expected in line


class WritesMarker:
    """A pickle that, once unpickled with full pickle, creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def craft_program(source_path: Path, target_path: Path, member: str, payload: bytes) -> None:
    """A copy of a .pt2 with `member` replaced by `payload`; a replaced weight is declared pickled, as torch allows."""
    with zipfile.ZipFile(source_path) as source, zipfile.ZipFile(target_path, "w") as target:
        root = source.namelist()[0].split("/")[0]
        for info in source.infolist():
            data = source.read(info)
            if info.filename == f"{root}/{member}":
                data = payload
            elif info.filename == f"{root}/data/weights/model_weights_config.json":
                config = json.loads(data)
                for entry in config["config"].values():
                    entry["use_pickle"] = entry["use_pickle"] or f"data/weights/{entry['path_name']}" == member
                data = json.dumps(config).encode()
            target.writestr(info, data)


@pytest.mark.slow  # another subprocess run of a script the quick loop already runs
@pytest.mark.parametrize("member", ["data/sample_inputs/model.pt", "data/weights/weight_0"])
def test_a_pt2_carrying_a_pickle_runs_nothing_and_is_refused(member, export_dir, pngs, tmp_path) -> None:
    _, folder = export_dir
    _, paths = pngs
    marker = tmp_path / "marker"
    evil = tmp_path / "program.pt2"
    craft_program(folder / "program.pt2", evil, member, pickle.dumps(WritesMarker(marker)))
    (tmp_path / "preprocess.json").write_bytes((folder / "preprocess.json").read_bytes())
    line = one_error_line(run_predict("--model", evil, paths[0], cwd=tmp_path))
    assert f"{evil} is not a safe model file (" in line and member in line
    assert not marker.exists()
    assert pickle.loads(pickle.dumps(WritesMarker(marker))) is None and marker.exists()  # the pickle does bite


def test_a_16_bit_grey_image_is_scaled_not_clipped(tmp_path) -> None:
    grey = tmp_path / "grey16.png"
    Image.fromarray(np.full((8, 8), 30000, dtype=np.uint16)).save(grey)
    with Image.open(grey) as image:
        assert image.mode == "I;16"
    pixels = _script().read_image(grey, 8)
    assert pixels.shape == (8, 8, 3) and (pixels == round(30000 / 65535 * 255)).all()


def png_header_only(path: Path, width: int, height: int) -> None:
    """A 1-bit PNG that declares width x height pixels: PIL's bomb check runs on the header alone."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.slow  # another subprocess run of a script the quick loop already runs
@pytest.mark.parametrize("side", [20000, 10000])  # above 2x PIL's limit (it raises) and just above it (it warns)
def test_a_decompression_bomb_is_one_line(side, export_dir, pngs, tmp_path) -> None:
    _, folder = export_dir
    _, paths = pngs
    bomb = tmp_path / "bomb.png"
    png_header_only(bomb, side, side)
    result = run_predict("--model", folder / "scripted.pt", bomb, paths[0], cwd=tmp_path)
    assert one_error_line(result) == f"error: {bomb}: too many pixels to decode safely (more than {Image.MAX_IMAGE_PIXELS})"
    assert parse_line(result.stdout.strip())[0] == str(paths[0])


@pytest.mark.slow  # another subprocess run of a script the quick loop already runs
def test_an_unsupported_model_file_names_the_supported_formats(export_dir, pngs, tmp_path) -> None:
    _, folder = export_dir
    _, paths = pngs
    model = tmp_path / "model.h5"
    model.write_bytes(b"HDF5 weights")
    (tmp_path / "preprocess.json").write_bytes((folder / "preprocess.json").read_bytes())
    line = one_error_line(run_predict("--model", model, paths[0], cwd=tmp_path))
    assert "not a loadable model" in line and ".pt2" in line and ".onnx" in line


def _script():
    """scripts/predict.py imported as a module, for its helpers."""
    spec = importlib.util.spec_from_file_location("predict_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def third_party_imports(path: Path) -> set[str]:
    """The modules a Python file imports that are not in the standard library."""
    tree = ast.parse(path.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    return {name for name in imported if name.split(".")[0] not in sys.stdlib_module_names}


def test_the_script_imports_only_torch_numpy_safeload_images_onnxruntime_and_the_standard_library() -> None:
    # safeload (torch and the standard library only) and images (the one image decoder: numpy
    # and PIL only) from the package, or copied beside the script.
    assert third_party_imports(SCRIPT) == {"torch", "numpy", "onnxruntime", "cifar_resnet.safeload", "safeload",
                                           "cifar_resnet.images", "images"}
    assert third_party_imports(REPO / "src" / "cifar_resnet" / "images.py") == {"numpy", "PIL"}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_named_as_an_image_is_refused_not_waited_on(tmp_path) -> None:
    fifo = tmp_path / "stream.png"
    os.mkfifo(fifo)  # opening it for reading would block until a writer came
    script = _script()
    with pytest.raises(script.InputError, match=r"stream\.png: not a regular file$"):
        script.read_image(fifo, 32)


@pytest.mark.parametrize("temperature", [1e-40, 1e-300])
def test_a_tiny_temperature_gives_probabilities_never_nan(temperature) -> None:
    script = _script()
    logits = torch.tensor([[2.0, 1.0, -3.0], [0.5, 0.5, 0.25]])
    probabilities = script.predict(lambda images: logits[: len(images)], torch.zeros(2, 3, 4, 4), temperature)
    assert torch.isfinite(probabilities).all()
    assert probabilities[0].tolist() == [1.0, 0.0, 0.0]
    assert probabilities[1].tolist() == [0.5, 0.5, 0.0]  # a tie stays a tie
    assert "nan" not in script.format_line(Path("a.png"), probabilities[0], ["x", "y", "z"], 3)


def test_a_temperature_too_small_even_for_float64_is_refused() -> None:
    script = _script()
    logits = torch.tensor([[2.0, 1.0, -3.0]])
    with pytest.raises(script.InputError, match=r"^the temperature 1e-320 \(--temperature or preprocess\.json\) is too small"):
        script.predict(lambda images: logits, torch.zeros(1, 3, 4, 4), 1e-320)


def test_a_deeply_nested_preprocess_json_is_one_line(tmp_path) -> None:
    path = tmp_path / "preprocess.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    script = _script()
    with pytest.raises(script.InputError, match=r"not a valid preprocess\.json \(nested too deeply\)$"):
        script.read_preprocess(path)


@pytest.mark.parametrize("size, refused", [(32, False), (512, False), (513, True), (4096, True)])
def test_an_image_size_beyond_512_is_one_line(size, refused, tmp_path) -> None:
    # 4096 used to be accepted: two images then took 7.3 GB.
    path = tmp_path / "preprocess.json"
    path.write_text(json.dumps({**preprocess_info(CONFIG), "image_size": size}))
    script = _script()
    if refused:
        with pytest.raises(script.InputError) as caught:
            script.read_preprocess(path)
        assert str(caught.value) == (f"{path}: not a valid preprocess.json (image_size = {size}: "
                                     "expected a whole number from 1 to 512 (the export stage writes 32))")
    else:
        assert script.read_preprocess(path)["image_size"] == size


def test_larger_images_run_in_smaller_batches() -> None:
    # A forward pass holds as many pixels as 256 images of 32x32, whatever the image size.
    script = _script()
    batches = []

    def model(images: torch.Tensor) -> torch.Tensor:
        batches.append(len(images))
        return torch.zeros(len(images), 2)

    script.predict(model, torch.zeros(300, 3, 32, 32))
    script.predict(model, torch.zeros(130, 3, 64, 64))
    script.predict(model, torch.zeros(2, 3, 512, 512))
    assert batches == [256, 44, 64, 64, 2, 1, 1]


def test_each_image_stays_one_line_whatever_the_class_and_file_names() -> None:
    # A newline in a class name (preprocess.json) or a file name used to split the line.
    probabilities = torch.tensor([0.7, 0.2, 0.1])
    classes = ["cat\nimg.png: dog", "tab\there", "line\u2028sep"]
    line = _script().format_line(Path("odd\nname.png"), probabilities, classes, top=3)
    assert line == "odd\\nname.png: cat\\nimg.png: dog 70.0%, tab\\there 20.0%, line\\u2028sep 10.0%"
    assert len(line.splitlines()) == 1
    assert _script().format_line(Path("plain/cät 1.png"), probabilities, ["a b", "ünï", "c"], top=1) == "plain/cät 1.png: a b 70.0%"
