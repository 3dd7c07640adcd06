"""train.compile on the CPU: the stage's own library call trains a compiled ResNet as eager mode does.

torch.compile's CPU backend (inductor) writes C++ and builds it with the system compiler
(gcc), so this test also proves the machine can compile at all.
"""

import math

import pytest
import torch

from cifar_resnet.config import validate_params
from cifar_resnet.models import load_model
from cifar_resnet.training import load_checkpoint
from cifar_resnet.training.session import RunSources, TrainOutputs, train_resumably
from conftest import toy_images

# Compiling a ResNet's forward and backward takes a minute or two on a busy 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

OUTPUTS = ("model.pt", "model.json", "baseline.pt", "summary.json", "checkpoints", "live", "resume")


def train(folder, compile):
    """The train stage's library call on toy data; returns its outputs and the finished run's history."""
    params = validate_params({
        "seed": 0,
        "model": {"arch": "resnet18", "width": 4, "blocks": [1, 1, 1, 1]},  # a smaller graph compiles faster
        "train": {"epochs": 2, "batch_size": 16, "max_lr": 0.05, "scheduler": "none", "num_workers": 0,
                  "device": "cpu", "precision": "fp32", "channels_last": False, "compile": compile},
    })
    outputs = TrainOutputs(*(folder / name for name in OUTPUTS))
    train_resumably(params, ["dark", "bright"], toy_images(64, 0), toy_images(32, 1), outputs, RunSources([], [], folder))
    return outputs, load_checkpoint(outputs.checkpoints / "last.pt")["history"]


def predictions(outputs, images):
    model, _ = load_model(outputs.model, outputs.config)
    with torch.no_grad():
        return model(images)


def test_compiled_training_trains_and_predicts_as_eager_does(tmp_path):
    from torch._dynamo.utils import counters

    counters.clear()
    compiled, compiled_history = train(tmp_path / "compiled", compile=True)
    assert counters["stats"]["unique_graphs"] > 0  # dynamo really captured graphs: no silent eager fallback
    eager, eager_history = train(tmp_path / "eager", compile=False)

    trained = [epoch for epoch in compiled_history if epoch["epoch"] > 0]
    assert [epoch["epoch"] for epoch in trained] == [1, 2]
    assert all(math.isfinite(epoch["train_loss"]) and math.isfinite(epoch["val_loss"]) for epoch in trained)
    assert trained[1]["train_loss"] < trained[0]["train_loss"]
    baseline = torch.load(compiled.baseline, weights_only=True)
    final = torch.load(compiled.model, weights_only=True)  # the best epoch's weights
    assert any(not torch.equal(baseline[name], final[name]) for name in baseline if final[name].is_floating_point())

    # Same seed, same batches: compiled kernels differ from eager ones only in float rounding,
    # which training amplifies a little from step to step, so the runs agree closely, not exactly.
    first_compiled, first_eager = trained[0], [epoch for epoch in eager_history if epoch["epoch"] == 1][0]
    assert first_compiled["train_loss"] == pytest.approx(first_eager["train_loss"], rel=1e-3)
    eager_final = torch.load(eager.model, weights_only=True)
    learned = sum((final[n].double() - baseline[n].double()).norm() ** 2 for n in baseline if final[n].is_floating_point())
    apart = sum((final[n].double() - eager_final[n].double()).norm() ** 2 for n in baseline if final[n].is_floating_point())
    assert apart.sqrt() < 1e-3 * learned.sqrt(), f"{apart.sqrt():.3g} apart after learning {learned.sqrt():.3g}"
    images = (torch.from_numpy(toy_images(32, 2).images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    compiled_logits, eager_logits = predictions(compiled, images), predictions(eager, images)
    assert torch.allclose(compiled_logits, eager_logits, rtol=1e-3, atol=1e-3), (compiled_logits - eager_logits).abs().max()
    # The predicted class can flip only where eager's top two logits lie within twice the largest
    # logit difference: such a near-tie may rank either way with another CPU's kernels.
    drift = (compiled_logits - eager_logits).abs().max()
    top2 = eager_logits.topk(2, dim=1).values
    clear = top2[:, 0] - top2[:, 1] > 2 * drift
    assert torch.equal(compiled_logits.argmax(1)[clear], eager_logits.argmax(1)[clear])


def test_a_compile_mode_trains_too(tmp_path):
    """train.compile: reduce-overhead (CUDA graphs on a GPU) trains; on the CPU torch.compile builds no graphs for it."""
    from torch._dynamo.utils import counters

    counters.clear()
    _, history = train(tmp_path, compile="reduce-overhead")
    assert counters["stats"]["unique_graphs"] > 0
    trained = [epoch for epoch in history if epoch["epoch"] > 0]
    assert trained[1]["train_loss"] < trained[0]["train_loss"]
