"""benchmarks/gpu_report.py --quick --device cpu: every section runs and both report files say so."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cifar_resnet.config import apply_overrides, parse_yaml, validate_params
from cifar_resnet.models import count_parameters, prepare_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # the whole quick report in a subprocess

ROOT = Path(__file__).resolve().parents[1]


def jpeg_folder(root: Path, per_class: int = 40) -> Path:
    """A two-class CIFAR-like ImageFolder: dark and bright 32x32 JPEGs, in train/ and test/."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", per_class // 4)):
        for label, (name, level) in enumerate((("dark", 50), ("bright", 200))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(level, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.jpg")
    return root


def test_quick_cpu_report_covers_every_section(tmp_path):
    cifar = jpeg_folder(tmp_path / "cifar")
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # this checkout's library, not another install
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_report.py"), "--out", str(out), "--quick",
               "--device", "cpu", "--cifar", str(cifar)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert finished.returncode == 0, finished.stdout[-4000:] + finished.stderr[-4000:]

    report = json.loads((out / "report.json").read_text())
    text = json.dumps(report)
    assert '"error"' not in text, text[:4000]
    assert report["quick"] is True and report["environment"]["torch"] and report["complete"] is True
    rows = report["throughput"]
    timed = [row for row in rows if "images_per_s" in row]
    assert {row["arch"] for row in timed} == {"resnet18", "resnet34"}
    assert {row["feeding"] for row in timed} == {"device", "loader"} and {row["precision"] for row in timed} == {"fp32", "bf16"}
    assert all(row["images_per_s"] > 0 and 0.0 <= row["data_wait_share"] <= 1.0 for row in timed)
    assert all(row["skipped"].startswith("--quick") for row in rows if row["compile"])
    latency = {(row["model"], row["batch"]) for row in report["latency"]["rows"] if "mean_ms" in row}
    assert {("eager", 1), ("traced", 8), ("exported", 1)} <= latency
    assert report["ddp"]["processes"] == 2 and report["ddp"]["images_per_s_after_first_epoch"] > 0
    parity = report["recipe_vs_airbench94"]  # airbench_parity's stick, shrunk to width 4, batch 16, 2 epochs
    assert parity["train_images"] == 80 and parity["test_images"] == 20
    assert [(run["side"], run["seed"]) for run in parity["runs"]] == [
        ("reference", 0), ("recipe", 0), ("reference", 1), ("recipe", 1)]
    shares = {k / 20 for k in range(21)}  # a share of the 20 test images
    assert all(run[view] in shares for run in parity["runs"] for view in ("plain", "flip", "tta6"))
    assert all(run["train_seconds"] > 0 for run in parity["runs"]) and parity["summary"]["time_ratio"] > 0
    assert [run["steps"] for run in parity["runs"] if run["side"] == "reference"] == [10, 10]  # 80 / 16 x 2 epochs
    markdown = (out / "report.md").read_text()
    for heading in ("Training throughput", "Inference latency", "Data-parallel training", "The CPU recipe against airbench94"):
        assert f"## {heading}" in markdown
    print(f"quick report took {report['wall_s']} s")


def test_recipe_sweep_scores_each_variant_on_held_out_training_images(tmp_path):
    """benchmarks/recipe_sweep.py: one row per variant, trained on train/ minus --val images."""
    cifar = jpeg_folder(tmp_path / "cifar")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    script = [sys.executable, str(ROOT / "benchmarks" / "recipe_sweep.py"), "--source", str(cifar), "--device", "cpu",
              "--epochs", "1", "--val", "20"]
    finished = subprocess.run(script + ["--out", str(tmp_path / "s.json"), "--only", "base", "crop4"],
                              capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert finished.returncode == 0, finished.stdout[-4000:] + finished.stderr[-4000:]
    assert "60 train / 20 validation images" in finished.stdout  # 80 train/ images, 20 held out; test/ unused
    rows = json.loads((tmp_path / "s.json").read_text())
    assert [(row["name"], row["overrides"], row["epochs"]) for row in rows] == [
        ("base", [], 1), ("crop4", ["train.augment.crop_padding=4"], 1)]
    # The recipe's own network (cpu: airbench at width 64), not params.yaml's default ResNet34 at width 64.
    recipe = ROOT / "recipes" / "cpu.yaml"
    settings = [f"{key}={json.dumps(value)}" for key, value in yaml.safe_load(recipe.read_text())["set"].items()]
    model_cfg = validate_params(apply_overrides(parse_yaml((ROOT / "params.yaml").read_text()), settings)).model
    assert (model_cfg.arch, model_cfg.width) == ("airbench", 64)
    assert all(row["parameters"] == count_parameters(prepare_model(model_cfg, 2).model) for row in rows)
    assert all(row["final_val_acc"] in {k / 20 for k in range(21)} for row in rows)  # a share of the 20 images
    assert all(row["final_val_acc_flip_tta"] in {k / 20 for k in range(21)} for row in rows)

    finished = subprocess.run(script + ["--out", str(tmp_path / "none.json"), "--only", "base", "--budget", "0"],
                              capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-4000:]
    assert json.loads((tmp_path / "none.json").read_text()) == [{"name": "base", "skipped": "time budget"}]
