import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from cifar_resnet.config import validate_params
from cifar_resnet.data.arrays import ImageSet
from cifar_resnet.errors import UserError
from cifar_resnet.inference import autocast_dtype, cpu_has_native_bf16, evaluate_logits, select_device, wants_channels_last
from cifar_resnet.training import (
    DeviceFeeder, EarlyStopper, EpochResult, LoaderFeeder, Precision, build_optimizer, build_schedule,
    channel_stats, check_divergence, fit, load_checkpoint, parameter_groups, seed_everything, train_one_epoch,
)
from cifar_resnet.training.augment import MixedBatch
from cifar_resnet.training.feeding import chunk_batches
from cifar_resnet.training.lookahead import Lookahead, lookahead_decay
from cifar_resnet.training.loop import prepare
from cifar_resnet.training.run import assemble_run, build_run, start_run
from conftest import run_fit, tiny_model, toy_images, train_cfg


def test_channel_stats_on_known_images():
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    images[1] = 255
    mean, std = channel_stats(images)
    assert mean == pytest.approx([0.5, 0.5, 0.5])
    assert std == pytest.approx([0.5, 0.5, 0.5])
    # A constant channel gets std 1 instead of a division by zero.
    assert channel_stats(np.full((2, 32, 32, 3), 7, dtype=np.uint8))[1] == [1.0, 1.0, 1.0]


def test_fit_learns_logs_a_baseline_and_every_epoch_and_checkpoints(tmp_path):
    _, outcome, seen = run_fit(tmp_path, train_cfg(epochs=4))
    assert [r.epoch for r in seen] == [0, 1, 2, 3, 4]
    assert math.isnan(seen[0].train_loss) and not math.isnan(seen[0].val_acc)  # the untrained baseline
    assert outcome.history == seen and outcome.stop_reason == "completed"
    assert seen[-1].val_acc == 1.0
    last = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert last["epoch"] == 4 and last["run_info"]["key"] == "abc"
    assert {"model", "optimizer", "scheduler", "scaler", "early_stopping", "history"} <= set(last)
    best = load_checkpoint(tmp_path / "ckpt" / "best.pt")
    best_val = max(r.val_acc for r in seen[1:])
    assert best["epoch"] == outcome.best_epoch == min(r.epoch for r in seen[1:] if r.val_acc == best_val)


def test_periodic_checkpoints(tmp_path):
    run_fit(tmp_path, train_cfg(epochs=4, checkpoint_every=2))
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["best.pt", "epoch_002.pt", "epoch_004.pt", "last.pt"]


def test_fit_is_deterministic_on_cpu_and_resumes_exactly(tmp_path):
    cfg = train_cfg(epochs=3, augment={"cutmix": {"p": 0.5}, "affine": {"p": 0.5}})
    _, first, _ = run_fit(tmp_path / "a", cfg)
    _, second, _ = run_fit(tmp_path / "b", cfg)
    # repr compares floats exactly and, unlike ==, treats the baseline's NaN train metrics as equal.
    assert repr(first.history) == repr(second.history)
    # Resume from the epoch-2 state of a 2-epoch-checkpointing run.
    run_fit(tmp_path / "c", train_cfg(epochs=3, checkpoint_every=2, augment={"cutmix": {"p": 0.5}, "affine": {"p": 0.5}}))
    state = load_checkpoint(tmp_path / "c" / "ckpt" / "epoch_002.pt")
    _, resumed, seen = run_fit(tmp_path / "d", cfg, resume=state)
    assert [r.epoch for r in seen] == [0, 1, 2, 3]
    assert repr(resumed.history) == repr(first.history)


def test_fit_without_validation_logs_nan_and_keeps_best_by_training_accuracy(tmp_path):
    empty = ImageSet(images=np.zeros((0, 32, 32, 3), np.uint8), labels=np.zeros(0, np.int64))
    _, outcome, _ = run_fit(tmp_path, train_cfg(epochs=2), val=empty)
    assert all(math.isnan(r.val_acc) for r in outcome.history)
    assert (tmp_path / "ckpt" / "best.pt").exists()


def test_target_accuracy_stops_training(tmp_path):
    _, outcome, _ = run_fit(tmp_path, train_cfg(epochs=10, target_val_acc=0.9))
    assert outcome.stop_reason == "target accuracy"
    assert outcome.history[-1].val_acc >= 0.9 and outcome.history[-1].epoch < 10


def test_early_stopping_stops_when_nothing_improves(tmp_path):
    # A learning rate of ~0 freezes the model: validation accuracy never improves after epoch 1.
    cfg = train_cfg(epochs=10, max_lr=1e-9, scheduler="none", early_stopping={"patience": 2})
    _, outcome, _ = run_fit(tmp_path, cfg)
    assert outcome.stop_reason == "early stopping"
    assert outcome.history[-1].epoch == 3


def test_early_stopper_counts_stale_epochs_for_loss_and_accuracy():
    result = lambda e, loss, acc: EpochResult(e, 0.0, 0.0, loss, acc, 0.1)
    by_loss = EarlyStopper("val_loss", patience=2, min_delta=0.01)
    for e, loss in enumerate([1.0, 0.995, 0.8, 0.85, 0.9], start=1):
        by_loss.update(result(e, loss, 0.5))
    assert by_loss.best == 0.8 and by_loss.stale == 2 and by_loss.should_stop
    by_acc = EarlyStopper("val_acc", patience=None)
    for e, acc in enumerate([0.1, 0.05, 0.01], start=1):
        by_acc.update(result(e, 1.0, acc))
    assert by_acc.stale == 2 and not by_acc.should_stop  # patience None: never stops


def one_batch_epoch(cfg, model=None):
    """One epoch of one step on a fixed batch of large inputs (a large gradient): the stage's
    assembly (optimiser, schedule) and fit's `prepare`, fed by a one-batch feeder."""
    run = assemble_run(model or tiny_model(), toy_images(16), toy_images(0), cfg, 0, torch.device("cpu"), num_classes=2)
    run.feeder = OneBatch(torch.randn(16, 3, 32, 32) * 50, torch.arange(16) % 2)
    trainable, precision, scaler = prepare(run)
    train_one_epoch(trainable, run, 1, scaler, precision)
    return run.model


class OneBatch:
    """A feeder of one fixed, unmixed batch per epoch."""

    def __init__(self, images, labels):
        self.batch = MixedBatch(images, labels, labels, 1.0)

    def __len__(self):
        return 1

    def epoch(self, epoch):
        return iter([self.batch])


def total_grad_norm(model):
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None])).item()


def test_gradient_clipping_bounds_the_norm():
    unclipped = total_grad_norm(one_batch_epoch(train_cfg(epochs=1)))
    assert unclipped > 0.05
    clipped = total_grad_norm(one_batch_epoch(train_cfg(epochs=1, clip_grad_norm=0.05)))
    assert clipped == pytest.approx(0.05, rel=1e-3)


def test_l1_penalty_shrinks_weights():
    def weight_l1(model):
        return sum(p.abs().sum().item() for p in model.parameters() if p.ndim > 1)

    torch.manual_seed(0)
    plain = one_batch_epoch(train_cfg(epochs=1, max_lr=0.01, scheduler="none"))
    torch.manual_seed(0)
    penalised = one_batch_epoch(train_cfg(epochs=1, max_lr=0.01, scheduler="none", l1=1.0))
    assert weight_l1(penalised) < weight_l1(plain) - 0.1


def test_no_weight_decay_on_norm_and_bias_when_asked():
    model = tiny_model()
    groups = parameter_groups(model, 5e-4, decay_norm_and_bias=False)
    by_decay = {g["weight_decay"]: g["params"] for g in groups}
    assert all(p.ndim > 1 for p in by_decay[5e-4]) and all(p.ndim == 1 for p in by_decay[0.0])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert [g["weight_decay"] for g in parameter_groups(model, 5e-4)] == [5e-4]


def test_group_lr_scale_is_kept_by_the_schedule():
    model = tiny_model()
    groups = [{"params": list(model[0].parameters()), "lr_scale": 0.1}, {"params": list(model[-1].parameters())}]
    optimizer = build_optimizer(groups, "sgd", 0.1)
    build_schedule(optimizer, train_cfg(epochs=1, max_lr=0.1), 10)
    first, second = (g["lr"] for g in optimizer.param_groups)
    assert first == pytest.approx(second * 0.1)


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_optimizers_by_name(name, cls):
    optimizer = build_optimizer(parameter_groups(tiny_model(), 1e-4), name, lr=0.01)
    assert isinstance(optimizer, cls)
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_foreach_kernels_on_cpu_are_bit_identical_to_the_per_parameter_loop(name):
    """"auto" on the CPU means foreach, which must not change a single bit of a CPU run."""
    def trained(kernels):
        torch.manual_seed(0)
        model = tiny_model()
        optimizer = build_optimizer(parameter_groups(model, 5e-4, decay_norm_and_bias=False), name, 0.05,
                                    kernels=kernels)
        images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 2
        for _ in range(5):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
        return optimizer, [p.detach() for p in model.parameters()]

    auto, auto_weights = trained("auto")
    loop, loop_weights = trained("for-loop")
    assert auto.defaults["foreach"] is True and loop.defaults["foreach"] is False
    assert all(torch.equal(a, b) for a, b in zip(auto_weights, loop_weights))


def test_optimizer_kernels_follow_the_device_and_can_be_chosen():
    from cifar_resnet.training.optim import kernel_flags

    assert kernel_flags("auto", torch.device("cuda")) == {"fused": True, "foreach": False}
    assert kernel_flags("auto", torch.device("cpu")) == {"fused": False, "foreach": True}
    assert kernel_flags("for-loop", torch.device("cuda")) == {"fused": False, "foreach": False}
    with pytest.raises(ValueError, match="unknown optimizer kernels"):
        kernel_flags("fast", torch.device("cpu"))


def test_a_resumed_run_keeps_this_machines_optimizer_kernels(tmp_path):
    """A checkpoint's saved kernel flags (a GPU run's fused ones, say) are not adopted on resume."""
    run_fit(tmp_path / "a", train_cfg(epochs=1, scheduler="none"))
    state = load_checkpoint(tmp_path / "a" / "ckpt" / "last.pt")
    for group in state["optimizer"]["param_groups"]:
        group.update(fused=True, foreach=False)
    seed_everything(0)
    run = assemble_run(tiny_model(), toy_images(64), toy_images(32, seed=1),
                       train_cfg(epochs=2, scheduler="none"), 0, torch.device("cpu"), num_classes=2)
    fit(run, tmp_path / "b", resume=state)
    assert all(g["foreach"] is True and g["fused"] is False for g in run.optimizer.param_groups)


def small_params(**train):
    return validate_params({"seed": 3, "model": {"arch": "resnet18", "width": 4, "blocks": [1, 1, 1, 1]},
                            "train": {"epochs": 1, "batch_size": 16, "num_workers": 0, "device": "cpu", **train}})


def test_build_run_writes_and_prints_nothing_and_start_run_writes_what_it_built(tmp_path, monkeypatch, capsys):
    """build_run is the stage's run without the stage's side effects; start_run adds exactly those."""
    monkeypatch.chdir(tmp_path)
    params = small_params()
    built = build_run(params, toy_images(64), toy_images(32, seed=1), ["dark", "bright"], torch.device("cpu"))
    assert list(tmp_path.iterdir()) == [] and capsys.readouterr().out == ""
    assert built.summary["params"] == sum(p.numel() for p in built.run.model.parameters())
    assert built.model_config["classes"] == ["dark", "bright"] and built.run.seed == 3
    started = start_run(params, toy_images(64), toy_images(32, seed=1), ["dark", "bright"],
                        tmp_path / "baseline.pt", tmp_path / "summary.json")
    assert started.description == built.description and started.summary == built.summary
    baseline = torch.load(tmp_path / "baseline.pt", weights_only=True)
    # Seeded anew: the same untrained weights, which start_run wrote as the baseline.
    assert all(torch.equal(baseline[k], v) for k, v in built.run.model.state_dict().items())
    assert json.loads((tmp_path / "summary.json").read_text()) == {"model": built.summary}


def test_prepare_sets_up_the_step_as_cfg_asks():
    run = build_run(small_params(precision="bf16", channels_last=True), toy_images(32), toy_images(0), ["a", "b"],
                    torch.device("cpu")).run
    trainable, precision, scaler = prepare(run)
    assert precision == Precision(torch.bfloat16, True)
    assert trainable is run.model and not scaler.is_enabled()  # no wrapper asked; bf16 needs no loss scaling
    conv = next(m for m in run.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()


def test_nesterov_sgd():
    optimizer = build_optimizer(parameter_groups(tiny_model(), 0.0), "sgd", lr=0.01, momentum=0.9, nesterov=True)
    assert optimizer.param_groups[0]["nesterov"] is True


def lr_trace(cfg, steps_per_epoch=10, val_losses=None):
    """The LR of every batch over cfg.epochs epochs, stepping the schedule as fit does."""
    optimizer = build_optimizer(parameter_groups(tiny_model(), 0.0), "sgd", cfg.max_lr)
    schedule = build_schedule(optimizer, cfg, steps_per_epoch)
    lrs = []
    for epoch in range(cfg.epochs):
        for _ in range(steps_per_epoch):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.after_batch()
        schedule.after_epoch(val_losses[epoch] if val_losses else 1.0)
    return lrs


def test_onecycle_learning_rate_at_known_steps():
    lrs = lr_trace(train_cfg(epochs=10, max_lr=0.1, pct_start=0.25, div_factor=25.0, final_div_factor=1e4))
    assert lrs[0] == pytest.approx(0.1 / 25)
    assert max(lrs) == pytest.approx(0.1, rel=1e-3) and int(np.argmax(lrs)) in (24, 25)
    assert lrs[-1] == pytest.approx(0.1 / 25 / 1e4, rel=0.05)


def test_step_schedule_decays_every_step_size_epochs():
    lrs = lr_trace(train_cfg(epochs=5, max_lr=0.1, scheduler="step", step_size=2, gamma=0.5))
    assert [lrs[e * 10] for e in range(5)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_plateau_schedule_decays_when_validation_loss_stalls():
    lrs = lr_trace(train_cfg(epochs=5, max_lr=0.1, scheduler="plateau", plateau_patience=1, gamma=0.1),
                   val_losses=[1.0, 0.5, 0.6, 0.7, 0.7])
    # Epoch 3 is the first stale one, epoch 4 the second: the decay lands before epoch 5.
    assert [lrs[e * 10] for e in range(5)] == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.01])


def test_cosine_with_warmup():
    lrs = lr_trace(train_cfg(epochs=4, max_lr=0.1, scheduler="cosine", warmup_epochs=1))
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)  # linear warm-up over 10 steps
    assert lrs[10] == pytest.approx(0.1) and lrs[25] == pytest.approx(0.05, rel=0.05)  # half-way down
    assert lrs[-1] < 0.001


def test_constant_schedule():
    assert set(lr_trace(train_cfg(epochs=2, max_lr=0.1, scheduler="none"))) == {0.1}


def test_loader_workers_do_not_change_the_batches():
    images = toy_images(70)
    cfg = train_cfg(augment={"affine": {"p": 0.5}, "erasing": {"p": 0.5}})
    make = lambda workers: LoaderFeeder(images, cfg.augment, [0.5] * 3, [0.25] * 3, 32, seed=1, num_workers=workers)
    in_process = list(make(0).epoch(2))
    in_workers = list(make(2).epoch(2))
    assert len(in_process) == 2  # 70 images, batch 32: the partial batch of 6 is dropped
    for a, b in zip(in_process, in_workers):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels_a, b.labels_a) and a.lam == b.lam == 1.0
    other_epoch = next(iter(make(0).epoch(3)))
    assert not torch.equal(other_epoch.images, in_process[0].images)


def test_device_feeder_batches_are_normalised_augmented_and_repeatable():
    images = toy_images(70)
    cfg = train_cfg(data_on_device=True)
    feeder = DeviceFeeder(images, cfg.augment, [0.5] * 3, [0.25] * 3, 32, seed=1, device=torch.device("cpu"))
    first, again = list(feeder.epoch(1)), list(feeder.epoch(1))
    assert len(first) == len(feeder) == 2
    assert first[0].images.shape == (32, 3, 32, 32) and first[0].images.dtype == torch.float32
    assert all(torch.equal(a.images, b.images) for a, b in zip(first, again))
    assert not torch.equal(first[0].images, next(feeder.epoch(2)).images)


def ops_dispatched(work) -> int:
    """How many torch operators `work()` dispatches: each is a kernel launch's worth of host time on a GPU."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Counter.count += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        work()
    return Counter.count


def test_device_feeder_host_work_per_batch_shrinks_with_the_chunk():
    """Augmenting many batches at once pays the host's per-op cost once per chunk, not per batch."""
    images = toy_images(512)
    augment = train_cfg(augment={"affine": {"p": 0.5}, "erasing": {"p": 0.5}}).augment  # seed 001's set, no mixing
    make = lambda chunk: DeviceFeeder(images, augment, [0.5] * 3, [0.25] * 3, 16, seed=1, device=torch.device("cpu"),
                                      chunk_images=chunk)
    per_batch = ops_dispatched(lambda: list(make(None).epoch(1))) / 32  # the CPU's default: one batch a chunk
    assert make(None).chunk_batches == 1 and chunk_batches(16, torch.device("cuda")) == 8192 // 16
    chunked = make(512)  # as on a GPU
    assert chunked.chunk_batches == 32
    per_batch_chunked = ops_dispatched(lambda: list(chunked.epoch(1))) / 32
    assert per_batch_chunked < per_batch / 8, (per_batch, per_batch_chunked)
    batches = list(chunked.epoch(1))
    assert [len(b.images) for b in batches] == [16] * 32
    # A fresh feeder (a resumed run) draws the same chunks: a function of (seed, epoch, chunk).
    assert all(torch.equal(a.images, b.images) for a, b in zip(batches, make(512).epoch(1)))
    assert not torch.equal(batches[0].images, next(iter(make(512).epoch(2))).images)
    assert torch.equal(torch.cat([b.labels_a for b in batches]), torch.cat([b.labels_a for b in make(None).epoch(1)]))


@pytest.mark.parametrize("on_device", [False, True], ids=["loader", "device"])
def test_feeders_mix_batches_by_seed_epoch_and_step(on_device):
    """CutMix/MixUp happen where the batch is made: the loop gets (images, labels_a, labels_b, lam)."""
    images = toy_images(64)
    cfg = train_cfg(augment={"cutmix": {"p": 0.5}, "mixup": {"p": 0.5}})
    if on_device:
        make = lambda: DeviceFeeder(images, cfg.augment, [0.5] * 3, [0.25] * 3, 16, seed=3, device=torch.device("cpu"))
    else:
        make = lambda: LoaderFeeder(images, cfg.augment, [0.5] * 3, [0.25] * 3, 16, seed=3, num_workers=0)
    first, again = list(make().epoch(1)), list(make().epoch(1))
    assert all(isinstance(b, MixedBatch) and 0.0 <= b.lam < 1.0 for b in first)  # p sums to 1: every batch mixed
    assert any(not torch.equal(b.labels_a, b.labels_b) for b in first)
    for a, b in zip(first, again):  # a function of (seed, epoch, step): what exact resume relies on
        assert torch.equal(a.images, b.images) and torch.equal(a.labels_b, b.labels_b) and a.lam == b.lam
    unmixed = train_cfg().augment
    plain = (DeviceFeeder(images, unmixed, [0.5] * 3, [0.25] * 3, 16, seed=3, device=torch.device("cpu")) if on_device
             else LoaderFeeder(images, unmixed, [0.5] * 3, [0.25] * 3, 16, seed=3))
    assert all(b.lam == 1.0 and torch.equal(b.labels_a, b.labels_b) for b in plain.epoch(1))


def test_precision_and_memory_format_choices():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("bf16", cpu) == torch.bfloat16
    assert autocast_dtype("fp16", cuda) == torch.float16 and autocast_dtype("fp32", cuda) is None
    assert wants_channels_last("auto", cuda) is True and wants_channels_last(True, cpu) is True
    assert wants_channels_last("auto", cpu, None) is False and wants_channels_last("auto", cpu, torch.bfloat16) is True


def test_auto_precision_is_bf16_exactly_on_cpus_that_run_it_natively():
    # /proc/cpuinfo is an independent witness of what torch.cpu.get_capabilities reports.
    flags = set(open("/proc/cpuinfo").read().split())
    native = bool({"avx512_bf16", "amx_bf16"} & flags)
    assert cpu_has_native_bf16() == native
    assert autocast_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if native else None)


def test_bf16_autocast_and_channels_last_train_on_cpu(tmp_path):
    model = tiny_model()
    computed = set()  # (training?, the convolution's output dtype, its input in channels_last?)
    model[0].register_forward_hook(lambda conv, inputs, output: computed.add(
        (conv.training, output.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last))))
    _, outcome, _ = run_fit(tmp_path, train_cfg(epochs=2, precision="bf16", channels_last=True), model=model)
    assert outcome.history[-1].val_acc == 1.0
    # What the convolution really ran in, for training steps and validation alike: autocast's bf16, NHWC input.
    # (fp32 training gets NCHW batches, so the format is a real witness there; validation tensors are NHWC
    # from the start, as make_eval_tensors permutes HWC arrays.)
    assert computed == {(True, torch.bfloat16, True), (False, torch.bfloat16, True)}


def test_evaluate_logits_batches():
    model = tiny_model()
    x = torch.randn(10, 3, 32, 32)
    logits = evaluate_logits(model, x, batch_size=3, device=torch.device("cpu"))
    assert logits.shape == (10, 2)
    assert torch.allclose(logits, model.eval()(x), atol=1e-6)


def test_cuda_without_a_gpu_is_a_user_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserError, match="no CUDA device"):
        select_device("cuda")
    assert select_device("auto").type == "cpu"


def test_corrupt_checkpoint_is_a_user_error(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a loadable checkpoint"):
        load_checkpoint(path)


def test_per_image_reseeding_repeats_draws_and_varies_between_images():
    from cifar_resnet.training.feeding import AugmentedImages
    from cifar_resnet.training import build_image_transform

    images = toy_images(4)
    cfg = train_cfg(augment={"affine": {"p": 1.0}, "erasing": {"p": 1.0}})
    dataset = AugmentedImages(images, build_image_transform(cfg.augment, [0.5] * 3, [0.25] * 3), seed=7)
    first = [dataset[(1, i)][0] for i in range(4)]
    shuffled_order = [dataset[(1, i)][0] for i in (3, 1, 0, 2)]
    assert all(torch.equal(first[i], shuffled_order[j]) for j, i in enumerate((3, 1, 0, 2)))
    same_image_other_epoch = dataset[(2, 0)][0]
    assert not torch.equal(first[0], same_image_other_epoch)


def epoch(train_loss, val_loss, val_acc=0.5):
    return EpochResult(3, train_loss, 0.5, val_loss, val_acc, 0.1)


def test_divergence_is_caught_on_the_training_loss(capsys):
    limit = 100 * math.log(10)
    assert check_divergence(epoch(2.3, 2.1), limit) == epoch(2.3, 2.1)  # a normal epoch, recorded as measured
    unmeasured = check_divergence(epoch(2.3, math.nan, math.nan), limit)  # no validation split: no spike either
    assert math.isnan(unmeasured.val_loss) and math.isnan(unmeasured.val_acc) and not unmeasured.val_spiked
    assert capsys.readouterr().err == ""
    for bad, what in [(epoch(math.nan, 2.0), "nan"), (epoch(math.inf, 2.0), "inf"), (epoch(547156.0, 2.0), "5.472e\\+05")]:
        with pytest.raises(UserError, match=rf"training diverged at epoch 3: the training loss is {what} \(lower train.max_lr\); "
                                            r"the checkpoints of epoch 2 are kept$"):
            check_divergence(bad, limit)


def test_divergence_in_the_first_epoch_says_no_checkpoint_was_written():
    # Epoch 0 (the untrained baseline) is never checkpointed: there is no "epoch 0" to keep.
    first = EpochResult(1, math.nan, 0.5, 2.0, 0.5, 0.1)
    with pytest.raises(UserError, match=r"at epoch 1: .*\(lower train.max_lr\); no checkpoint was written$"):
        check_divergence(first, 100.0)


@pytest.mark.parametrize("val_loss", [math.nan, math.inf, 1e4])
def test_a_validation_spike_is_recorded_as_nan_with_a_warning_and_does_not_stop(val_loss, capsys):
    recorded = check_divergence(epoch(2.0, val_loss, 0.9), 100 * math.log(10))
    assert math.isnan(recorded.val_loss) and recorded.val_acc == 0.9 and recorded.val_spiked
    assert "val/loss" not in recorded.measured()  # left out of the curves, null in JSON
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and warning.startswith(f"warning: epoch 3: the validation loss is {val_loss:.4g}")


def test_fit_goes_on_past_a_validation_spike_and_never_picks_it_as_best(tmp_path, monkeypatch):
    from cifar_resnet.training import loop

    validate, calls = loop._validate, []

    def spiking(run, precision):  # epoch 2's validation (the third call, after epoch 0's) explodes
        calls.append(1)
        loss, acc = validate(run, precision)
        return (math.inf, 1.0) if len(calls) == 3 else (loss, min(acc, 0.9))

    monkeypatch.setattr(loop, "_validate", spiking)
    _, outcome, seen = run_fit(tmp_path, train_cfg(epochs=3, scheduler="none", max_lr=0.1))
    assert [r.epoch for r in seen] == [0, 1, 2, 3] and outcome.stop_reason == "completed"
    assert math.isnan(seen[2].val_loss) and seen[2].val_spiked
    assert outcome.best_epoch != 2  # its accuracy of 1.0 would win were the spike not ignored
    assert load_checkpoint(tmp_path / "ckpt" / "best.pt")["epoch"] == outcome.best_epoch


def test_exploding_losses_stop_fit_before_the_epoch_is_saved_or_logged(tmp_path):
    _, _, seen = run_fit(tmp_path, train_cfg(epochs=1, scheduler="none", max_lr=0.1))
    good = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    # A classifier flipped and scaled beyond reason: finite weights, confidently wrong, exploding losses.
    good["model"] = {k: v * -1e4 if k.endswith("5.weight") else v for k, v in good["model"].items()}
    logged = []
    with pytest.raises(UserError, match="training diverged at epoch 2"):
        run = assemble_run(tiny_model(), toy_images(64), toy_images(32, seed=1), train_cfg(epochs=2, scheduler="none", max_lr=1e-9),
                           0, torch.device("cpu"), num_classes=2)
        fit(run, tmp_path / "ckpt", on_epoch_end=logged.append, resume=good)
    assert [r.epoch for r in logged] == [0, 1]
    assert load_checkpoint(tmp_path / "ckpt" / "last.pt")["epoch"] == 1


def test_lookahead_decay_grows_with_the_cube_of_progress_to_jordans_value():
    assert lookahead_decay(100, 100) == pytest.approx(0.95**5)
    assert lookahead_decay(50, 100) == pytest.approx(0.95**5 / 8)
    assert lookahead_decay(1, 1000) < 1e-9


def test_lookahead_moves_the_weights_to_the_lagging_average_every_5_steps_and_at_the_last():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    lookahead = Lookahead(model, total_steps=7)

    def shift(by):
        with torch.no_grad():
            for value in model.state_dict().values():
                value.add_(by) if value.is_floating_point() else value.add_(1)
        return {k: v.clone() for k, v in model.state_dict().items()}

    for step in range(1, 5):
        moved = shift(1.0)
        lookahead.after_step(model, step)
        assert all(torch.equal(model.state_dict()[k], moved[k]) for k in moved)  # no update between
    moved = shift(1.0)
    lookahead.after_step(model, 5)
    decay = lookahead_decay(5, 7)
    for name, value in model.state_dict().items():
        if value.is_floating_point():  # weights, bias, BatchNorm's running statistics
            assert torch.allclose(value, start[name] * decay + moved[name] * (1 - decay))
        else:  # the batch counter is the model's own
            assert torch.equal(value, moved[name])
    at_five = {k: v.clone() for k, v in model.state_dict().items()}
    shift(1.0)
    lookahead.after_step(model, 6)
    shift(2.0)
    # The last step, though 7 is no multiple of 5, leaves the weights at the average as of
    # step 5 (Jordan's final update with decay 1): the moves of steps 6 and 7 are dropped.
    lookahead.after_step(model, 7)
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            assert torch.equal(value, at_five[name])


def test_lookahead_changes_the_run_and_resumes_exactly_mid_cycle(tmp_path):
    # 4 steps per epoch: epoch 2 ends at step 8, between the updates at 5 and 10, where the
    # average differs from the weights, so a resume must restore it from the checkpoint.
    cfg = train_cfg(epochs=3, lookahead=True)
    _, first, _ = run_fit(tmp_path / "a", cfg)
    _, plain, _ = run_fit(tmp_path / "b", train_cfg(epochs=3))
    assert repr(first.history) != repr(plain.history)
    run_fit(tmp_path / "c", train_cfg(epochs=3, lookahead=True, checkpoint_every=2))
    state = load_checkpoint(tmp_path / "c" / "ckpt" / "epoch_002.pt")
    assert state["lookahead"].keys() == {k for k, v in state["model"].items() if v.is_floating_point()}
    _, resumed, _ = run_fit(tmp_path / "d", cfg, resume=state)
    assert repr(resumed.history) == repr(first.history)


def test_dvclive_leaves_a_spiked_validation_out_of_the_curves_and_the_best():
    from cifar_resnet.training.session import log_to_live

    class FakeLive:
        def __init__(self):
            self.logged, self.summary = [], {}

        def log_metric(self, name, value):
            self.logged.append(name)

        def next_step(self):
            pass

    live = FakeLive()
    log_to_live(live, EpochResult(1, 0.5, 0.8, 0.6, 0.7, 0.1))
    log_to_live(live, EpochResult(2, 0.4, 0.9, math.nan, 0.95, 0.1))  # spiked: val_acc kept, no best
    assert live.summary["best"] == {"val_acc": 0.7, "epoch": 1}
    assert "val/loss" not in live.logged[5:] and "val/acc" in live.logged[5:]
