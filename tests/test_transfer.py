"""Transfer learning: torchvision weights into our ResNets, frozen backbones, per-group LRs, summaries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from cifar_resnet.config import ModelParams
from cifar_resnet.errors import UserError
from cifar_resnet.models import (
    build_model, format_table, imagenet_file, layer_table, load_pretrained, model_summary, prepare_model,
)
from cifar_resnet.training import build_optimizer, parameter_groups
from cifar_resnet.models import backbone_lr_scale
from conftest import REPO

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch\\.jit:FutureWarning"),
    pytest.mark.usefixtures("one_torch_thread"),  # torch on one thread: see conftest
]


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory) -> Path:
    """A state dict saved from torchvision's own resnet18, as a user would bring one."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "tv_resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def test_a_torchvision_state_dict_loads_whole_with_the_imagenet_stem(torchvision_file):
    theirs = torchvision.models.resnet18(weights=None)
    theirs.load_state_dict(torch.load(torchvision_file, weights_only=True))
    ours = build_model("resnet18", 10, stem="imagenet")
    result = load_pretrained(ours, str(torchvision_file), "resnet18")
    assert result.reinitialised == ("fc",)
    assert "fc replaced: 1000 -> 10 classes" in " ".join(result.notes)
    # Everything but the head is torchvision's: the features before the classifier are equal.
    theirs.fc, ours.fc = torch.nn.Identity(), torch.nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), atol=1e-5, rtol=0)


def test_the_cifar_stem_starts_fresh_and_says_so(torchvision_file):
    torch.manual_seed(0)
    model = build_model("resnet18", 10, stem="cifar")
    fresh_conv = model.conv1.weight.clone()
    result = load_pretrained(model, str(torchvision_file), "resnet18")
    assert set(result.reinitialised) == {"fc", "conv1", "bn1"}
    assert any("3x3 convolution cannot take the 7x7 kernel" in note for note in result.notes)
    assert torch.equal(model.conv1.weight, fresh_conv)
    state = torch.load(torchvision_file, weights_only=True)
    assert torch.equal(model.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])


def test_our_checkpoint_layout_and_wrapper_prefixes_load(tmp_path):
    source = build_model("resnet18", 10, width=8)
    path = tmp_path / "ddp.pt"
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, path)
    target = build_model("resnet18", 10, width=8)
    result = load_pretrained(target, str(path), "resnet18")
    assert result.reinitialised == ()
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"<html>404</html>", "not a loadable state dict"),
        ("other width", "does not fit this model"),
    ],
)
def test_unusable_weight_files_are_one_line_user_errors(tmp_path, content, message):
    path = tmp_path / "weights.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "other width":
        torch.save(build_model("resnet18", 10, width=16).state_dict(), path)
    with pytest.raises(UserError) as info:
        load_pretrained(build_model("resnet18", 10, width=8), str(path), "resnet18")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": Exploit()}, path, _use_new_zipfile_serialization=True)
    with pytest.raises(UserError, match="weights_only=True"):
        load_pretrained(build_model("resnet18", 10, width=8), str(path), "resnet18")
    assert not marker.exists()


@pytest.mark.slow  # another subprocess run of a script the quick loop already runs
def test_imagenet_weights_offline_say_which_file_to_place_where(tmp_path):
    # A real download attempt through an unreachable proxy: what an offline machine sees.
    code = (
        "from cifar_resnet.models import build_model, load_pretrained\n"
        "load_pretrained(build_model('resnet34', 10, stem='imagenet'), 'imagenet', 'resnet34')\n"
    )
    env = dict(os.environ, TORCH_HOME=str(tmp_path), HTTPS_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    wrapped = "from cifar_resnet.errors import run_stage\ndef main():\n" + "".join(
        f"    {line}\n" for line in code.splitlines()) + "run_stage(main)\n"
    result = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    expected = tmp_path / "hub" / "checkpoints" / "resnet34-b627a593.pth"
    assert str(expected) in lines[0] and "download" in lines[0]


def test_a_corrupt_cached_imagenet_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = imagenet_file("resnet18")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"truncated")
    with pytest.raises(UserError, match="delete it to download it again") as info:
        load_pretrained(build_model("resnet18", 10, stem="imagenet"), "imagenet", "resnet18")
    assert str(target) in str(info.value)


def test_a_frozen_backbone_does_not_change_in_a_training_step(torchvision_file):
    params = ModelParams(arch="resnet18", width=64, stem="imagenet", pretrained=str(torchvision_file), freeze="backbone")
    prepared = prepare_model(params, num_classes=10)
    model = prepared.model
    assert "fc" not in prepared.backbone and "layer4" in prepared.backbone
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_optimizer(parameter_groups(model, 5e-4), "sgd", lr=0.1)
    model.train()
    assert not model.layer1.training and model.fc.training  # frozen BatchNorm keeps its statistics
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    changed = {key.split(".")[0] for key in before if not torch.equal(before[key], after[key])}
    assert changed == {"fc"}
    assert any("backbone frozen" in note for note in prepared.notes)


def test_resnet9_loads_its_own_weights_and_freezes_its_backbone(tmp_path):
    # No torchvision weights exist for ResNet-9: a state dict saved from one (another class
    # count here) is its pretrained source, and the backbone/head split is by the same names.
    source = build_model("resnet9", 100, width=8)
    torch.save(source.state_dict(), tmp_path / "resnet9.pt")
    params = ModelParams(arch="resnet9", width=8, pretrained=str(tmp_path / "resnet9.pt"), freeze="backbone")
    prepared = prepare_model(params, num_classes=10)
    model = prepared.model
    assert prepared.backbone == ("conv1", "bn1", "layer1", "layer2", "layer3")
    torch.testing.assert_close(model.layer3[2].conv2[0].weight, source.layer3[2].conv2[0].weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_optimizer(parameter_groups(model, 5e-4), "sgd", lr=0.1)
    model.train()
    assert not model.layer1.training and model.fc.training
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    assert {key.split(".")[0] for key in before if not torch.equal(before[key], after[key])} == {"fc"}


def test_backbone_lr_scale_puts_the_backbone_in_a_slower_group():
    model = build_model("resnet18", 10, width=8)
    groups = parameter_groups(model, 5e-4, lr_scale=backbone_lr_scale(("conv1", "bn1", "layer1"), 0.1))
    optimizer = build_optimizer(groups, "sgd", lr=0.2)
    lrs = {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            lrs[id(parameter)] = group["lr"]
    assert lrs[id(model.layer1[0].conv1.weight)] == pytest.approx(0.02)
    assert lrs[id(model.layer2[0].conv1.weight)] == pytest.approx(0.2)
    assert lrs[id(model.fc.weight)] == pytest.approx(0.2)


def test_block_dropout_acts_only_in_training_and_adds_no_keys():
    plain = build_model("resnet18", 10, width=8)
    dropped = build_model("resnet18", 10, width=8, block_dropout=0.5)
    assert list(plain.state_dict()) == list(dropped.state_dict())
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    scripted = torch.jit.script(dropped.eval())
    with torch.no_grad():
        torch.testing.assert_close(dropped(x), plain.eval()(x))
        torch.testing.assert_close(scripted(x), plain(x))
        # Training mode: only the block dropout tells the two apart.
        assert not torch.allclose(dropped.train()(x), plain.train()(x))


def test_blocks_override_the_layout_and_give_seed_001s_count():
    # Seed 001's "enhanced ResNet34": resnet34 with 5 basic blocks per stage, 100 classes.
    params = ModelParams(arch="resnet34", width=64, stem="cifar", blocks=[5, 5, 5, 5], dropout=0.3)
    model = prepare_model(params, num_classes=100).model
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [5, 5, 5, 5]
    assert model_summary(model)["params"] == 30_032_292


def test_summary_counts_multiply_adds_by_hand():
    # width 4, one block per stage, CIFAR stem, 10 classes, 32x32 input:
    # conv1 3->4 @32x32: 1024*4*3*9 = 110592; layer1 two 4->4 convs @32x32: 2*1024*4*4*9 = 294912;
    # layers 2-4 each: 3x3 c->2c stride 2, 3x3 2c->2c, 1x1 c->2c shortcut, all at the halved size:
    # (256*8*4*9 + 256*8*8*9 + 256*8*4) = 229376, the same for 16x(8x8) and 32x(4x4); fc 32*10 = 320.
    model = build_model("resnet18", 10, width=4, blocks=[1, 1, 1, 1])
    summary = model_summary(model)
    assert summary["macs"] == 110592 + 294912 + 3 * 229376 + 320
    assert summary["params"] == sum(p.numel() for p in model.parameters())
    assert summary["size_mb"] >= summary["params_mb"] > 0  # buffers add the BatchNorm statistics
    rows = layer_table(model, depth=1)
    # The order of the forward pass: maxpool (registered before bn1) runs after relu.
    assert [r.name for r in rows] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
                                      "avgpool", "dropout", "fc"]
    assert sum(r.macs for r in rows) == summary["macs"]
    assert {r.name: r.output for r in rows}["layer1"] == (4, 32, 32)
    assert "multiply-adds per 32x32 image: 1,093,952" in format_table(rows, summary)


def test_layer_table_follows_the_forward_pass_and_sizes_say_mib():
    model = build_model("resnet18", 10, width=4, stem="imagenet", blocks=[1, 1, 1, 1])
    names = [r.name for r in layer_table(model, depth=1)]
    assert names.index("bn1") < names.index("relu") < names.index("maxpool") < names.index("layer1")
    leaves = [r.name for r in layer_table(model, depth=None)]
    assert leaves[:4] == ["conv1", "bn1", "relu", "maxpool"] and leaves[-1] == "fc"
    totals = format_table(layer_table(model), model_summary(model)).splitlines()
    size = next(line for line in totals if line.startswith("size:"))
    assert "MiB" in size and " MB" not in size


def test_model_summary_script_prints_the_layer_table(tmp_path):
    params = (REPO / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(params)
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "model_summary.py"), "--depth", "1",
         "-S", "model.arch=resnet18", "-S", "model.width=8", "-S", "model.blocks=[1, 1, 1, 1]"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "layer4" in result.stdout and "parameters:" in result.stdout
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "model_summary.py"), "-S", "model.arch=resnet99"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "model.arch" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
