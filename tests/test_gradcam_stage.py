"""The gradcam stage on a tiny model and a tiny shapes test set.

Its logic runs in-process (pipeline.gradcam.run, as the stage script calls it); the
script itself runs in a subprocess where its exit status and stderr are the point.
"""

import json

import pytest
import torch
import yaml

from cifar_resnet.config import load_params
from cifar_resnet.data import ImageSet, generate_shapes, load_imageset, save_imageset
from cifar_resnet.gradcam_figures import grid_positions
from cifar_resnet.localisation import measure_localisation
from cifar_resnet.models import build_model, load_model, save_model
from cifar_resnet.inference import make_eval_tensors
from cifar_resnet.pipeline import gradcam

GRADCAM = {"images": 4, "score_images": 12, "method": "gradcam", "target_layer": "layer4"}
ARGS = ["--data", "prepared", "--model", "m.pt", "--config", "m.json", "--out", "plots/gradcam",
        "--metrics", "metrics/gradcam.json"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread: see conftest


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder holding a tiny model, a shapes test set with boxes, and params.yaml."""
    # One thread per stage process: the CPU is small and shared.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    _, test, classes = generate_shapes(2, 16, seed=0)
    save_imageset(tmp_path / "prepared" / "test.npz", test)
    torch.manual_seed(0)
    model = build_model("resnet18", len(classes), width=8, blocks=[1, 1, 1, 1])
    config = {"arch": "resnet18", "num_classes": len(classes), "width": 8, "blocks": [1, 1, 1, 1],
              "classes": classes, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    save_model(tmp_path / "m.pt", tmp_path / "m.json", model, config)
    write_gradcam_params(tmp_path)
    return tmp_path


def write_gradcam_params(folder, **overrides):
    """params.yaml with only a gradcam section: every other section takes its defaults."""
    (folder / "params.yaml").write_text(yaml.safe_dump({"gradcam": {**GRADCAM, **overrides}}))


def run_gradcam(folder) -> None:
    """The stage's work in this process, on `folder`'s params.yaml and files (ARGS' paths)."""
    paths = gradcam.GradcamPaths(folder / "prepared", folder / "m.pt", folder / "m.json", folder / "plots" / "gradcam",
                                 folder / "metrics" / "gradcam.json")
    gradcam.run(load_params(folder / "params.yaml").gradcam, paths)


def expected_localisation(folder) -> dict:
    """The score computed in-process by the library on the same model and images."""
    model, config = load_model(folder / "m.pt", folder / "m.json")
    test = load_imageset(folder / "prepared" / "test.npz").subset(list(range(GRADCAM["score_images"])))
    inputs, labels = make_eval_tensors(test, config["mean"], config["std"])
    return measure_localisation(model, inputs, labels.tolist(), test.boxes, GRADCAM["target_layer"], GRADCAM["method"])


def test_grid_overlays_and_localisation_score_on_shapes(workdir, capsys):
    run_gradcam(workdir)
    out = workdir / "plots" / "gradcam"
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "images"]
    classes = json.loads((workdir / "m.json").read_text())["classes"]
    labels = load_imageset(workdir / "prepared" / "test.npz").labels
    # One image per class first, each named by its place in the test set.
    shown = grid_positions(labels, GRADCAM["images"])
    assert len(shown) == GRADCAM["images"]
    assert len({int(labels[i]) for i in shown}) == min(len(set(labels.tolist())), len(shown))
    expected_names = [f"{i:02d}_{classes[labels[i]]}.png" for i in shown]
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(expected_names)
    for png in [out / "grid.png", *(out / "images").iterdir()]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000

    metrics = json.loads((workdir / "metrics" / "gradcam.json").read_text())
    assert metrics == {"localisation": expected_localisation(workdir)}
    assert 0.0 <= metrics["localisation"]["score"] <= 1.0
    assert metrics["localisation"]["images"] == GRADCAM["score_images"]
    assert f"on {GRADCAM['score_images']} test images" in capsys.readouterr().out
    # Nothing but the declared outputs: no temporary folders or files beside them.
    assert sorted(p.name for p in (workdir / "plots").iterdir()) == ["gradcam"]
    assert sorted(p.name for p in (workdir / "metrics").iterdir()) == ["gradcam.json"]


def test_without_boxes_the_metrics_say_null(workdir, capsys):
    test = load_imageset(workdir / "prepared" / "test.npz")
    save_imageset(workdir / "prepared" / "test.npz", ImageSet(test.images, test.labels, boxes=None))
    run_gradcam(workdir)
    assert json.loads((workdir / "metrics" / "gradcam.json").read_text()) == {"localisation": None}
    assert "no object boxes" in capsys.readouterr().out
    assert len(list((workdir / "plots" / "gradcam" / "images").iterdir())) == GRADCAM["images"]


@pytest.mark.parametrize("stem, layer, size", [("cifar", "layer4", "4x4"), ("imagenet", "layer3", "2x2")])
def test_auto_picks_the_deepest_layer_with_a_map_for_the_models_stem(workdir, capsys, stem, layer, size):
    config = json.loads((workdir / "m.json").read_text()) | {"stem": stem}
    torch.manual_seed(0)
    model = build_model("resnet18", config["num_classes"], width=8, blocks=[1, 1, 1, 1], stem=stem)
    save_model(workdir / "m.pt", workdir / "m.json", model, config)
    write_gradcam_params(workdir, target_layer="auto", score_images=4)
    run_gradcam(workdir)
    assert f"gradcam on {layer} ({size} map)" in capsys.readouterr().out
    assert json.loads((workdir / "metrics" / "gradcam.json").read_text())["localisation"]["layer"] == layer


@pytest.mark.slow  # another subprocess run of a stage script; the quick loop runs test_stages' ones
def test_an_unknown_target_layer_fails_cleanly_before_any_output(workdir, run_stage):
    # Layers without a spatial map (fc, avgpool) fail the same way: see test_gradcam.py.
    write_gradcam_params(workdir, target_layer="layer9")
    result = run_stage("gradcam", *ARGS)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown target layer 'layer9'"), result.stderr
    assert all(name in lines[0] for name in ("layer1", "layer4", "fc")), lines[0]  # names the valid layers
    assert not (workdir / "plots").exists() and not (workdir / "metrics").exists()
