"""The training options airbench94's recipe needs: fractional epochs, the linear schedule with a
fixed momentum, the whitening bias frozen after some epochs, BatchNorm momentum and eps, and the
reference the recipe is measured against (benchmarks/reference_airbench.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from cifar_resnet.config import ModelParams, validate_params
from cifar_resnet.errors import UserError
from cifar_resnet.models import load_model, prepare_model, save_model
from cifar_resnet.training import build_optimizer, build_schedule, load_checkpoint, parameter_groups
from cifar_resnet.training.schedule import epoch_count, steps_in_epoch, total_steps
from conftest import run_fit, tiny_model, toy_images, train_cfg

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.timeout(300)]


def test_a_fractional_epoch_count_ends_inside_the_last_epoch():
    # airbench94's 9.9 epochs of 48 batches: 9 whole epochs and 44 of the tenth's 48 batches.
    assert (epoch_count(9.9), total_steps(9.9, 48)) == (10, 476)
    assert [steps_in_epoch(e, 9.9, 48) for e in (1, 9, 10)] == [48, 48, 44]
    assert (epoch_count(3), total_steps(3, 48), steps_in_epoch(3, 3, 48)) == (3, 144, 48)


def test_fit_trains_exactly_the_steps_of_a_fractional_run(tmp_path):
    # 64 images at batch 16: 4 batches an epoch; 1.5 epochs are 6 steps, 2 in the second epoch.
    cfg = train_cfg(epochs=1.5, lookahead=True)
    model, outcome, _ = run_fit(tmp_path, cfg)
    assert [r.epoch for r in outcome.history] == [0, 1, 2]
    state = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    # The schedule stepped once per batch trained (OneCycleLR also refuses a step past its 6).
    assert state["scheduler"]["last_epoch"] == 6


def test_the_linear_schedule_rises_then_falls_in_straight_lines_at_a_fixed_momentum():
    # Jordan's airbench94: from 0.2 of the peak up to it over 23% of the steps, then down to 0.07.
    cfg = train_cfg(epochs=1, max_lr=1.5, momentum=0.85, scheduler="linear", pct_start=0.23, div_factor=5.0,
                    final_div_factor=0.2 / 0.07)
    optimizer = build_optimizer(parameter_groups(tiny_model(), 0.0), "sgd", cfg.max_lr, cfg.momentum)
    schedule = build_schedule(optimizer, cfg, 100)
    lrs, momenta = [], set()
    for _ in range(101):
        lrs.append(optimizer.param_groups[0]["lr"])
        momenta.add(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        schedule.after_batch()
    assert lrs[0] == pytest.approx(0.3) and lrs[23] == pytest.approx(1.5) and lrs[100] == pytest.approx(0.105)
    assert lrs[11] == pytest.approx(0.3 + 1.2 * 11 / 23)  # straight, not a cosine
    assert lrs[23 + 77 // 2] == pytest.approx(1.5 - (1.5 - 0.105) * (77 // 2) / 77)
    assert momenta == {0.85}  # OneCycleLR would cycle it between 0.85 and 0.95


def airbench_fit(tmp_path, freeze_after):
    """The whitening bias before training and after each of 3 epochs."""
    torch.manual_seed(0)
    model = prepare_model(ModelParams(arch="airbench", width=4), 2).model
    start = model.conv1.bias.detach().clone()
    train = {"epochs": 3, "batch_size": 16, "max_lr": 0.5, "num_workers": 0, "device": "cpu", "checkpoint_every": 1,
             "freeze_whitening_bias_after": freeze_after}
    cfg = validate_params({"model": {"arch": "airbench"}, "train": train}).train
    run_fit(tmp_path, cfg, model=model)
    return [start] + [load_checkpoint(tmp_path / "ckpt" / f"epoch_{e:03d}.pt")["model"]["conv1.bias"] for e in (1, 2, 3)]


def test_the_whitening_bias_learns_for_its_epochs_then_stays(tmp_path):
    start, first, second, third = airbench_fit(tmp_path / "frozen", freeze_after=1)
    assert not torch.equal(start, first)  # it learned in epoch 1
    assert torch.equal(first, second) and torch.equal(second, third)  # and not after
    start, first, second, third = airbench_fit(tmp_path / "free", freeze_after=None)
    assert not torch.equal(first, second) and not torch.equal(second, third)


@pytest.mark.parametrize("overrides, message", [
    ({"model": {"arch": "resnet18"}, "train": {"freeze_whitening_bias_after": 3}}, "resnet18 has no whitening layer"),
    ({"model": {"arch": "airbench"}, "train": {"freeze_whitening_bias_after": 3, "nproc": 2, "batch_size": 64}},
     "one process only"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"train": {"epochs": True}}, "train.epochs"),
    ({"model": {"norm_eps": 0}}, "model.norm_eps"),
    ({"model": {"norm_momentum": 1.5}}, "model.norm_momentum"),
])
def test_the_new_settings_refuse_what_cannot_work(overrides, message):
    with pytest.raises(UserError, match=message):
        validate_params(overrides)


def test_batchnorm_momentum_and_eps_reach_every_layer_and_the_saved_model(tmp_path):
    model = prepare_model(ModelParams(arch="airbench", width=4, norm_momentum=0.4, norm_eps=1e-12), 10).model
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 6 and {(m.momentum, m.eps) for m in norms} == {(0.4, 1e-12)}
    config = {**ModelParams(arch="airbench", width=4, norm_momentum=0.4, norm_eps=1e-12).model_dump(),
              "num_classes": 10, "classes": [str(i) for i in range(10)], "mean": [0.5] * 3, "std": [0.25] * 3}
    save_model(tmp_path / "model.pt", tmp_path / "model.json", model, config)
    loaded, _ = load_model(tmp_path / "model.pt", tmp_path / "model.json")
    assert {(m.momentum, m.eps) for m in loaded.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {(0.4, 1e-12)}
    resnet = prepare_model(ModelParams(arch="resnet18", width=4), 10).model  # torch's defaults stay the default
    assert {(m.momentum, m.eps) for m in resnet.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {(0.1, 1e-5)}


def reference_module():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import reference_airbench
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return reference_airbench


def test_the_reference_trains_its_steps_and_learns_an_easy_split():
    reference = reference_module()
    hyper = reference.Hyper(batch_size=16, epochs=1.5, whiten_images=32, widths=(8, 16, 16))
    model, result, _ = reference.train(toy_images(64), seed=0, device=torch.device("cpu"), hyper=hyper)
    assert result.steps == 6  # 4 batches an epoch, 1.5 epochs
    scores = reference.run(toy_images(64), toy_images(32, seed=1), 0, torch.device("cpu"), hyper).accuracy
    assert set(scores) == {"plain", "flip", "tta"} and all(0.0 <= v <= 1.0 for v in scores.values())
    assert scores["plain"] > 0.9  # dark against bright images: learned at once


def test_the_references_schedule_is_jordans():
    reference = reference_module()
    hyper = reference.Hyper()
    assert reference.lr_factor(0, 476, hyper) == pytest.approx(0.2)
    assert reference.lr_factor(int(0.23 * 476), 476, hyper) == pytest.approx(1.0)
    assert reference.lr_factor(476, 476, hyper) == pytest.approx(0.07)
    # The recipe's linear schedule is the same function of the step.
    recipe = validate_params({"train": {"scheduler": "linear", "epochs": 9.9, "pct_start": 0.23, "div_factor": 5.0,
                                        "final_div_factor": 0.2 / 0.07, "max_lr": 1.0}}).train
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = build_schedule(optimizer, recipe, 48)
    for step in range(477):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(reference.lr_factor(step, 476, hyper))
        optimizer.step()
        schedule.after_batch()


def test_the_cpu_recipe_is_airbench94s_published_settings():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from recipe import load_recipe
    finally:
        sys.path.remove(str(REPO / "scripts"))
    recipe = load_recipe("cpu")["set"]
    reference = reference_module().Hyper()
    kilostep = reference.batch_size * (1 + 1 / (1 - reference.momentum))
    # His summed-loss rate and decay, as the mean-loss settings the pipeline takes.
    assert recipe["train.max_lr"] == pytest.approx(reference.lr / kilostep * reference.batch_size, rel=1e-4)
    decay_per_step = reference.weight_decay * reference.batch_size / kilostep
    assert recipe["train.weight_decay"] * recipe["train.max_lr"] == pytest.approx(decay_per_step, rel=1e-4)
    assert recipe["train.batch_size"] == reference.batch_size and recipe["train.epochs"] == reference.epochs
    assert recipe["train.momentum"] == reference.momentum and recipe["train.label_smoothing"] == reference.label_smoothing
    assert recipe["train.norm_lr_scale"] == reference.bias_scaler
    assert recipe["train.freeze_whitening_bias_after"] == reference.whiten_bias_epochs
    assert recipe["train.augment.crop_padding"] == reference.translate
    assert recipe["model.norm_momentum"] == pytest.approx(1 - reference.bn_momentum)
    assert recipe["model.norm_eps"] == reference.bn_eps
    assert 1 / recipe["train.div_factor"] == pytest.approx(reference.lr_start)
    assert 1 / recipe["train.div_factor"] / recipe["train.final_div_factor"] == pytest.approx(reference.lr_end)
    assert (recipe["train.scheduler"], recipe["train.pct_start"], recipe["train.lookahead"],
            recipe["train.augment.hflip"]) == ("linear", reference.warmup, True, "alternate")
