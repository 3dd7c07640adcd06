"""Helpers the library defines once and several modules share."""

from cifar_resnet.errors import describe_error, first_line


def test_errors_are_described_in_one_line_even_without_a_message():
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(ValueError("  first\nsecond")) == "first"
    assert describe_error(RuntimeError("\n")) == "RuntimeError"
    assert describe_error(KeyError("weight")) == "KeyError: 'weight'"


def test_forward_zeros_runs_one_image_in_eval_mode_and_leaves_the_model_as_it_was():
    import pytest
    import torch

    from cifar_resnet.models import build_model
    from cifar_resnet.models.summary import forward_zeros

    model = build_model("resnet18", 10, width=4).train()
    seen = []
    forward_zeros(model, [(model.layer4, lambda module, args, output: seen.append(
        (tuple(output.shape), module.training, output.requires_grad)))], (32, 32))
    assert seen == [((1, 32, 4, 4), False, False)]
    assert model.training and not model.layer4._forward_hooks

    def fail(module, args, output):
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        forward_zeros(model, [(model.fc, fail)], (32, 32))
    assert model.training and not model.fc._forward_hooks
    assert torch.equal(model.bn1.running_mean, torch.zeros(4))  # eval mode: BatchNorm statistics untouched


def test_overrides_take_yaml_values_into_a_copy():
    from cifar_resnet.config import apply_overrides

    raw = {"model": {"arch": "resnet34", "width": 64}, "seed": 1}
    merged = apply_overrides(raw, ["model.blocks=[5, 5, 5, 5]", "model.pretrained=null", "train.augment.cutmix.p=0.5",
                                   "seed=7", "model.arch=resnet18"])
    assert merged == {"model": {"arch": "resnet18", "width": 64, "blocks": [5, 5, 5, 5], "pretrained": None},
                      "seed": 7, "train": {"augment": {"cutmix": {"p": 0.5}}}}
    assert raw == {"model": {"arch": "resnet34", "width": 64}, "seed": 1}


def test_bad_overrides_are_one_line_user_errors():
    import pytest

    from cifar_resnet.config import apply_overrides
    from cifar_resnet.errors import UserError

    cases = [("model.width", "expected key=value"), ("=3", "expected key=value"),
             ("seed.x=1", "seed is not a section of params.yaml"), ("model.blocks=[5, 5", "not a YAML value")]
    for item, message in cases:
        with pytest.raises(UserError) as caught:
            apply_overrides({"seed": 1}, [item])
        assert str(caught.value).startswith(f"-S {item!r}: {message}") and "\n" not in str(caught.value)
