import math

import numpy as np
import pytest
import torch
from torch import nn

from cifar_resnet.data.arrays import ImageSet
from cifar_resnet.errors import UserError
from cifar_resnet.training import (
    build_onecycle, build_optimizer, channel_stats, evaluate_logits, fit, load_checkpoint,
    make_eval_tensors, make_train_loader, seed_everything, select_device, train_transform,
)


def toy_images(n=64, seed=0):
    """Two classes that a tiny model separates at once: dark vs bright images."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    base = np.where(labels[:, None, None, None] == 1, 200, 50)
    images = np.clip(base + rng.integers(-30, 30, size=(n, 32, 32, 3)), 0, 255).astype(np.uint8)
    return ImageSet(images=images, labels=labels.astype(np.int64))


def tiny_model(num_classes=2):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


def test_channel_stats_on_known_images():
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    images[1] = 255
    mean, std = channel_stats(images)
    assert mean == pytest.approx([0.5, 0.5, 0.5])
    assert std == pytest.approx([0.5, 0.5, 0.5])
    # A constant channel gets std 1 instead of a division by zero.
    assert channel_stats(np.full((2, 32, 32, 3), 7, dtype=np.uint8))[1] == [1.0, 1.0, 1.0]


def test_train_transform_flips_crops_and_normalises():
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:, :16] = 255  # left half white
    flip_only = train_transform(crop_padding=0, hflip=True, mean=[0, 0, 0], std=[1, 1, 1], seed=0)
    outputs = [flip_only(image=image)["image"] for _ in range(40)]
    flipped = [o for o in outputs if o[0, 0, 0] == 0.0]
    assert 0 < len(flipped) < 40  # p=0.5: some flipped, some not
    assert flipped[0][0, -1, 0] == pytest.approx(1.0)  # white moved to the right edge
    crop_only = train_transform(crop_padding=4, hflip=False, mean=[0, 0, 0], std=[1, 1, 1], seed=0)
    crops = np.stack([crop_only(image=image)["image"] for _ in range(40)])
    assert crops.shape == (40, 32, 32, 3)
    assert len({c.tobytes() for c in crops}) > 1  # random offsets give different crops
    plain = train_transform(crop_padding=0, hflip=False, mean=[0.5] * 3, std=[0.5] * 3, seed=0)
    assert plain(image=image)["image"][0, 0, 0] == pytest.approx(1.0)  # (1 - 0.5) / 0.5


def test_loader_is_seeded_and_drops_the_partial_batch():
    images = toy_images(70)
    transform = lambda seed: train_transform(4, True, [0.5] * 3, [0.25] * 3, seed=seed)
    first = [b for b in make_train_loader(images, transform(1), 32, num_workers=0, seed=1)]
    second = [b for b in make_train_loader(images, transform(1), 32, num_workers=0, seed=1)]
    assert len(first) == 2  # 70 images, batch 32: the partial batch of 6 is dropped
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))
    other = next(iter(make_train_loader(images, transform(2), 32, num_workers=0, seed=2)))
    assert not torch.equal(first[0][0], other[0])


def test_onecycle_learning_rate_at_known_steps():
    model = tiny_model()
    optimizer = build_optimizer(model, "sgd", lr=0.1, weight_decay=0.0)
    scheduler = build_onecycle(optimizer, max_lr=0.1, epochs=2, steps_per_epoch=50, pct_start=0.25,
                               div_factor=25.0, final_div_factor=1e4)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.1 / 25)
    assert max(lrs) == pytest.approx(0.1, rel=1e-3)
    assert int(np.argmax(lrs)) in (24, 25)  # the peak comes after pct_start of the steps
    assert lrs[-1] == pytest.approx(0.1 / 25 / 1e4, rel=0.05)


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_optimizers_by_name(name, cls):
    optimizer = build_optimizer(tiny_model(), name, lr=0.01, weight_decay=1e-4)
    assert isinstance(optimizer, cls)
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4


def test_nesterov_sgd():
    optimizer = build_optimizer(tiny_model(), "sgd", lr=0.01, weight_decay=0.0, momentum=0.9, nesterov=True)
    assert optimizer.param_groups[0]["nesterov"] is True


def run_fit(tmp_path, images, val, epochs=3, seed=0):
    seed_everything(seed)
    model = tiny_model()
    mean, std = channel_stats(images.images)
    loader = make_train_loader(images, train_transform(0, False, mean, std, seed=seed), 16, num_workers=0, seed=seed)
    val_x, val_y = make_eval_tensors(val, mean, std)
    optimizer = build_optimizer(model, "sgd", lr=0.1, weight_decay=0.0)
    scheduler = build_onecycle(optimizer, 0.5, epochs, len(loader))
    seen = []
    history = fit(model, loader, val_x, val_y, optimizer, scheduler, epochs, torch.device("cpu"),
                  tmp_path / "ckpt", run_info={"params_hash": "abc"}, on_epoch_end=seen.append)
    return model, history, seen


def test_fit_learns_logs_every_epoch_and_checkpoints(tmp_path):
    model, history, seen = run_fit(tmp_path, toy_images(64), toy_images(32, seed=1), epochs=4)
    assert [r.epoch for r in seen] == [1, 2, 3, 4]
    assert history == seen
    assert history[-1].val_acc == 1.0
    assert history[-1].train_loss < history[0].train_loss
    last = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert last["epoch"] == 4 and last["run_info"]["params_hash"] == "abc"
    assert len(last["history"]) == 4 and {"model", "optimizer", "scheduler"} <= set(last)
    best = load_checkpoint(tmp_path / "ckpt" / "best.pt")
    best_val = max(r.val_acc for r in history)
    assert best["history"][-1]["val_acc"] == best_val
    assert best["epoch"] == min(r.epoch for r in history if r.val_acc == best_val)


def test_fit_is_deterministic_on_cpu(tmp_path):
    _, first, _ = run_fit(tmp_path / "a", toy_images(64), toy_images(32, seed=1))
    _, second, _ = run_fit(tmp_path / "b", toy_images(64), toy_images(32, seed=1))
    assert first == second


def test_fit_without_validation_logs_nan_and_keeps_best_by_training_accuracy(tmp_path):
    empty = ImageSet(images=np.zeros((0, 32, 32, 3), np.uint8), labels=np.zeros(0, np.int64))
    _, history, _ = run_fit(tmp_path, toy_images(64), empty, epochs=2)
    assert all(math.isnan(r.val_acc) for r in history)
    assert (tmp_path / "ckpt" / "best.pt").exists()


def test_evaluate_logits_batches_and_restores_nothing_else():
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
