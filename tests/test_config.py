import re
import typing

import pytest
import yaml
from pydantic import BaseModel

from cifar_resnet.config import Params, apply_overrides, load_params, parse_yaml, validate_params
from cifar_resnet.errors import UserError

REPO_PARAMS = "params.yaml"


def test_repository_params_are_the_real_recipe():
    params = load_params(REPO_PARAMS)
    assert params.data.dataset == "cifar10"
    assert (params.model.arch, params.model.stem, params.model.width) == ("resnet34", "cifar", 64)
    train = params.train
    assert (train.optimizer, train.momentum, train.nesterov) == ("sgd", 0.9, True)
    assert (train.max_lr, train.weight_decay, train.batch_size, train.epochs) == (0.1, 5e-4, 128, 30)


def test_repository_params_spell_out_every_key():
    """params.yaml is the user's interface: every schema key appears there, none is implicit."""
    raw = yaml.safe_load(open(REPO_PARAMS))
    defaults = validate_params({}).model_dump()

    def keys(tree, prefix=""):
        for key, value in tree.items():
            yield prefix + key
            if isinstance(value, dict):
                yield from keys(value, prefix + key + ".")

    assert set(keys(raw)) == set(keys(defaults))


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"train": {"max_lrr": 0.1}}, "unknown key train.max_lrr"),
        ({"colour": 1}, "unknown key colour"),
        ({"train": {"epochs": "many"}}, "train.epochs = 'many'"),
        ({"train": {"max_lr": -0.1}}, "train.max_lr = -0.1: Input should be greater than 0"),
        ({"data": {"val_fraction": 1.5}}, "data.val_fraction = 1.5"),
        ({"data": {"dataset": "imagenet"}}, "'cifar10', 'cifar100', 'shapes', 'digits' or 'folder'"),
        ({"model": {"stem": "big"}}, "model.stem = 'big'"),
        ({"train": {"device": "tpu"}}, "train.device = 'tpu'"),
        ({"train": {"momentum": 0.0}}, "train: nesterov needs momentum > 0"),
        ({"data": {"synthetic": {"train_size": 3}}}, "data.synthetic.train_size = 3"),
        ({"model": {"arch": "resnet9", "stem": "imagenet"}}, "model: resnet9 takes only stem cifar"),
        ({"model": {"arch": "resnet9", "blocks": [1, 1, 1, 1]}}, "model: resnet9 has a fixed layout"),
        ({"model": {"arch": "resnet9", "pretrained": "imagenet"}}, "model: torchvision has no ImageNet weights for resnet9"),
        ({"model": {"arch": "resnet9"}, "gradcam": {"target_layer": "layer4.1"}}, "resnet9 has three stages; use auto or layer3"),
        ({"model": {"arch": "airbench", "stem": "imagenet"}}, "model: airbench takes only stem cifar"),
        ({"model": {"arch": "airbench", "blocks": [1, 1, 1, 1]}}, "model: airbench has a fixed layout"),
        ({"model": {"arch": "airbench", "pretrained": "imagenet"}}, "model: torchvision has no ImageNet weights for airbench"),
        ({"model": {"arch": "airbench"}, "gradcam": {"target_layer": "layer4"}}, "airbench has three stages; use auto or layer3"),
        ({"train": {"norm_lr_scale": 0}}, "train.norm_lr_scale = 0"),
        ({"train": {"compile": "fast"}}, "train.compile = 'fast'"),
        ({"train": {"augment": {"hflip": "sometimes"}}}, "train.augment.hflip = 'sometimes'"),
        ({"evaluate": {"tta_shift": 1}}, "evaluate: tta_shift 1 adds views to the flip TTA, which is off"),
        ({"evaluate": {"tta": True, "tta_shift": 5}}, "evaluate.tta_shift = 5"),
    ],
)
def test_bad_params_name_the_key_the_value_and_what_is_allowed(raw, expected):
    with pytest.raises(UserError) as caught:
        validate_params(raw)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def integer_keys(model=Params, prefix=""):
    """The dotted key of every integer setting (list items included), found in the schema itself."""
    for name, field in model.model_fields.items():
        if isinstance(field.default, BaseModel):
            yield from integer_keys(type(field.default), f"{prefix}{name}.")
        elif any(t is int for t in _types(field.annotation)) and not any(t is bool for t in _types(field.annotation)):
            yield f"{prefix}{name}"


def _types(annotation):
    """An annotation and every type inside it (Optional, Annotated, list, Union)."""
    yield annotation
    for arg in typing.get_args(annotation):
        yield from _types(arg)


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_refused_for_every_integer_key(value):
    # bool is a subclass of int: `seed: true` used to pass as seed 1.
    keys = list(integer_keys())
    assert {"seed", "train.epochs", "data.synthetic.seed", "data.max_train", "model.blocks", "export.latency_batches"} <= set(keys)
    for key in keys:
        *sections, leaf = key.split(".")
        is_list = leaf in ("blocks", "latency_batches")
        raw = {leaf: [value, 1, 1, 1] if is_list else value}
        for section in reversed(sections):
            raw = {section: raw}
        with pytest.raises(UserError, match=rf": {key}(\.0)? = {value}: Input should be a valid integer, not true or false$"):
            validate_params(raw)


def test_several_problems_are_counted_in_one_line():
    with pytest.raises(UserError, match=r"and 1 more problem\)$"):
        validate_params({"train": {"epochs": 0, "batch_size": 0}})


def test_yaml_scientific_notation_without_sign_is_accepted():
    # PyYAML reads 5e-4 as a string (YAML 1.1); DVC's -S writes such values. Both must work.
    assert validate_params({"train": {"weight_decay": "5e-4"}}).train.weight_decay == 5e-4


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_params(tmp_path / "params.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_params(listed)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"seed": 2**64}, "seed = 18446744073709551616: Input should be less than or equal to 4294967295"),
        ({"data": {"synthetic": {"seed": 2**32}}}, "data.synthetic.seed = 4294967296"),
        ({"train": {"augment": {"cutmix": {"alpha": float("inf")}}}}, "train.augment.cutmix.alpha = inf: Input should be a finite number"),
        ({"train": {"augment": {"mixup": {"alpha": float("inf")}}}}, "train.augment.mixup.alpha = inf: Input should be a finite number"),
        ({"train": {"weight_decay": float("inf")}}, "train.weight_decay = inf: Input should be a finite number"),
        ({"train": {"clip_grad_norm": float("inf")}}, "train.clip_grad_norm = inf"),
        ({"data": {"synthetic": {"train_size": 10**12}}}, "data.synthetic.train_size = 1000000000000: Input should be less than or equal to 1000000"),
    ],
)
def test_out_of_range_seeds_sizes_and_infinite_floats_are_rejected(raw, expected):
    with pytest.raises(UserError, match=re.escape(expected)):
        validate_params(raw)


def test_infinity_written_in_yaml_is_rejected(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  weight_decay: .inf\n")
    with pytest.raises(UserError, match=r"train\.weight_decay = inf: Input should be a finite number"):
        load_params(path)


def test_a_duplicate_key_is_an_error_naming_it_not_last_wins(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: 3\n  batch_size: 8\n  epochs: 5\n")
    with pytest.raises(UserError, match=r"not valid YAML \(duplicate key 'epochs' \(line 4\)\)"):
        load_params(path)
    path.write_text("train: {epochs: 3}\ntrain: {epochs: 5}\n")
    with pytest.raises(UserError, match="duplicate key 'train'"):
        load_params(path)


def test_params_that_are_not_utf8_are_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes("data:\n  source: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"not UTF-8 text \(byte 0xe9 at offset 19\)") as caught:
        load_params(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("value", [False, True, "reduce-overhead", "max-autotune"])
def test_compile_is_off_on_or_a_torch_compile_mode(value):
    assert validate_params({"train": {"compile": value}}).train.compile == value


@pytest.mark.parametrize(
    "text, expected",
    [
        ("seed: 010\n", "seed = 10 in YAML 1.2 (as DVC reads it) but 8 in YAML 1.1"),
        ("train:\n  nesterov: off\n", "train.nesterov = 'off' in YAML 1.2 (as DVC reads it) but False in YAML 1.1"),
        ("train:\n  hflip: yes\n", "train.hflip = 'yes' in YAML 1.2 (as DVC reads it) but True in YAML 1.1"),
        ("data:\n  source: 1:20\n", "data.source = '1:20' in YAML 1.2 (as DVC reads it) but 80 in YAML 1.1"),
        ("yes: 1\n", "key 'yes' in (top level) reads as True in YAML 1.1"),
    ],
)
def test_values_yaml_1_1_and_dvc_read_differently_are_refused(tmp_path, text, expected):
    """DVC reads params.yaml as YAML 1.2; a value YAML 1.1 reads otherwise would fool `dvc status`."""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as caught:
        load_params(path)
    message = str(caught.value)
    assert expected in message and "\n" not in message


def test_values_both_dialects_agree_on_are_read_as_dvc_reads_them(tmp_path):
    from dvc.utils.serialize import parse_yaml as dvc_parse_yaml

    text = "seed: 1_000\ntrain:\n  weight_decay: 5e-4\n  nesterov: false\ndata:\n  source: '1:20'\n"
    path = tmp_path / "params.yaml"
    path.write_text(text)
    params = load_params(path)
    assert (params.seed, params.train.weight_decay, params.train.nesterov, params.data.source) == (1000, 5e-4, False, "1:20")
    assert parse_yaml(text) == dvc_parse_yaml(text, "params.yaml")


def test_overrides_are_held_to_the_same_reading():
    with pytest.raises(UserError, match=r"^-S 'seed=010': seed = 10 in YAML 1.2"):
        apply_overrides({"seed": 1}, ["seed=010"])
    assert apply_overrides({"seed": 1}, ["seed=1_000"]) == {"seed": 1000}


def test_billion_laughs_is_refused_in_one_line_without_expanding(tmp_path):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 9) + "]")
    lines.append("model:\n  arch: *i")
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"alias \*a \(line 2\): params take no YAML aliases") as caught:
        load_params(path)
    assert "\n" not in str(caught.value)


def test_an_oversized_params_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 1\n" + "#" * (2 << 20) + "\n")
    with pytest.raises(UserError, match="larger than 1024 KiB"):
        load_params(path)


def test_a_huge_rejected_value_is_cut_short_in_the_message():
    nested = ["lol"] * 9
    for _ in range(8):
        nested = [nested] * 9  # 9**9 leaves, shared: its full repr would be gigabytes
    with pytest.raises(UserError) as caught:
        validate_params({"model": {"arch": nested}})
    assert len(str(caught.value)) < 400
